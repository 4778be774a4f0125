"""A one-job fit's sharded parameter server (``num_servers=K``): the shards live in the tasks.

The tasks of the first K training partitions each host one ``shards.ShardServer``; every
training task trains its epochs against all K with row-sparse traffic
(``sparse_worker.run_sparse_async_epoch``, ``shard_client.ShardedClient``), on a worker made
from the model's skeleton the driver shipped (``skeleton``: no tables). The driver keeps the
coordinator and, as ``ShardSink`` (the coordinator's inner service), serves its model as of
the last epoch's end: a shard that starts — the fit's first stage, or a retried one — pulls
its part of it there piece by piece (with the epoch that runs, and in gradients mode the
optimizer's slots and steps), and at each epoch's end every shard pushes its values back the
same way, which the driver writes into its model once every shard's are in. Validation
(``shard-evaluate``) scores each task's rows from rows pulled from the shards.

An epoch is three orders (``ShardTask``): ``shard-begin`` to the hosts (each shard begins
the epoch, as the driver's parameter server does before its job; every push of the epoch
comes after it), ``shard-train`` to every training partition, ``shard-collect`` to the hosts.
A retried stage starts new shards from the driver's model and its tasks redo the open order
(the coordinator's ``redo``); the sink counts the registrations of retries, and an epoch
during which one happened is run again from its ``shard-begin``, whose ``reload`` makes the
shards take the driver's values afresh — the retried stage's first order may have trained
them already.
"""
from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparkdl.distributed import admission, fit_task, worker
from sparkdl.distributed.protocol import Connection, Frame, Op
from sparkdl.distributed.server import Refused, int_field
from sparkdl.distributed.shard_client import ShardedClient
from sparkdl.distributed.shard_layout import ShardLayout
from sparkdl.distributed.shards import ShardServer
from sparkdl.distributed.sparse import ParamMap, RowSlice
from sparkdl.distributed.sparse_worker import compact_model, renumbered, resized_model, run_sparse_async_epoch

logger = logging.getLogger(__name__)

BEGIN, TRAIN, COLLECT, EVALUATE = "shard-begin", "shard-train", "shard-collect", "shard-evaluate"
#: the shard statistics a collect push reports (``ShardStore.stats``)
STATS = ("pushes", "duplicates", "pulls", "bytes_pushed", "bytes_pulled", "waits", "epoch_max_staleness")


@dataclass(frozen=True)
class ShardSettings:
    """What a task needs to host or reach the shards (shipped in the task closure)."""
    hosts: tuple            # the partitions that host shard 0 … K-1
    rows: tuple             # ((partition, rows), ...) of the partitions that train
    mode: str
    staleness: int | None
    workers: int            # what weight deltas are divided by, as the parameter server's
    optimizer: object = None    # gradients mode: the optimizer the shards step (None: weight deltas)
    param_map: ParamMap | None = None   # the model's map (the tasks' model is its skeleton, without tables)

    @property
    def num_shards(self) -> int:
        return len(self.hosts)


class ShardSink:
    """The driver's side of the shards (see the module docstring), served piece by piece
    (``ShardLayout.pieces``): ``PULL {shard, piece}`` answers that piece of the shard's part
    of the driver's model, the running epoch and the optimizer's iterations; ``PUSH {shard,
    epoch, piece[, stats, iterations]}`` keeps a piece of a shard's values at an epoch's end
    (the pieces in order, the statistics and iterations with the last), and ``take`` writes
    every shard's into the model once all are in.

    With ``optimizer`` (gradients mode: the model's, whose copies the shards step) a piece
    carries its values followed by the same elements of each of the optimizer's slots (none
    for the moving statistics), so the shards start from the driver's optimizer state and
    hand theirs back with their values: checkpoints, retried stages and the next fit see the
    shards' slots and steps, as the driver's parameter server leaves them in the model's
    optimizer. ``steps=False``: the driver counts the steps itself (sync rounds) and takes
    only the slots.

    The sink holds nothing the size of the model: a piece is cut from the model's own
    buffers when asked for, and the pieces pushed at an epoch's end wait in a file per shard
    in a directory of its own (``spill``; by default a temporary one in ``parent``, removed by
    ``close``) until the last shard's are in, so the model changes only when the epoch's
    values are complete."""

    def __init__(self, layout: ShardLayout, model, spill: str | None = None, optimizer=None, steps: bool = True,
                 parent: str | None = None):
        self.layout, self.model, self.optimizer, self.steps = layout, model, optimizer, steps
        self.pieces = layout.pieces()
        self.slot_names = tuple(optimizer.slot_names) if optimizer is not None else ()
        if self.slot_names:
            optimizer.build(model.flat_weights.size)
        per_value = 1 + len(self.slot_names)
        self.max_data = max(4 * per_value * layout.dense_split(k)[0] for k in range(layout.num_shards))
        self.max_data = max(self.max_data, *(4 * layout.dense_split(k)[1] for k in range(layout.num_shards)),
                            *(4 * per_value * (p[3] - p[2]) * layout.map.tables[p[1]].dim
                              for p in self.pieces if p[0] == "rows"))
        self._lock = threading.Lock()
        self._own_spill = spill is None
        self.spill = tempfile.mkdtemp(prefix="sparkdl-shards-", dir=parent) if spill is None else spill
        self.epoch = 0
        self.retries = 0            # registrations of a retried task, ever
        self.mapped: Any = None     # the model in files (``mapped.MappedModel``), whose pages in use are dropped
        self.collected: dict[int, dict] = {}        # shard: statistics, once its last piece is in
        self.iterations: dict[int, int] = {}        # shard: its optimizer's steps, with its last piece
        self._next: dict[int, int] = {}             # shard: the piece its push sends next

    # ---- driver side ------------------------------------------------------------------------------
    def open_epoch(self, epoch: int) -> None:
        with self._lock:
            self.epoch, self.collected, self._next, self.iterations = int(epoch), {}, {}, {}

    def register(self, partition: int, attempt: int) -> None:
        """The coordinator registered ``attempt`` of ``partition``: a retry when above 0."""
        with self._lock:
            self.retries += int(attempt) > 0

    def take(self) -> list[dict]:
        """Write every shard's pushed values into the model (which new shards then start
        from); each shard's statistics."""
        with self._lock:
            missing = [k for k in range(self.layout.num_shards) if k not in self.collected]
            if missing:
                raise RuntimeError(f"SparkModel.fit: epoch {self.epoch + 1} ended without the values of "
                                   f"shard{'s' * (len(missing) > 1)} {', '.join(map(str, missing))}")
            weights, state = self.model.flat_weights, self.model.flat_state
            slots = [self.optimizer.slots[name] for name in self.slot_names]
            for k in range(self.layout.num_shards):
                with open(self._file(k), "rb") as f:
                    for piece in self.pieces:
                        n = self.layout.piece_length(k, piece)
                        self.layout.put_piece(weights, state, k, piece, np.fromfile(f, np.float32, n))
                        for slot in slots if piece[0] != "state" else ():
                            self.layout.put_piece(slot, state, k, piece, np.fromfile(f, np.float32, n))
                        self._drop(piece)
            if self.optimizer is not None and self.steps:   # every push reaches every shard: they step alike
                self.optimizer.iterations = self.iterations[0]
            return [self.collected[k] for k in range(self.layout.num_shards)]

    def close(self) -> None:
        if self._own_spill:
            shutil.rmtree(self.spill, ignore_errors=True)

    def _drop(self, piece: tuple) -> None:
        """The model lives in files (``mapped``): hand back the pages of a rows piece's span."""
        span = self.layout.piece_span(piece)
        if self.mapped is not None and span is not None:
            self.mapped.drop(*span)

    def _file(self, shard: int) -> str:
        return os.path.join(self.spill, f"shard-{shard}.f32")

    # ---- served requests --------------------------------------------------------------------------
    def handle(self, frame: Frame) -> Frame:
        shard = int_field(frame.meta, "shard")
        if not 0 <= shard < self.layout.num_shards:
            raise Refused(f"expected a shard in [0, {self.layout.num_shards}), received {shard}")
        j = int_field(frame.meta, "piece")
        if not 0 <= j < len(self.pieces):
            raise Refused(f"expected a piece in [0, {len(self.pieces)}), received {j}")
        piece = self.pieces[j]
        slots = len(self.slot_names) if piece[0] != "state" else 0
        if frame.op == Op.PULL:
            with self._lock:
                model = self.model
                parts = [self.layout.piece_values(model.flat_weights, model.flat_state, shard, piece)]
                parts += [self.layout.piece_values(self.optimizer.slots[name], model.flat_state, shard, piece)
                          for name in self.slot_names[:slots]]
                iterations = 0 if self.optimizer is None else int(self.optimizer.iterations)
                self._drop(piece)
                return Frame(Op.OK, {"epoch": self.epoch, "iterations": iterations, "values": parts[0].size},
                             np.concatenate(parts) if slots else parts[0])
        if frame.op != Op.PUSH:
            raise Refused(f"op {frame.op} is not served here")
        values, stats, last = frame.array, frame.meta.get("stats"), j == len(self.pieces) - 1
        n = self.layout.piece_length(shard, piece) * (1 + slots)
        if values is None or values.dtype != np.float32 or values.shape != (n,):
            got = None if values is None else (values.dtype.name, values.shape)
            what = f"{n} float32 values" + (f" (values and {slots} optimizer slots)" if slots else "")
            raise Refused(f"expected piece {j} of shard {shard}: {what}, received {got}")
        if last and (not isinstance(stats, dict) or set(stats) != set(STATS)):
            raise Refused(f"expected the statistics {list(STATS)} of shard {shard} with its last piece, "
                          f"received {admission.shown(stats)}")
        iterations = int_field(frame.meta, "iterations") if last else 0
        admission.finite(values, f"the values of shard {shard}")
        with self._lock:
            epoch = int_field(frame.meta, "epoch")
            if epoch != self.epoch:
                raise Refused(f"epoch {epoch} is not running (running: {self.epoch})")
            if j not in (0, self._next.get(shard, 0)):       # (a shard starts again at piece 0)
                raise Refused(f"expected piece {self._next.get(shard, 0)} of shard {shard}, received piece {j}")
            with open(self._file(shard), "wb" if j == 0 else "ab") as f:
                values.tofile(f)
            self._next[shard] = j + 1
            self.collected.pop(shard, None)
            if last:
                self.collected[shard] = {k: int(stats[k]) for k in STATS}    # type: ignore[index]  # checked
                self.iterations[shard] = iterations
        return Frame(Op.OK, {})


def pull_shard(layout: ShardLayout, shard: int, optimizer, end) -> tuple[np.ndarray, dict | None, dict]:
    """``(values, optimizer state or None, meta)``: shard ``shard``'s part of the driver's
    model and, with ``optimizer`` (the shards' copy), of its optimizer's slots and steps
    (``ShardSink``'s ``PULL``, piece by piece); ``meta`` of the last answer (its ``epoch``)."""
    names = tuple(optimizer.slot_names) if optimizer is not None else ()
    conn = Connection(end.address, end.token, end.timeout, security=end.security)
    values: list[np.ndarray] = []
    slots: dict[str, list[np.ndarray]] = {name: [] for name in names}
    meta: dict = {}
    try:
        for j in range(len(layout.pieces())):
            reply = conn.request(Op.PULL, {"shard": shard, "piece": j}, what=f"the values of shard {shard}")
            if reply.array is None:
                raise ValueError(f"the driver answered the pull of shard {shard} without values")
            meta, n = reply.meta, int(reply.meta["values"])
            values.append(reply.array[:n])
            for i, name in enumerate(names if reply.array.size > n else ()):
                slots[name].append(reply.array[(i + 1) * n:(i + 2) * n])
    finally:
        conn.close()
    state = None
    if optimizer is not None:
        state = {f"slot/{name}": np.concatenate(parts) for name, parts in slots.items()}
        state["iterations"] = np.array(int(meta["iterations"]), np.int64)
    return np.concatenate(values), state, meta


def restored(store, optimizer_state: dict | None):
    """``store`` (a ``ShardStore``) with the optimizer state ``pull_shard`` gave."""
    if optimizer_state is not None:
        state = store.state()
        state.update(optimizer_state)
        store.restore(state)
    return store


def start_shard(layout: ShardLayout, shard: int, settings: ShardSettings, end) -> ShardServer:
    """Shard ``shard``'s server, from its part of the driver's model and optimizer state
    (``pull_shard``), at the epoch that runs."""
    optimizer = copy.deepcopy(settings.optimizer)
    values, state, meta = pull_shard(layout, shard, optimizer, end)
    server = ShardServer(layout, shard, values, rows=dict(settings.rows), mode=settings.mode,
                         optimizer=optimizer, staleness=settings.staleness, timeout=end.timeout,
                         workers=settings.workers)
    server.begin_epoch(int(meta["epoch"]))
    return restored(server, state)


def push_values(layout: ShardLayout, server: ShardServer, epoch: int, stats: dict, end) -> None:
    """Send the shard's values (and its optimizer's slots) to the driver piece by piece
    (``ShardSink``'s ``PUSH``)."""
    state = server.state()
    values = state["values"]
    slots = [state[f"slot/{name}"] for name in server.optimizer.slot_names] if server.optimizer is not None else []
    pieces = layout.pieces()
    conn = Connection(end.address, end.token, end.timeout, security=end.security)
    try:
        at = 0
        for j, piece in enumerate(pieces):
            n = layout.piece_length(server.shard, piece, server.owned)
            meta: dict = {"shard": server.shard, "epoch": epoch, "piece": j}
            if j == len(pieces) - 1:
                meta.update(stats=stats, iterations=int(state.get("iterations", 0)))
            with_slots = slots if piece[0] != "state" else []
            part = np.concatenate([values[at:at + n]] + [slot[at:at + n] for slot in with_slots])
            conn.request(Op.PUSH, meta, part, what=f"the driver's receipt of shard {server.shard}")
            at += n
    finally:
        conn.close()


class TaskShards:
    """What a task of a sharded fit holds whatever its mode: its shard (None when it hosts
    none), the addresses of all, its validation rows, and the models it trains and scores
    with, made from the skeleton the driver shipped (``skeleton``)."""

    def __init__(self, layout: ShardLayout, settings, shard: int | None, server, addresses: list, end,
                 close=None, val_block=None):
        self.layout, self.settings, self.shard, self.server = layout, settings, shard, server
        self.val_block = val_block
        self.addresses, self.end = [tuple(a) for a in addresses], end
        self._close = close
        self._before: dict = {}
        self._compact: tuple | None = None       # (capacity, compact worker), made once
        self._whole = None                       # the model with whole tables, made when needed

    def close(self) -> None:
        if self._close is not None:
            self._close()

    def whole_model(self, model):
        """The task's model with tables as large as the layout's (made once from the skeleton;
        its rows are written by pulls before any is read) — for workers that cannot be
        compact."""
        if [t.rows for t in ParamMap.from_model(model).tables] == [t.rows for t in self.layout.map.tables]:
            return model
        if self._whole is None:
            self._whole = resized_model(model, [t.rows for t in self.layout.map.tables])
        return self._whole

    def compact(self, model, capacity: list[int]):
        """A compact worker with room for ``capacity`` rows per table (made once per
        capacity), or the whole-table model when the ids feed other layers too."""
        if self._compact is None or self._compact[0] != capacity:
            try:
                self._compact = (capacity, compact_model(model, capacity))
            except ValueError:          # an input feeds tables and other layers: no renumbering
                return self.whole_model(model)
        return self._compact[1]

    def evaluate(self, model, batch_size: int, pull) -> tuple:
        """The task's validation rows at the shards' values: each batch pulls (``pull(ids)``)
        the dense part and the rows it reads into a compact model (or the whole tables) and
        predicts."""
        if self.val_block is None or not len(self.val_block[1]):
            return fit_task.evaluation_report(model, None, None, batch_size)
        m = self.layout.map
        target = self.compact(model, m.capacity(1, batch_size))
        local_map = ParamMap.from_model(target)
        compact = [t.rows for t in local_map.tables] != [t.rows for t in m.tables]

        def predict(xs):
            ids = m.ids_in(xs)
            pulled = pull(ids)
            if compact:
                xs, ids = renumbered(xs, ids, local_map)
            local_map.put_model(target, RowSlice(pulled.dense, ids, pulled.rows))
            return target.predict_arrays(xs, batch_size)

        return fit_task.evaluation_report(target, self.val_block, predict, batch_size)


class ShardTask(TaskShards):
    """A task's part in a sharded async fit; carries out the ``orders`` (see the module
    docstring)."""

    orders = (BEGIN, TRAIN, COLLECT, EVALUATE)

    def carry_out(self, model, block, partition: int, attempt: int, order: dict):
        """``((report meta, array), push or None)`` of one order, as ``run_fit_task`` sends them."""
        kind = order["kind"]
        if kind == TRAIN:
            return self._train(model, block, partition, attempt, order), None
        if kind == EVALUATE:
            return self._evaluate(model, partition, attempt, order), None
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
        stats["epoch_max_staleness"] = server.stats["epoch_max_staleness"]     # (not a count)
        push_values(self.layout, server, int(order["epoch"]), stats, self.end)
        return ({}, None), None

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

    def _evaluate(self, model, partition: int, attempt: int, order: dict) -> tuple:
        """The task's validation rows at the shards' values, as the epoch left them."""
        trains = dict(self.settings.rows)       # (a partition that trains nothing pulls as one that does)
        client = ShardedClient(self.layout, self.addresses, self.end.token, self.end.timeout, int(order["epoch"]),
                               partition if partition in trains else self.settings.rows[0][0], attempt,
                               security=self.end.security)
        try:
            return self.evaluate(model, int(order["batch_size"]), lambda ids: client.pull(0, ids))
        finally:
            client.close()

    def _worker(self, model, spec: worker.RoundSpec, rows: int):
        """The model that trains: compact (``sparse_worker.compact_model``, room for the rows
        of one push's steps) where it pushes exactly what a whole-table worker pushes — in
        gradients mode, or with a local optimizer without slots — else one with whole tables
        (``whole_model``). ``model``: the task's, the driver's skeleton (``skeleton``)."""
        opt = copy.copy(model.optimizer)         # (its slots stay the model's: reset_slots rebinds them)
        if spec.optimizer is not None:
            opt.apply_config(spec.optimizer)
        opt.reset_slots()
        opt.build(1)
        if rows == 0:               # (nothing trains)
            return model
        if spec.aggregate != "gradients" and opt.slots:
            return self.whole_model(model)
        per_epoch = -(-rows // spec.batch_size)
        steps = per_epoch if spec.frequency == "epoch" else 1 if spec.frequency == "batch" else int(spec.frequency)
        return self.compact(model, self.layout.map.capacity(min(steps, per_epoch), spec.batch_size))


def skeleton(model):
    """What a sharded fit ships to its tasks instead of ``model``: a copy with one row per
    table (``resized_model``) — the shards hold the tables and the workers pull their rows.
    A model whose architecture cannot be rebuilt from its config (a user layer that is not
    registered) is shipped whole, as the other fits ship it."""
    try:
        return resized_model(model, [1] * len(model.row_tables()))
    except ValueError as error:
        logger.info("SparkModel.fit: the tasks receive the whole model, tables included (%s)", error)
        return model


def layout_of(model, num_shards: int) -> ShardLayout:
    return ShardLayout(ParamMap.from_model(model), num_shards)
