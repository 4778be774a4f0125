"""Sync gradient rounds of a one-job fit on shards in the tasks (``mode="sync"``,
``aggregate="gradients"``, ``num_servers=K``).

The tasks of the first K training partitions each host one ``shard_rounds.ShardRounds``;
every training task trains its part of each round against all K with row-sparse traffic
(``sparse_worker.run_sparse_sync_round`` through one ``shard_client.ShardedClient`` kept for
the task's life). The driver keeps, as for the async modes' shards, the coordinator and a
``shard_task.ShardSink`` serving its model as of the last time it took the shards' values.

A round is one order, ``shard-round``, to every training partition: a host first closes the
round still open on its shard (the previous one: every partition pushed it before it
reported, and the driver orders round r only once every report of round r-1 is in), which
applies its mean gradient, then opens round r with the partitions and their samples, then
trains its own partition like every other task. A task's pull of round r that reaches a
shard before its host opened it waits for the opening (``ShardRounds.wait``). So a round
costs the driver one order and one report per task, as a whole-vector sync round does.
When the driver needs the model — each epoch's end, checkpoints, callbacks that watch
rounds — it sends a second order, ``shard-round-collect``, to the hosts: each closes the
open round and pushes its values and optimizer slots to the sink (or, when the step made them
non-finite, reports that instead: nothing non-finite reaches the driver). Validation,
``shard-evaluate``, scores each task's rows from rows pulled between rounds.

Retries: a retried stage starts new shards from the driver's model and optimizer slots; the
driver then replays the rounds since it last took the shards' values, the first with
``reload`` (the shards take the driver's values afresh: the retried stage's first order may
have moved them), so a retried fit ends with the weights of a fit without the fault bit for
bit.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from sparkdl.distributed import fit_task, worker
from sparkdl.distributed.shard_client import ShardedClient
from sparkdl.distributed.shard_layout import ShardLayout
from sparkdl.distributed.shard_rounds import ShardRounds
from sparkdl.distributed.shard_task import EVALUATE, STATS, TaskShards, pull_shard, push_values, restored
from sparkdl.distributed.sparse import ParamMap
from sparkdl.distributed.sparse_worker import run_sparse_sync_round

ROUND, COLLECT = "shard-round", "shard-round-collect"


@dataclass(frozen=True)
class RoundShardSettings:
    """What a task needs to host or reach the shards of sync rounds (in the task closure)."""
    hosts: tuple            # the partitions that host shard 0 … K-1
    rows: tuple             # ((partition, rows), ...) of the partitions that train
    optimizer: object       # the optimizer the shards step (slots reset)
    param_map: ParamMap | None = None   # the model's map (the tasks' model is its skeleton, without tables)

    @property
    def num_shards(self) -> int:
        return len(self.hosts)


def start_round_shard(layout: ShardLayout, shard: int, settings: RoundShardSettings, end) -> ShardRounds:
    """Shard ``shard``'s rounds, from its part of the driver's model and optimizer slots
    (``shard_task.pull_shard``); its pulls wait up to the fit's ``timeout`` for their round to
    open."""
    optimizer = copy.deepcopy(settings.optimizer)
    values, state, _ = pull_shard(layout, shard, optimizer, end)
    return restored(ShardRounds(layout, shard, values, optimizer, wait=end.timeout), state)


class RoundShardTask(TaskShards):
    """A task's part in a sharded sync fit; carries out the ``orders`` (see the module
    docstring)."""

    orders = (ROUND, COLLECT, EVALUATE)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._client: ShardedClient | None = None      # kept for the task's life

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        super().close()

    def carry_out(self, model, block, partition: int, attempt: int, order: dict):
        """``((report meta, array), push or None)`` of one order, as ``run_fit_task`` sends them."""
        server = self.server
        if order["kind"] == ROUND:
            if server is not None:
                self._open(server, order)
            return self._train(model, block, partition, attempt, order), None
        if order["kind"] == EVALUATE:          # between rounds: the values as the last round left them
            client = self._client_of(partition, attempt)
            return self.evaluate(model, int(order["batch_size"]), lambda ids: client.pull_round(-1, ids)), None
        if server is None:
            raise RuntimeError(f"partition {partition} hosts no shard, received order {order['kind']!r}")
        server.close_round()
        values = server.snapshot()
        if not np.isfinite(np.sum(values, dtype=np.float64)):       # nothing non-finite reaches the driver
            what = f"shard {self.shard} holds non-finite values after the optimizer's step on the mean gradient"
            return ({"diverged": [[partition, what]]}, None), None
        stats = {k: server.stats[k] - self._before.get(k, 0) for k in STATS}
        self._before = dict(server.stats)
        push_values(self.layout, server, int(order["epoch"]), stats, self.end)
        return ({}, None), None

    def _open(self, server: ShardRounds, order: dict) -> None:
        """Close the open round (apply its mean), then open the order's, stepped with the
        driver's optimizer settings and step count."""
        if order.get("reload"):         # (a round the retried stage opened is not applied)
            server.discard_round()
            server.restore(start_round_shard(self.layout, server.shard, self.settings, self.end).state())
        server.close_round()
        spec = order["spec"]
        opt = server.optimizer
        assert opt is not None, "a shard of rounds steps an optimizer"
        if spec.get("optimizer") is not None:      # a callback may have changed the learning rate
            opt.apply_config(spec["optimizer"])
        opt.iterations = int(order["iterations"])
        server.open_round(spec["round"], {int(p): int(n) for p, n in order["samples"]})

    def _train(self, model, block, partition: int, attempt: int, order: dict) -> tuple:
        spec = worker.RoundSpec(**order["spec"])
        xs, y = block
        client = self._client_of(partition, attempt)
        before = client.stats["bytes_pushed"] + client.stats["bytes_pulled"]
        result = run_sparse_sync_round(self._worker(model, spec, len(y)), xs, y, spec, partition, client,
                                       self.layout.map)
        meta, metrics = fit_task.result_report(result)
        meta["shard_bytes"] = client.stats["bytes_pushed"] + client.stats["bytes_pulled"] - before
        return meta, metrics

    def _client_of(self, partition: int, attempt: int) -> ShardedClient:
        if self._client is None:
            self._client = ShardedClient(self.layout, self.addresses, self.end.token, self.end.timeout, 0,
                                         partition, attempt, security=self.end.security)
        return self._client

    def _worker(self, model, spec: worker.RoundSpec, rows: int):
        """The model that computes the round's gradients: compact (``compact_model``, room for
        the rows of one round's batches), which sums exactly what a whole-table model sums,
        unless the ids feed other layers too (then one with whole tables). ``model``: the
        driver's skeleton."""
        if rows == 0:               # (nothing trains)
            return model
        per_epoch = -(-rows // spec.batch_size)
        steps = worker.steps_in_round(spec.frequency, rows, spec.batch_size)
        # A round of more steps than a pass reads at most every row of the partition.
        return self.compact(model, self.layout.map.capacity(min(steps, per_epoch), spec.batch_size))


def round_samples(spec: worker.RoundSpec, rows: dict[int, int]) -> list[list[int]]:
    """``[[partition, samples], ...]`` of a round's training partitions (an order's JSON)."""
    return [[p, worker.round_samples(spec, n)] for p, n in sorted(rows.items())]

