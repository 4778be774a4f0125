"""``mode="sync", aggregate="gradients", num_servers=K``: sync gradient rounds as one barrier
job whose tasks host K shards of the model (``sparkdl.distributed.shard_round_task``).

Each round is one order to the training tasks; the shards apply each round's mean gradient
(one row-sparse optimizer step: the dense weights and the rows some partition pushed), so
no vector passes through the driver during the rounds. The driver's model takes the shards'
values — one more order, to the hosts — only on the rounds that need it: each epoch's last
(validation, callbacks, ``stop_training`` and the end of the fit come only there),
checkpoints, and every round when a callback watches rounds. A retried stage makes the
driver replay the rounds since its model last took the shards' values.
"""
from __future__ import annotations

from sparkdl.distributed import shard_round_task
from sparkdl.distributed.sparse import ParamMap
from sparkdl.errors import SparkTrainingDivergedError
from sparkdl.spark import sharded, transports
from sparkdl.spark.sharded import shard_optimizer


def round_shard_settings(spark_model, rows: dict[int, int]) -> shard_round_task.RoundShardSettings:
    """The first ``num_servers`` training partitions host the shards, which step a copy of the
    model's optimizer (its slots come from the driver's, and go back to it with the values)."""
    training = sorted(rows)
    return shard_round_task.RoundShardSettings(hosts=tuple(training[:spark_model.num_servers]),
                                               rows=tuple(sorted(rows.items())),
                                               optimizer=shard_optimizer(spark_model.model),
                                               param_map=ParamMap.from_model(spark_model.model))


class ShardedRoundsInJob(sharded.ShardsInJob):
    """The fit's barrier job with sync gradient rounds on shards in its tasks (see the module
    docstring). Shares ``InJob``'s waiting and ``ShardsInJob``'s validation and closing; like ``RingInJob`` its
    ``sync_round`` applies the round itself and returns ``(result, bytes moved)``."""

    applies_rounds = True

    def __init__(self, spark_model, blocks, model_bc, val_blocks, group: str, description: str):
        self._take_settings(spark_model, blocks)
        self._pending: list[dict] = []      # the orders of the rounds the driver's model lacks
        self._taken: int | None = None      # the rounds in the driver's model (known at the first)
        # A retried stage redoes the open order in every task; the rounds since the driver last
        # took the shards' values are then replayed (``sync_round``).
        self._open_shards(spark_model, blocks, round_shard_settings(spark_model, self.rows),
                          spark_model.model.optimizer, False, "sparkdl-sync-shards", model_bc, val_blocks,
                          group, description)

    def sync_round(self, spec, what: str, need_weights: bool = True):
        """``(result, bytes of the tasks' pulls and pushes)``: round ``spec.round`` on the
        shards; with ``need_weights`` the driver's model takes the shards' values after it."""
        opt = self.model.optimizer
        if self._taken is None:             # the fit starts (or resumes) from the driver's model
            self._taken = spec.round
        if not self._pending:               # (what checkpoints and callbacks read since the last take)
            self._drop_pages()
        self._pending.append({"spec": vars(spec), "iterations": int(opt.iterations),
                              "samples": shard_round_task.round_samples(spec, self.rows),
                              "label": f"sparkdl {what}"})
        sink = self.sink
        todo = self._pending[-1:]
        while True:
            retries = sink.retries
            for i, order in enumerate(todo):
                reports = self._round(dict(order, reload=todo is self._pending and i == 0), what)
                if sink.retries != retries:
                    break
            if sink.retries == retries:
                moved = sum(int(meta.get("shard_bytes", 0)) for meta, _ in reports.values())
                result = self._results(reports)
                transports.check_result(result, what.split("/")[0], "round", kept=(
                    f"the driver's model holds the shards' values after round {self._taken}, the last "
                    f"it took (with num_servers the shards keep no earlier values)"))
                if not need_weights or self._collect(spec, what, retries):
                    break
            todo = self._pending            # a retry: again from the driver's values
        opt.iterations += 1
        return result, moved

    def _round(self, order: dict, what: str) -> dict:
        self.coordinator.order(shard_round_task.ROUND, order, expected=self.training)
        return self._wait(what)

    def _collect(self, spec, what: str, retries: int) -> bool:
        """The driver's model takes the shards' values after round ``spec.round``; False (and
        nothing taken) when a task was retried meanwhile."""
        sink = self.sink
        sink.open_epoch(spec.round)
        self.coordinator.order(shard_round_task.COLLECT, {"epoch": spec.round, "label": f"sparkdl {what}"},
                               expected=self.hosts)
        reports = self._wait(what)
        if sink.retries != retries:
            return False
        diverged = sorted(tuple(d) for meta, _ in reports.values() for d in meta.get("diverged", []))
        if diverged:
            raise SparkTrainingDivergedError(
                f"SparkModel.fit: training diverged in round {spec.round + 1} ("
                f"{'; '.join(f'partition {p}: {what}' for p, what in diverged)}); the model keeps the "
                f"shards' values after round {self._taken}. Lower the learning rate, clip gradients or "
                f"check the data for extreme values")
        sink.take()
        self._pending, self._taken = [], spec.round + 1
        return True

