"""What one partition does in one synchronous round, and how round results combine.

A round starts from the driver's flat weights (plus moving statistics and optimizer slots),
trains the partition's block for its share of steps and returns a ``RoundResult``: either
the new weights (model averaging) or the summed gradients at the starting weights. Results
combine pairwise (``combine``) so Spark can tree-reduce them: the driver receives one result,
never one copy per worker. Everything random comes from ``(seed, round, partition)``, so a
retried task recomputes exactly the same result.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class RoundSpec:
    """What every partition needs to know about the round (the same for all of them)."""
    round: int
    seed: int
    batch_size: int
    frequency: object          # "epoch", "batch" or an int tau
    aggregate: str             # "weights" or "gradients"
    optimizer: dict | None = None   # the driver's optimizer config (a callback may change it)


@dataclass
class RoundResult:
    """A partition's (or several partitions' combined) contribution to a round."""
    samples: int = 0        # examples trained on in the round (the averaging weight)
    steps: int = 0
    loss_sum: float = 0.0
    vector: np.ndarray | None = None       # weights averaged by samples, or summed gradients
    state: np.ndarray | None = None        # moving statistics averaged by samples
    slots: dict = field(default_factory=dict)   # optimizer slots averaged by samples
    metric_states: list = field(default_factory=list)
    compute_seconds: float = 0.0
    partitions: int = 0
    short_partitions: list = field(default_factory=list)   # (partition, rows) below batch_size
    empty_partitions: list = field(default_factory=list)


def _weighted_mean(a, na, b, nb):
    if a is None:
        return b
    if b is None:
        return a
    total = na + nb
    out = a * np.float32(na / total)
    out += b * np.float32(nb / total)
    return out


def combine(a: RoundResult, b: RoundResult, aggregate: str) -> RoundResult:
    """Merge two results; associative and commutative up to float rounding."""
    if a.samples == 0 and a.vector is None:
        merged = b
        merged.empty_partitions = a.empty_partitions + b.empty_partitions
        merged.short_partitions = a.short_partitions + b.short_partitions
        merged.partitions += a.partitions
        return merged
    if b.samples == 0 and b.vector is None:
        return combine(b, a, aggregate)
    na, nb = a.samples, b.samples
    if aggregate == "gradients":
        vector = None if a.vector is None or b.vector is None else a.vector + b.vector
    else:
        vector = _weighted_mean(a.vector, na, b.vector, nb)
    return RoundResult(
        samples=na + nb,
        steps=max(a.steps, b.steps),
        loss_sum=a.loss_sum + b.loss_sum,
        vector=vector,
        state=_weighted_mean(a.state, na, b.state, nb),
        slots={k: _weighted_mean(a.slots[k], na, b.slots[k], nb) for k in a.slots},
        metric_states=[sa + sb for sa, sb in zip(a.metric_states, b.metric_states)],
        compute_seconds=max(a.compute_seconds, b.compute_seconds),
        partitions=a.partitions + b.partitions,
        short_partitions=a.short_partitions + b.short_partitions,
        empty_partitions=a.empty_partitions + b.empty_partitions,
    )


def steps_in_round(frequency, rows: int, batch_size: int) -> int:
    if frequency == "epoch":
        return -(-rows // batch_size)
    if frequency == "batch":
        return 1
    return int(frequency)


def run_round(model, xs: list[np.ndarray], y: np.ndarray, spec: RoundSpec, partition: int,
              weights: np.ndarray, state: np.ndarray | None, slots: dict,
              iterations: int) -> RoundResult:
    """Train ``model`` on one partition's block for one round and return its result.

    ``model`` is the worker's copy (compiled); its weights, moving statistics and optimizer
    state are overwritten from the driver's before anything runs.
    """
    n = len(y)
    if n == 0:
        return RoundResult(partitions=1, empty_partitions=[partition])
    start = time.perf_counter()
    model.set_flat_weights(weights)
    if state is not None and state.size:
        model.flat_state[...] = state
    opt = model.optimizer
    opt.build(weights.size)
    for k, v in slots.items():
        opt.slots[k][...] = v
    opt.iterations = iterations
    if spec.optimizer is not None:
        opt.apply_config(spec.optimizer)
    short = [(partition, n)] if n < spec.batch_size else []
    per_epoch = -(-n // spec.batch_size)
    steps = steps_in_round(spec.frequency, n, spec.batch_size)
    if spec.aggregate == "gradients":
        loss_sum, grad_sum = _gradient_pass(model, xs, y, spec, partition, steps, per_epoch)
        vector = grad_sum
    else:
        loss_sum = _local_steps(model, xs, y, spec, partition, steps, per_epoch)
        vector = model.get_flat_weights()
    metric_states = [m.state.copy() for m in model.metrics]
    seen = sum(min(b * spec.batch_size, n) - a * spec.batch_size
               for _, a, b in _pass_slices(spec, partition, steps, per_epoch))
    return RoundResult(
        samples=seen, steps=steps, loss_sum=loss_sum, vector=vector,
        state=model.flat_state.copy() if model.flat_state.size else None,
        slots={k: v.copy() for k, v in opt.slots.items()} if spec.aggregate == "weights" else {},
        metric_states=metric_states, compute_seconds=time.perf_counter() - start, partitions=1,
        short_partitions=short)


def _pass_slices(spec, partition, steps, per_epoch):
    """``(seed_key, start, stop)`` slices of this partition's endless sequence of passes that
    make up the round's ``steps`` steps (a tau can cross pass boundaries)."""
    if spec.frequency == "epoch":
        return [((spec.seed, spec.round, partition), 0, per_epoch)]
    first = spec.round * steps
    out = []
    step = first
    while step < first + steps:
        epoch, offset = divmod(step, per_epoch)
        take = min(per_epoch - offset, first + steps - step)
        out.append(((spec.seed, epoch, partition), offset, offset + take))
        step += take
    return out


def _local_steps(model, xs, y, spec, partition, steps, per_epoch) -> float:
    """τ optimizer steps on the partition; returns the summed loss over seen examples."""
    total = 0.0
    states = None
    for key, a, b in _pass_slices(spec, partition, steps, per_epoch):
        total += model.train_epoch(xs, y, spec.batch_size, key, start=a, stop=b)
        # train_epoch resets metrics per call; keep a running sum across slices.
        part = [m.state.copy() for m in model.metrics]
        states = part if states is None else [s + p for s, p in zip(states, part)]
    if states is not None:
        for m, s in zip(model.metrics, states):
            m.state = s
    return total


def _gradient_pass(model, xs, y, spec, partition, steps, per_epoch):
    """Sum of per-batch gradients (each weighted by its batch's size) at fixed weights."""
    grad_sum = np.zeros(model.flat_weights.size, dtype=np.float32)
    total = 0.0
    for m in model.metrics:
        m.reset()
    for key, a, b in _pass_slices(spec, partition, steps, per_epoch):
        for xb, yb in _batches_of(model, xs, y, spec.batch_size, key, a, b):
            loss, out = model._loss_and_backward(xb, yb)
            grad_sum += model._params.grads * np.float32(len(yb))
            total += loss * len(yb)
            for m in model.metrics:
                m.update(yb, out)
    return total, grad_sum


def _batches_of(model, xs, y, batch_size, seed_key, start, stop):
    """The batches ``train_epoch`` would visit for the same arguments, without training."""
    n = len(y)
    order_seq, layer_seq = np.random.SeedSequence(seed_key).spawn(2)
    model.reseed(layer_seq)
    order = np.random.default_rng(order_seq).permutation(n)
    for i in range(start, stop):
        rows = order[i * batch_size:min((i + 1) * batch_size, n)]
        yield [a[rows] for a in xs], y[rows]
