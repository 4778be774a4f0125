"""A one-job fit's sharded parameter server (``num_servers=K``): the shards live in the tasks.

The tasks of the first K training partitions each host one ``shards.ShardServer``; every
training task trains its epochs against all K with row-sparse traffic
(``sparse_worker.run_sparse_async_epoch``, ``shard_client.ShardedClient``). The driver keeps
the coordinator and, as ``ShardSink`` (the coordinator's inner service), the model's vector
as of the last epoch's end: a shard that starts — the fit's first stage, or a retried one —
pulls its part of it there (with the epoch that runs), and at each epoch's end every shard
pushes its values back, which the driver assembles into its model.

An epoch is three orders (``ShardTask``): ``shard-begin`` to the hosts (each shard begins
the epoch, as the driver's parameter server does before its job; every push of the epoch
comes after it), ``shard-train`` to every training partition, ``shard-collect`` to the hosts.
A retried stage starts new shards from the driver's vector and its tasks redo the open order
(the coordinator's ``redo``); the sink counts the registrations of retries, and an epoch
during which one happened is run again from its ``shard-begin``, whose ``reload`` makes the
shards take the driver's vector afresh — the retried stage's first order may have trained
them already.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import numpy as np

from sparkdl.distributed import admission, fit_task, worker
from sparkdl.distributed.protocol import Connection, Frame, Op
from sparkdl.distributed.server import Refused, int_field
from sparkdl.distributed.shard_client import ShardedClient
from sparkdl.distributed.shard_layout import ShardLayout
from sparkdl.distributed.shards import ShardServer
from sparkdl.distributed.sparse import ParamMap
from sparkdl.distributed.sparse_worker import compact_model, run_sparse_async_epoch

BEGIN, TRAIN, COLLECT = "shard-begin", "shard-train", "shard-collect"
#: the shard statistics a collect push reports (``ShardStore.stats``)
STATS = ("pushes", "duplicates", "pulls", "bytes_pushed", "bytes_pulled", "waits")


@dataclass(frozen=True)
class ShardSettings:
    """What a task needs to host or reach the shards (shipped in the task closure)."""
    hosts: tuple            # the partitions that host shard 0 … K-1
    rows: tuple             # ((partition, rows), ...) of the partitions that train
    mode: str
    staleness: int | None
    workers: int            # what weight deltas are divided by, as the parameter server's
    optimizer: object = None    # gradients mode: the optimizer the shards step (None: weight deltas)

    @property
    def num_shards(self) -> int:
        return len(self.hosts)


class ShardSink:
    """The driver's side of the shards (see the module docstring): ``PULL {shard}`` answers
    the shard's part of the driver's vector and the running epoch; ``PUSH {shard, epoch,
    stats}`` keeps a shard's values at an epoch's end."""

    def __init__(self, layout: ShardLayout, vector: np.ndarray):
        self.layout = layout
        k = layout.num_shards
        self.sizes = [layout.dense_split(s)[0] + layout.dense_split(s)[1] +
                      sum(len(i) * t.dim for i, t in zip(layout.owned_ids(s), layout.map.tables))
                      for s in range(k)]
        self.max_data = 4 * max(self.sizes)
        self._lock = threading.Lock()
        self.vector = np.array(vector, np.float32)
        self.epoch = 0
        self.retries = 0            # registrations of a retried task, ever
        self.collected: dict[int, tuple[np.ndarray, dict]] = {}

    # ---- driver side ------------------------------------------------------------------------------
    def open_epoch(self, epoch: int) -> None:
        with self._lock:
            self.epoch, self.collected = int(epoch), {}

    def register(self, partition: int, attempt: int) -> None:
        """The coordinator registered ``attempt`` of ``partition``: a retry when above 0."""
        with self._lock:
            self.retries += int(attempt) > 0

    def take(self) -> tuple[np.ndarray, list[dict]]:
        """The whole vector from every shard's pushed values, which the sink keeps as the
        vector new shards start from, and each shard's statistics."""
        with self._lock:
            missing = [k for k in range(self.layout.num_shards) if k not in self.collected]
            if missing:
                raise RuntimeError(f"SparkModel.fit: epoch {self.epoch + 1} ended without the values of "
                                   f"shard{'s' * (len(missing) > 1)} {', '.join(map(str, missing))}")
            parts = [self.collected[k] for k in range(self.layout.num_shards)]
            self.vector = self.layout.assemble([values for values, _ in parts])
            return self.vector, [stats for _, stats in parts]

    # ---- served requests --------------------------------------------------------------------------
    def handle(self, frame: Frame) -> Frame:
        shard = int_field(frame.meta, "shard")
        if not 0 <= shard < self.layout.num_shards:
            raise Refused(f"expected a shard in [0, {self.layout.num_shards}), received {shard}")
        if frame.op == Op.PULL:
            with self._lock:
                vector, epoch = self.vector, self.epoch
            return Frame(Op.OK, {"epoch": epoch}, self.layout.shard_values(vector, shard))
        if frame.op != Op.PUSH:
            raise Refused(f"op {frame.op} is not served here")
        values, stats = frame.array, frame.meta.get("stats")
        if values is None or values.dtype != np.float32 or values.shape != (self.sizes[shard],):
            got = None if values is None else (values.dtype.name, values.shape)
            raise Refused(f"expected shard {shard}'s {self.sizes[shard]} float32 values, received {got}")
        if not isinstance(stats, dict) or set(stats) != set(STATS):
            raise Refused(f"expected the statistics {list(STATS)} of shard {shard}, received "
                          f"{admission.shown(stats)}")
        admission.finite(values, f"the values of shard {shard}")
        with self._lock:
            epoch = int_field(frame.meta, "epoch")
            if epoch != self.epoch:
                raise Refused(f"epoch {epoch} is not running (running: {self.epoch})")
            self.collected[shard] = (values.copy(), {k: int(stats[k]) for k in STATS})
        return Frame(Op.OK, {})


def start_shard(layout: ShardLayout, shard: int, settings: ShardSettings, end) -> ShardServer:
    """Shard ``shard``'s server, from the driver's vector (``ShardSink``'s ``PULL``), at the
    epoch that runs."""
    conn = Connection(end.address, end.token, end.timeout, security=end.security)
    try:
        reply = conn.request(Op.PULL, {"shard": shard}, what=f"the values of shard {shard}")
    finally:
        conn.close()
    if reply.array is None:
        raise ValueError(f"the driver answered the pull of shard {shard} without values")
    server = ShardServer(layout, shard, reply.array, rows=dict(settings.rows), mode=settings.mode,
                         optimizer=copy.deepcopy(settings.optimizer), staleness=settings.staleness,
                         timeout=end.timeout, workers=settings.workers)
    server.begin_epoch(int(reply.meta["epoch"]))
    return server


class ShardTask:
    """A task's part in a sharded fit: its shard (None when it hosts none) and the
    addresses of all; carries out the ``orders`` (see the module docstring)."""

    orders = (BEGIN, TRAIN, COLLECT)

    def __init__(self, layout: ShardLayout, settings: ShardSettings, shard: int | None,
                 server: ShardServer | None, addresses: list, end, close=None):
        self.layout, self.settings, self.shard, self.server = layout, settings, shard, server
        self.addresses, self.end = [tuple(a) for a in addresses], end
        self._close = close
        self._before: dict = {}
        self._compact: tuple | None = None       # (capacity, compact worker), made once

    def close(self) -> None:
        if self._close is not None:
            self._close()

    def carry_out(self, model, block, partition: int, attempt: int, order: dict):
        """``((report meta, array), push or None)`` of one order, as ``run_fit_task`` sends them."""
        kind = order["kind"]
        if kind == TRAIN:
            return self._train(model, block, partition, attempt, order), None
        server = self.server
        if server is None:
            raise RuntimeError(f"partition {partition} hosts no shard, received order {kind!r}")
        if kind == BEGIN:
            if order.get("reload"):
                self._reload(server)
            server.begin_epoch(int(order["epoch"]))
            self._before = dict(server.stats)
            return ({}, None), None
        stats = {k: server.stats[k] - self._before.get(k, 0) for k in STATS}
        push = {"shard": self.shard, "partition": partition, "epoch": int(order["epoch"]), "stats": stats}
        return ({}, None), (push, server.snapshot())

    def _reload(self, server: ShardServer) -> None:
        """The shard takes the driver's vector afresh (an epoch run again after a retry)."""
        server.restore(start_shard(self.layout, server.shard, self.settings, self.end).state())

    def _train(self, model, block, partition: int, attempt: int, order: dict) -> tuple:
        spec = worker.RoundSpec(**order["spec"])
        xs, y = block
        client = ShardedClient(self.layout, self.addresses, self.end.token, self.end.timeout, spec.round,
                               partition, attempt, security=self.end.security)
        try:
            result = run_sparse_async_epoch(self._worker(model, spec, len(y)), xs, y, spec, partition, client,
                                            self.layout.map)
        finally:
            client.close()
        return fit_task.result_report(result)

    def _worker(self, model, spec: worker.RoundSpec, rows: int):
        """The model that trains: compact (``sparse_worker.compact_model``, room for the rows
        of one push's steps) where it pushes exactly what a whole-table worker pushes — in
        gradients mode, or with a local optimizer without slots — else the task's model."""
        opt = copy.copy(model.optimizer)         # (its slots stay the model's: reset_slots rebinds them)
        if spec.optimizer is not None:
            opt.apply_config(spec.optimizer)
        opt.reset_slots()
        opt.build(1)
        if rows == 0 or (spec.aggregate != "gradients" and opt.slots):
            return model
        per_epoch = -(-rows // spec.batch_size)
        steps = per_epoch if spec.frequency == "epoch" else 1 if spec.frequency == "batch" else int(spec.frequency)
        capacity = self.layout.map.capacity(min(steps, per_epoch), spec.batch_size)
        if self._compact is None or self._compact[0] != capacity:
            try:
                self._compact = (capacity, compact_model(model, capacity))
            except ValueError:          # an input feeds tables and other layers: no renumbering
                return model
        return self._compact[1]


def layout_of(model, num_shards: int) -> ShardLayout:
    return ShardLayout(ParamMap.from_model(model), num_shards)
