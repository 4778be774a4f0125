"""``num_servers=K``: an async fit (modes async, hogwild, ssp) as one barrier job whose tasks
host the parameter server's K shards (``sparkdl.distributed.shard_task``).

The driver keeps the coordinator — orders, reports — and its model, as of the last
epoch's end (``ShardSink``), but no parameter server: the workers pull the dense part and
the rows their next steps read from the shards and push back the dense change and the rows
that changed (``sparse_worker``), so the bytes of a push grow with the rows touched, not
with the tables. At each epoch's end the shards push their values to the driver, whose model
takes them (callbacks, checkpoints and the end of the fit see the trained model; validation
runs in the tasks against the shards). The driver holds nothing the size of the model while
the fit runs: the tasks receive the model's skeleton (``shard_task.skeleton``, its tables
one row each), the model's weights (and the optimizer's slots the shards step) sit in
memory-mapped files (``mapped.MappedModel``), shards start from and end into them piece by
piece, and epoch-end values wait in files until all are in.
"""
from __future__ import annotations

import copy

from sparkdl.distributed import fit_task, shard_task
from sparkdl.distributed.coordinator import Coordinator
from sparkdl.distributed.mapped import MappedModel
from sparkdl.distributed.sparse import ParamMap
from sparkdl.spark import transports


def shard_settings(spark_model, rows: dict[int, int]) -> shard_task.ShardSettings:
    """Which partitions host the shards (the first ``num_servers`` that train) and how the
    shards apply pushes (as ``transports.parameter_server``'s server does; in gradients mode
    each steps a copy of the model's optimizer, which takes the model's optimizer state on its
    elements from the driver and hands it back at each epoch's end, ``ShardSink``)."""
    training = sorted(rows)
    optimizer = shard_optimizer(spark_model.model) if spark_model.aggregate == "gradients" else None
    one_step = spark_model.frequency in ("batch", 1)
    return shard_task.ShardSettings(
        hosts=tuple(training[:spark_model.num_servers]), rows=tuple(sorted(rows.items())),
        mode=spark_model.mode, staleness=spark_model.strategy.staleness,
        workers=1 if one_step else max(1, len(training)),
        optimizer=optimizer, param_map=ParamMap.from_model(spark_model.model))


def scratch_dir(conf) -> str | None:
    """Where the driver keeps a sharded fit's files: the first of ``spark.local.dir`` (Spark's
    scratch space, meant to be a local disk) when it is set, else the system's temporary
    directory."""
    local = conf.get("spark.local.dir", None)
    return local.split(",")[0].strip() or None if local else None


def shard_optimizer(model):
    """A copy of the model's optimizer without its slots (the shards' slots travel with their
    values, ``ShardSink``), made without copying the slots."""
    optimizer = copy.copy(model.optimizer)
    optimizer.reset_slots()         # (rebinds them: the model's are not touched)
    return copy.deepcopy(optimizer)


class ShardsInJob(transports.InJob):
    """What the one-job fits with shards in their tasks share: validation scored in the tasks
    from the shards' rows, the driver's model in files while the fit runs, and the sink's
    directory removed at the end."""

    sink: shard_task.ShardSink
    mapped: MappedModel | None = None

    def evaluate_validation(self) -> dict | None:
        """Loss and metrics of the validation rows the tasks hold, each batch predicted from
        the rows it reads, pulled from the shards (which hold the driver's values until the
        next epoch begins): no copy of the model travels."""
        if self.val_blocks is None:
            return None
        self.coordinator.order(shard_task.EVALUATE, {"batch_size": 256, "epoch": self.sink.epoch,
                                                     "label": "sparkdl validation"})
        return self._validation_result(self._wait("validation"))

    def _open_shards(self, spark_model, blocks, settings, optimizer, steps: bool, name: str, model_bc,
                     val_blocks, group: str, description: str) -> None:
        """The driver's side (``ShardSink`` of the model and ``optimizer``'s slots, ``steps``
        as it takes them, inside a coordinator that redoes a retried stage's open order), the
        model moved into files, the server, and the barrier job whose tasks host the shards
        of ``settings``; everything released again if the job cannot start."""
        model = spark_model.model
        self.ps, self.exchange = None, None
        self.hosts = list(settings.hosts)
        self.sink = shard_task.ShardSink(shard_task.layout_of(model, spark_model.num_servers), model,
                                         optimizer=optimizer, steps=steps, parent=scratch_dir(blocks.site.conf))
        self.coordinator = Coordinator(self.sink, partitions=range(len(blocks.rows)),
                                       poll=min(10.0, spark_model.timeout / 2),
                                       state_sizes=(model.flat_weights.size, model.flat_state.size), redo=True)
        try:
            self.mapped = self.sink.mapped = MappedModel(model, optimizer, self.sink.spill)
            self.server, address, token = transports.serve(blocks.site, self.coordinator, name,
                                                           spark_model.port, self.timeout)
            self.end = fit_task.FitEndpoint(address, token, self.timeout, security=self.server.security,
                                            shards=settings)
            self._start_job(blocks, model_bc, val_blocks, group, description)
        except BaseException:
            self._release()
            raise

    def _drop_pages(self) -> None:
        """Hand back the pages of the model's files that checkpoints and callbacks read."""
        if self.mapped is not None:
            self.mapped.drop()

    def close(self, failed: bool) -> None:
        try:
            super().close(failed)
        finally:
            self._release()

    def _release(self) -> None:
        """The model back in ordinary memory (the fit's result); the sink's files removed."""
        try:
            if self.mapped is not None:
                self.mapped.close()
        finally:
            self.sink.close()


class ShardedInJob(ShardsInJob):
    """The fit's barrier job with the parameter server's shards in its tasks (see the module
    docstring). Shares ``InJob``'s waiting and ``ShardsInJob``'s validation and closing."""

    def __init__(self, spark_model, blocks, model_bc, val_blocks, group: str, description: str):
        self._take_settings(spark_model, blocks)
        optimizer = spark_model.model.optimizer if self.aggregate == "gradients" else None
        # A retried stage redoes the open order in every task: new shards hold the last epoch's
        # end, and the epoch is then run again whole (``async_epoch``).
        self._open_shards(spark_model, blocks, shard_settings(spark_model, self.rows), optimizer, True,
                          f"sparkdl-{spark_model.mode}-shards", model_bc, val_blocks, group, description)

    def async_epoch(self, spec, what: str):
        """Begin the epoch on the shards, train every partition against them, take their
        values; run again from the beginning when a task was retried meanwhile."""
        sink = self.sink
        self._drop_pages()          # (what checkpoints and callbacks read since the last epoch)
        reload = False
        while True:
            retries = sink.retries
            sink.open_epoch(spec.round)
            meta = {"epoch": spec.round, "label": f"sparkdl {what}"}
            self.coordinator.order(shard_task.BEGIN, dict(meta, reload=reload), expected=self.hosts)
            self._wait(what)
            self.coordinator.order(shard_task.TRAIN, dict(meta, spec=vars(spec)), expected=self.training)
            result = self._results(self._wait(what))
            if sink.retries == retries:
                transports.check_result(result, f"epoch {spec.round + 1}", "epoch")
                self.coordinator.order(shard_task.COLLECT, meta, expected=self.hosts)
                self._wait(what)
            if sink.retries == retries:
                break
            reload = True
        return result, epoch_counts(sink.take())


def epoch_counts(stats: list[dict]) -> dict:
    """What the shards did in an epoch (``transports.epoch_counts``' keys): every push and
    clock reaches every shard, so pushes and pulls are counted once (shard 0's), bytes summed,
    and the widest ssp clock gap a pull saw on any shard (0 in the other modes, as the
    driver's server reports)."""
    first = stats[0]
    return {"pushes": first["pushes"], "duplicate_pushes": first["duplicates"], "pulls": first["pulls"],
            "bytes_pushed": sum(s["bytes_pushed"] for s in stats),
            "bytes_pulled": sum(s["bytes_pulled"] for s in stats),
            "staleness": max(s["epoch_max_staleness"] for s in stats)}
