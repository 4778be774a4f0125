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
from dataclasses import dataclass, field, replace

import numpy as np

from sparkdl.engine.training import BatchPlan
from sparkdl.errors import TrainingDivergedError


@dataclass
class RoundSpec:
    """What every partition needs to know about the round (the same for all of them)."""
    round: int
    seed: int
    batch_size: int
    frequency: str | int       # "epoch", "batch" or an int tau
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
    diverged: list = field(default_factory=list)   # (partition, what became non-finite)


def non_finite(loss_sum: float, arrays: dict) -> str | None:
    """What became NaN or infinite, or None when nothing did. A float64 sum is finite exactly
    when every float32 value in it is (no float32 values can overflow it)."""
    if not np.isfinite(loss_sum):
        return f"the loss became {loss_sum}"
    for name, a in arrays.items():
        if a is not None and a.size and not np.isfinite(np.sum(a, dtype=np.float64)):
            bad = int(np.count_nonzero(~np.isfinite(a)))
            return f"{bad} of the {a.size} values of the {name} became NaN or infinite"
    return None


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
    if a.diverged or b.diverged:
        return RoundResult(samples=a.samples + b.samples, steps=max(a.steps, b.steps),
                           loss_sum=a.loss_sum + b.loss_sum, partitions=a.partitions + b.partitions,
                           diverged=a.diverged + b.diverged,
                           empty_partitions=a.empty_partitions + b.empty_partitions,
                           short_partitions=a.short_partitions + b.short_partitions)
    if a.samples == 0 and a.vector is None:      # a new result: neither argument changes
        return replace(b, empty_partitions=a.empty_partitions + b.empty_partitions,
                       short_partitions=a.short_partitions + b.short_partitions,
                       partitions=a.partitions + b.partitions)
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
              iterations: int, views: bool = False) -> RoundResult:
    """Train ``model`` on one partition's block for one round and return its result.

    With ``views`` the result's weights and slots are the model's live arrays, for a caller
    that sends them on before the model trains again (a one-job fit's task packs its push).

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
    # The driver's config first: a change of hyperparameters may add a slot the driver sends.
    if spec.optimizer is not None:
        opt.apply_config(spec.optimizer)
    opt.build(weights.size)
    for k, v in slots.items():
        opt.slots[k][...] = v
    opt.iterations = iterations
    short = [(partition, n)] if n < spec.batch_size else []
    per_epoch = -(-n // spec.batch_size)
    steps = steps_in_round(spec.frequency, n, spec.batch_size)
    slices = _pass_slices(spec, partition, steps, per_epoch)
    seen = sum(_rows(n, spec.batch_size, a, b) for _, a, b in slices)
    try:
        if spec.aggregate == "gradients":
            grad_sum = np.zeros(model.flat_weights.size, dtype=np.float32)
            loss_sum = _gradient_sum(model, xs, y, spec.batch_size, slices, grad_sum)
            vector = grad_sum
        else:
            loss_sum = _local_steps(model, xs, y, spec.batch_size, slices)
            vector = model.flat_weights if views else model.get_flat_weights()
        what = non_finite(loss_sum, {"gradients" if spec.aggregate == "gradients" else "weights": vector,
                                     "moving statistics": model.flat_state})
    except TrainingDivergedError as error:
        loss_sum, what = float("nan"), str(error)
    if what is not None:
        return RoundResult(samples=seen, steps=steps, loss_sum=loss_sum, partitions=1,
                           diverged=[(partition, what)], short_partitions=short,
                           compute_seconds=time.perf_counter() - start)
    metric_states = [m.state.copy() for m in model.metrics]
    return RoundResult(
        samples=seen, steps=steps, loss_sum=loss_sum, vector=vector,
        state=(model.flat_state if views else model.flat_state.copy()) if model.flat_state.size else None,
        slots={k: v if views else v.copy() for k, v in opt.slots.items()} if spec.aggregate == "weights" else {},
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


def _rows(n: int, batch_size: int, start: int, stop: int) -> int:
    """Examples in batches ``[start, stop)`` of a pass over ``n`` rows."""
    return min(stop * batch_size, n) - start * batch_size


def _local_steps(model, xs, y, batch_size, slices) -> float:
    """Optimizer steps over the ``(seed_key, start, stop)`` slices; returns the summed loss
    over seen examples, and leaves the metrics holding all the slices' states."""
    total = 0.0
    states = None
    for key, a, b in slices:
        total += model.train_epoch(xs, y, batch_size, key, start=a, stop=b)
        # train_epoch resets metrics per call; keep a running sum across slices.
        part = [m.state.copy() for m in model.metrics]
        states = part if states is None else [s + p for s, p in zip(states, part)]
    if states is not None:
        for m, s in zip(model.metrics, states):
            m.state = s
    return total


def _gradient_sum(model, xs, y, batch_size, slices, out) -> float:
    """Adds into ``out`` the per-batch gradients at fixed weights (each weighted by its batch's
    size) over the slices; returns the summed loss. Metrics restart and cover the slices."""
    total = 0.0
    for m in model.metrics:
        m.reset()
    for key, a, b in slices:
        for _, xb, yb in BatchPlan(len(y), batch_size, key, a, b).iterate(model, xs, y):
            loss, output = model.loss_and_backward(xb, yb)
            out += model.flat_gradients * np.float32(len(yb))
            total += loss * len(yb)
            for m in model.metrics:
                m.update(yb, output)
    return total


def run_async_epoch(model, xs: list[np.ndarray], y: np.ndarray, spec: RoundSpec, partition: int,
                    client) -> RoundResult:
    """One pass over a partition against a parameter server: repeatedly pull the weights,
    train ``frequency`` steps (or sum their gradients) and push the change (or the gradient
    sum). ``client`` has ``start() / pull(clock) / push(sequence, samples, update) / done()``.
    Batches and dropout draw from ``(seed, epoch, partition)`` as in sync mode."""
    n = len(y)
    if n == 0:
        return RoundResult(partitions=1, empty_partitions=[partition])
    opt = model.optimizer
    w, s = model.flat_weights.size, model.flat_state.size
    if spec.optimizer is not None:
        opt.apply_config(spec.optimizer)
    opt.build(w)
    per_epoch = -(-n // spec.batch_size)
    tau = per_epoch if spec.frequency == "epoch" else 1 if spec.frequency == "batch" else int(spec.frequency)
    key = (spec.seed, spec.round, partition)
    update = np.empty(w + s, np.float32)
    loss_sum, seen, compute, states = 0.0, 0, 0.0, None
    client.start()
    for sequence, a in enumerate(range(0, per_epoch, tau)):
        b = min(a + tau, per_epoch)
        pulled = client.pull(sequence)
        start = time.perf_counter()
        model.set_flat_weights(pulled[:w])
        if s:
            model.flat_state[...] = pulled[w:]
        rows = _rows(n, spec.batch_size, a, b)
        seen += rows
        try:
            if spec.aggregate == "gradients":
                update[:w] = 0.0
                loss_sum += _gradient_sum(model, xs, y, spec.batch_size, [(key, a, b)], update[:w])
            else:
                loss_sum += model.train_epoch(xs, y, spec.batch_size, key, start=a, stop=b)
                np.subtract(model.flat_weights, pulled[:w], out=update[:w])
            if s:
                np.subtract(model.flat_state, pulled[w:], out=update[w:])
            what = non_finite(loss_sum, {"gradients" if spec.aggregate == "gradients" else "update": update})
        except TrainingDivergedError as error:
            loss_sum, what = float("nan"), str(error)
        compute += time.perf_counter() - start
        if what is not None:        # nothing non-finite reaches the server
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
