"""One pass of a partition against the sharded parameter server, with row-sparse traffic.

The row-sparse counterpart of ``worker.run_async_epoch`` (async, hogwild and ssp; weights or
gradients): before each stretch of ``frequency`` steps the worker asks for the rows those
steps will read (``ParamMap.touched_ids`` from their batch plan) and the dense part, writes
them into its model, trains, and pushes the dense update and the rows that changed (every
touched row's gradient sum in gradients mode). Rows the stretch does not read are neither
pulled nor pushed, and the model's copies of them are never read: the steps see exactly
the values the whole-vector path would give them, so the two paths push the same updates.
"""
from __future__ import annotations

import time

import numpy as np

from sparkdl.distributed.sparse import ParamMap, RowSlice
from sparkdl.distributed.worker import RoundResult, RoundSpec, _rows, non_finite
from sparkdl.engine.training import BatchPlan
from sparkdl.errors import TrainingDivergedError


def run_sparse_async_epoch(model, xs: list[np.ndarray], y: np.ndarray, spec: RoundSpec, partition: int,
                           client, param_map: ParamMap) -> RoundResult:
    """One pass over a partition, ``frequency`` steps per push. ``client`` has ``start() /
    pull(clock, ids) -> RowSlice / push(sequence, samples, RowSlice) / done()``
    (``shard_client.ShardedClient``). Batches and dropout draw from ``(seed, epoch,
    partition)``, as in ``run_async_epoch``."""
    if spec.mode not in ("async", "hogwild", "ssp"):
        raise ValueError(f"row-sparse traffic: expected mode async, hogwild or ssp, received {spec.mode!r}")
    n = len(y)
    if n == 0:
        return RoundResult(partitions=1, empty_partitions=[partition])
    opt = model.optimizer
    if spec.optimizer is not None:
        opt.apply_config(spec.optimizer)
    opt.build(model.flat_weights.size)
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
        param_map.put_model(model, pulled)
        rows = _rows(n, spec.batch_size, a, b)
        seen += rows
        try:
            if spec.aggregate == "gradients":
                loss, update = _gradient_sum(model, xs, y, plan, param_map, ids)
                update.dense[param_map.dense_size:] = model.flat_state - pulled.dense[param_map.dense_size:]
            else:
                loss = model.train_epoch(xs, y, spec.batch_size, key, start=a, stop=b)
                update = param_map.take_model(model, ids).minus(pulled).changed()
            loss_sum += loss
            what = non_finite(loss_sum, {"gradients" if spec.aggregate == "gradients" else "update":
                                         np.concatenate([update.dense, *(r.reshape(-1) for r in update.rows)])})
        except TrainingDivergedError as error:
            loss_sum, what = float("nan"), str(error)
        compute += time.perf_counter() - start
        if what is not None:        # nothing non-finite reaches the shards
            client.done()
            return RoundResult(samples=seen, steps=per_epoch, loss_sum=loss_sum, partitions=1,
                               diverged=[(partition, f"{what} (push {sequence + 1})")],
                               compute_seconds=compute)
        part = [m.state.copy() for m in model.metrics]
        states = part if states is None else [x + p for x, p in zip(states, part)]
        client.push(sequence, rows, update)
    client.done()
    return RoundResult(samples=seen, steps=per_epoch, loss_sum=loss_sum, metric_states=states or [],
                       compute_seconds=compute, partitions=1,
                       short_partitions=[(partition, n)] if n < spec.batch_size else [])


def _gradient_sum(model, xs, y, plan: BatchPlan, param_map: ParamMap,
                  ids: list[np.ndarray]) -> tuple[float, RowSlice]:
    """The batch-size-weighted gradient sum of ``plan``'s batches at fixed weights, on the
    dense weights and the rows ``ids`` (the statistics part left at zero for the caller), and
    the summed loss; each batch adds only its own rows (``touched_rows``), whose gradients are
    the only non-zero ones of its table."""
    d = param_map.dense_size
    dense = np.zeros(param_map.dense_length, np.float32)
    rows = [np.zeros((len(i), t.dim), np.float32) for i, t in zip(ids, param_map.tables)]
    tables = model.row_tables()
    total = 0.0
    for m in model.metrics:
        m.reset()
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
    return total, RowSlice(dense, ids, rows)
