"""What a worker does against the sharded parameter server, with row-sparse traffic.

``run_sparse_async_epoch`` is the row-sparse counterpart of ``worker.run_async_epoch``
(async, hogwild and ssp; weights or gradients), ``run_sparse_sync_round`` of a sync round of
``worker.run_round`` with ``aggregate="gradients"`` (against ``shard_rounds``). Before each
stretch of ``frequency`` steps the worker asks for the rows those
steps will read (``ParamMap.touched_ids`` from their batch plan) and the dense part, writes
them into its model, trains, and pushes the dense update and the rows that changed (every
touched row's gradient sum in gradients mode). Rows the stretch does not read are neither
pulled nor pushed, and the model's copies of them are never read: the steps see exactly
the values the whole-vector path would give them.

The worker's model may hold the whole tables (the user's model), or be *compact*
(``compact_model``): each table has room for the rows one stretch touches, the pulled rows
go to its first rows and the stretch's ids are renumbered to them. A compact worker's memory
is bounded by ``frequency x batch_size x ids per example`` rows per table, whatever the
vocabulary. The arithmetic is the same — renumbering keeps the ids' order, so every sum runs
in the same order — except for the worker's own optimizer slots of table rows, which a
compact worker restarts at each pull (the rows then hold other ids). So both kinds of worker
push exactly what the whole-vector path pushes in gradients mode (workers take no step) and
in weights mode with a local optimizer without slots (SGD without momentum); with slots, a
compact worker's rows forget their momentum or moments between stretches.
"""
from __future__ import annotations

import copy
import time

import numpy as np

from sparkdl.distributed.sparse import ParamMap, RowSlice
from sparkdl.distributed.worker import (RoundResult, RoundSpec, _pass_slices, _rows, diverged_push, epoch_result,
                                        non_finite, round_samples, steps_in_round)
from sparkdl.engine import serialization
from sparkdl.engine.training import BatchPlan
from sparkdl.errors import TrainingDivergedError


def compact_model(model, capacity: list[int]):
    """A compiled copy of ``model`` whose embedding tables have ``capacity[t]`` rows (one per
    table of ``ParamMap.from_model(model)``; ``ParamMap.capacity`` gives what a stretch can
    touch), with its dense weights and moving statistics; its optimizer is a copy of the
    model's, without slots. The inputs that feed tables must feed nothing else: a compact
    worker renumbers their ids."""
    m = ParamMap.from_model(model)
    tables = {id(layer) for layer, _, _ in model.row_tables()}
    for t in m.tables:
        others = [layer.name for layer in model.input_consumers(t.input_index) if id(layer) not in tables]
        if others:
            raise ValueError(f"compact_model: expected the ids of table {t.name} to feed embedding tables "
                             f"only (a compact worker renumbers them), received an input read by {others}")
    return resized_model(model, capacity)


def resized_model(model, rows: list[int]):
    """A compiled copy of ``model`` whose embedding tables have ``rows[t]`` rows (freshly
    initialised), with its dense weights and moving statistics; its optimizer is a copy of
    the model's, without slots. ``resized_model(model, [1] * tables)`` is a model's
    *skeleton*: everything but its tables, which a sharded fit ships to its tasks."""
    m = ParamMap.from_model(model)
    names = {t.name.split("/")[0]: int(r) for t, r in zip(m.tables, rows)}
    config = copy.deepcopy(model.get_config())
    for spec in config["layers"]:
        if spec["config"].get("name") in names:
            spec["config"]["input_dim"] = names[spec["config"]["name"]]
    local = serialization.model_from_config(type(model).__name__, config, who="resized_model")
    opt = copy.copy(model.optimizer)     # (the model's slots are not copied: reset_slots rebinds them)
    opt.reset_slots()
    local.compile(optimizer=copy.deepcopy(opt), loss=copy.deepcopy(model.loss),
                  metrics=[metric.fresh() for metric in model.metrics])
    assert local.dense_size == m.dense_size, "the tables follow the same dense weights"
    local.flat_weights[:m.dense_size] = model.flat_weights[:m.dense_size]
    local.flat_state[...] = model.flat_state
    return local


def run_sparse_async_epoch(model, xs: list[np.ndarray], y: np.ndarray, spec: RoundSpec, partition: int,
                           client, param_map: ParamMap) -> RoundResult:
    """One pass over a partition, ``frequency`` steps per push. ``model``: the worker's, with
    whole tables or compact (``compact_model``); ``param_map``: the map of the server's
    vector. ``client`` has ``start() / pull(clock, ids) -> RowSlice / push(sequence, samples,
    RowSlice) / done()`` (``shard_client.ShardedClient``). Batches and dropout draw from
    ``(seed, epoch, partition)``, as in ``run_async_epoch``."""
    if spec.mode not in ("async", "hogwild", "ssp"):
        raise ValueError(f"row-sparse traffic: expected mode async, hogwild or ssp, received {spec.mode!r}")
    n = len(y)
    if n == 0:
        return RoundResult(partitions=1, empty_partitions=[partition])
    opt = model.optimizer
    if spec.optimizer is not None:
        opt.apply_config(spec.optimizer)
    opt.build(model.flat_weights.size)
    local_map = ParamMap.from_model(model)
    compact = [t.rows for t in local_map.tables] != [t.rows for t in param_map.tables]
    per_epoch = -(-n // spec.batch_size)
    tau = per_epoch if spec.frequency == "epoch" else 1 if spec.frequency == "batch" else int(spec.frequency)
    key = (spec.seed, spec.round, partition)
    loss_sum, seen, compute, states = 0.0, 0, 0.0, None
    client.start()
    for sequence, a in enumerate(range(0, per_epoch, tau)):
        b = min(a + tau, per_epoch)
        plan = BatchPlan(n, spec.batch_size, key, a, b)
        ids = param_map.touched_ids(xs, [plan])
        pulled = client.pull(sequence, ids)
        start = time.perf_counter()
        sx, sy, splan = plan.gathered(xs, y)
        local_ids = ids
        if compact:
            sx, local_ids = renumbered(sx, ids, local_map)
            opt.reset_elements(local_map.dense_size, local_map.weights_size)
        base = RowSlice(pulled.dense, local_ids, pulled.rows)
        local_map.put_model(model, base)
        rows = _rows(n, spec.batch_size, a, b)
        seen += rows
        try:
            if spec.aggregate == "gradients":
                for metric in model.metrics:
                    metric.reset()
                loss, update = _gradient_sum(model, sx, sy, splan, local_map, local_ids)
                update.dense[local_map.dense_size:] = model.flat_state - pulled.dense[local_map.dense_size:]
            else:
                loss = model.train_plan(splan, sx, sy)
                update = local_map.take_model(model, local_ids).minus(base)
            update = RowSlice(update.dense, ids, update.rows)
            if spec.aggregate == "weights":
                update = update.changed()
            loss_sum += loss
            what = non_finite(loss_sum, {"gradients" if spec.aggregate == "gradients" else "update": update.flat()})
        except TrainingDivergedError as error:
            loss_sum, what = float("nan"), str(error)
        compute += time.perf_counter() - start
        if what is not None:        # nothing non-finite reaches the shards
            client.done()
            return diverged_push(partition, what, sequence, seen, per_epoch, loss_sum, compute)
        part = [m.state.copy() for m in model.metrics]
        states = part if states is None else [x + p for x, p in zip(states, part)]
        client.push(sequence, rows, update)
    client.done()
    return epoch_result(partition, n, spec.batch_size, seen, per_epoch, loss_sum, states, compute)


def run_sparse_sync_round(model, xs: list[np.ndarray], y: np.ndarray, spec: RoundSpec, partition: int,
                          client, param_map: ParamMap) -> RoundResult:
    """A partition's part of sync round ``spec.round`` with ``aggregate="gradients"`` against
    the shards' ``shard_rounds.ShardRounds``: pull the dense part and the rows the round's
    steps read, sum the gradients of its batches at those weights (as ``worker.run_round``
    does on the whole vector), push them with the moving statistics. ``client`` has
    ``pull_round(round, ids) / push_round(round, samples, RowSlice)``; ``model`` as in
    ``run_sparse_async_epoch``."""
    if spec.aggregate != "gradients":
        raise ValueError(f"row-sparse sync rounds: expected aggregate 'gradients', received {spec.aggregate!r}")
    n = len(y)
    if n == 0:
        return RoundResult(partitions=1, empty_partitions=[partition])
    per_epoch = -(-n // spec.batch_size)
    steps = steps_in_round(spec.frequency, n, spec.batch_size)
    plans = [BatchPlan(n, spec.batch_size, key, a, b) for key, a, b in _pass_slices(spec, partition, steps, per_epoch)]
    ids = param_map.touched_ids(xs, plans)
    pulled = client.pull_round(spec.round, ids)
    start = time.perf_counter()
    local_map = ParamMap.from_model(model)
    local_ids, stretches = ids, [plan.gathered(xs, y) for plan in plans]
    if [t.rows for t in local_map.tables] != [t.rows for t in param_map.tables]:
        renumbering = [renumbered(sx, ids, local_map) for sx, _, _ in stretches]
        local_ids = renumbering[0][1]
        stretches = [(sx, sy, splan) for (sx, _), (_, sy, splan) in zip(renumbering, stretches)]
    local_map.put_model(model, RowSlice(pulled.dense, local_ids, pulled.rows))
    for metric in model.metrics:
        metric.reset()
    loss_sum, update = 0.0, None
    try:
        for sx, sy, splan in stretches:
            loss, update = _gradient_sum(model, sx, sy, splan, local_map, local_ids, update)
            loss_sum += loss
        assert update is not None, "a partition with rows has a batch"
        update.dense[local_map.dense_size:] = model.flat_state
        what = non_finite(loss_sum, {"gradients": update.flat()})
    except TrainingDivergedError as error:
        loss_sum, what = float("nan"), str(error)
    seen = round_samples(spec, n)
    short = [(partition, n)] if n < spec.batch_size else []
    if what is not None or update is None:      # nothing non-finite reaches the shards
        return RoundResult(samples=seen, steps=steps, loss_sum=loss_sum, partitions=1, short_partitions=short,
                           diverged=[(partition, str(what))], compute_seconds=time.perf_counter() - start)
    compute = time.perf_counter() - start
    client.push_round(spec.round, seen, RowSlice(update.dense, ids, update.rows))
    return RoundResult(samples=seen, steps=steps, loss_sum=loss_sum, compute_seconds=compute, partitions=1,
                       metric_states=[m.state.copy() for m in model.metrics], short_partitions=short)


def renumbered(xs: list[np.ndarray], ids: list[np.ndarray],
                local_map: ParamMap) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The stretch's inputs with each table's ids replaced by their rank among ``ids`` (the
    rows of a compact model), and those local ids. Tables that read the same input touch the
    same ids, so one renumbering serves them all."""
    out = list(xs)
    local_ids = []
    for t, tab in enumerate(local_map.tables):
        if len(ids[t]) > tab.rows:
            raise ValueError(f"table {tab.name}: the stretch touches {len(ids[t])} rows, the compact "
                             f"model holds {tab.rows} (compact_model's capacity)")
        out[tab.input_index] = np.searchsorted(ids[t], xs[tab.input_index]).astype(np.int64)
        local_ids.append(np.arange(len(ids[t]), dtype=local_map.id_dtype))
    return out, local_ids


def _gradient_sum(model, xs, y, plan: BatchPlan, param_map: ParamMap, ids: list[np.ndarray],
                  into: RowSlice | None = None) -> tuple[float, RowSlice]:
    """The batch-size-weighted gradient sum of ``plan``'s batches at fixed weights, on the
    dense weights and the rows ``ids`` (the statistics part left at zero for the caller), added
    to ``into`` when given, and the summed loss; each batch adds only its own rows
    (``touched_rows``), whose gradients are the only non-zero ones of its table. Metrics
    accumulate (the caller resets them)."""
    d = param_map.dense_size
    if into is None:
        into = RowSlice(np.zeros(param_map.dense_length, np.float32), ids,
                        [np.zeros((len(i), t.dim), np.float32) for i, t in zip(ids, param_map.tables)])
    dense, rows = into.dense, into.rows
    tables = model.row_tables()
    total = 0.0
    for _, xb, yb in plan.iterate(model, xs, y):
        loss, output = model.loss_and_backward(xb, yb)
        weight = np.float32(len(yb))
        grads = model.flat_gradients
        dense[:d] += grads[:d] * weight
        for t, (layer, key, _) in enumerate(tables):
            touched = layer.touched_rows[key]
            rows[t][np.searchsorted(ids[t], touched)] += param_map.table(grads, t)[touched] * weight
        total += loss * len(yb)
        for m in model.metrics:
            m.update(yb, output)
    return total, into
