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
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from sparkdl.distributed.feeds import InStep, PullsAhead
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
    mode: str = "sync"         # the strategy's name ("easgd" and "adag" change what is pushed)
    alpha: float = 0.0         # easgd: the moving rate of the elastic exchange
    compression: str | None = None   # the parameter server's codec (async modes)
    overlap: bool = False      # async modes but easgd: pull ahead and push in the background


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
    # per partition, the worker's state ``(meta, vector)`` after the round (``worker_state``):
    # what the driver keeps for the next round where tasks do not keep it themselves
    worker_states: dict = field(default_factory=dict)


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
    worker_states = {**a.worker_states, **b.worker_states}
    if a.diverged or b.diverged:
        return RoundResult(samples=a.samples + b.samples, steps=max(a.steps, b.steps),
                           loss_sum=a.loss_sum + b.loss_sum, partitions=a.partitions + b.partitions,
                           diverged=a.diverged + b.diverged,
                           empty_partitions=a.empty_partitions + b.empty_partitions,
                           short_partitions=a.short_partitions + b.short_partitions)
    if a.samples == 0 and a.vector is None:      # a new result: neither argument changes
        return replace(b, empty_partitions=a.empty_partitions + b.empty_partitions,
                       short_partitions=a.short_partitions + b.short_partitions,
                       partitions=a.partitions + b.partitions, worker_states=worker_states)
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
        worker_states=worker_states,
    )


def steps_in_round(frequency, rows: int, batch_size: int) -> int:
    if frequency == "epoch":
        return -(-rows // batch_size)
    if frequency == "batch":
        return 1
    return int(frequency)


def round_samples(spec: RoundSpec, rows: int) -> int:
    """Examples a partition of ``rows`` rows trains in a sync round (its result's weight; the
    driver's exchange expects exactly this many in the partition's push)."""
    per_epoch = -(-rows // spec.batch_size)
    steps = steps_in_round(spec.frequency, rows, spec.batch_size)
    return sum(_rows(rows, spec.batch_size, a, b) for _, a, b in _pass_slices(spec, 0, steps, per_epoch))


def run_round(model, xs: list[np.ndarray], y: np.ndarray, spec: RoundSpec, partition: int,
              weights: np.ndarray | None, state: np.ndarray | None, slots: dict,
              iterations: int, views: bool = False, gradients: np.ndarray | None = None,
              on_ready: Callable[[int, int], None] | None = None) -> RoundResult:
    """Train ``model`` on one partition's block for one round and return its result.

    With ``views`` the result's weights and slots are the model's live arrays, for a caller
    that sends them on before the model trains again (a one-job fit's task packs its push).
    Aggregate "gradients": the sum goes into ``gradients`` (a new vector if None), and
    ``on_ready(start, stop)`` is told as each range of it is final, during the last batch's
    backward, for a caller that sends it while backward goes on (``_gradient_sum``).

    ``model`` is the worker's copy (compiled); its weights, moving statistics and optimizer
    state are overwritten from the driver's before anything runs. With ``weights=None`` the
    worker trains from its own weights, statistics, slots and iterations (EASGD).
    """
    n = len(y)
    if n == 0:
        return RoundResult(partitions=1, empty_partitions=[partition])
    start = time.perf_counter()
    if weights is not None:
        model.set_flat_weights(weights)
        if state is not None and state.size:
            model.flat_state[...] = state
    opt = model.optimizer
    # The driver's config first: a change of hyperparameters may add a slot the driver sends.
    if spec.optimizer is not None:
        opt.apply_config(spec.optimizer)
    opt.build(model.flat_weights.size)
    if weights is not None:
        for k, v in slots.items():
            opt.slots[k][...] = v
        opt.iterations = iterations
    short = [(partition, n)] if n < spec.batch_size else []
    per_epoch = -(-n // spec.batch_size)
    steps = steps_in_round(spec.frequency, n, spec.batch_size)
    slices = _pass_slices(spec, partition, steps, per_epoch)
    seen = round_samples(spec, n)
    try:
        if spec.aggregate == "gradients":
            grad_sum = np.zeros(model.flat_weights.size, dtype=np.float32) if gradients is None else gradients
            grad_sum[...] = 0.0
            loss_sum = _gradient_sum(model, xs, y, spec.batch_size, slices, grad_sum, on_ready)
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


def run_elastic_round(model, xs: list[np.ndarray], y: np.ndarray, spec: RoundSpec,
                      partition: int) -> RoundResult:
    """Synchronous EASGD, a worker's part of one round: ``frequency`` local steps from its own
    weights (already in ``model``). The result carries the worker's state after the steps and
    before the exchange (``worker_states``); the caller and the driver apply the exchange
    (``elastic_exchange``) to it, so both hold the same bits."""
    result = run_round(model, xs, y, spec, partition, None, None, {}, 0)
    if result.diverged or not result.samples:
        return result
    result.vector, result.state, result.slots = None, None, {}
    result.worker_states = {partition: worker_state(model, with_weights=True)}
    return result


def elastic_exchange(local: np.ndarray, center: np.ndarray, alpha: float,
                     out: np.ndarray | None = None) -> np.ndarray:
    """EASGD's exchange seen from a worker: returns the elastic difference
    ``e = alpha * (local - center)`` and moves ``local`` to ``local - e`` in place (the center
    then adds ``e``). Element-wise float32 arithmetic: a worker and the driver that apply it
    to the same vectors get the same bits."""
    e = np.subtract(local, center, out=out)
    e *= np.float32(alpha)
    local -= e
    return e


def exchanged(state: tuple[dict, np.ndarray], center: np.ndarray, alpha: float,
              out: np.ndarray | None = None) -> tuple[tuple[dict, np.ndarray], np.ndarray]:
    """A worker state ``(meta, vector)`` reported before the elastic exchange (weights and
    moving statistics first, as ``worker_state`` lays them out), after it against ``center``
    (a new vector), and the elastic difference. The task, the driver and a retried task's
    hand-out all go through here, so they hold the same bits."""
    meta, vector = state
    vector = vector.copy()
    e = elastic_exchange(vector[:center.size], center, alpha, out=out)
    return (meta, vector), e


def elastic_center(center: np.ndarray, states: dict, alpha: float) -> tuple[np.ndarray, dict]:
    """Synchronous EASGD on the driver: ``center + sum_i alpha (x_i - center)`` over the
    workers' reported states ``{partition: (meta, vector)}``, added in partition order;
    returns it with each worker's state after the exchange."""
    new_center = center.copy()
    after = {}
    e = np.empty(center.size, np.float32)
    for partition in sorted(states):
        after[partition], _ = exchanged(states[partition], center, alpha, out=e)
        new_center += e
    return new_center, after


# ---- a worker's own state (the async modes and EASGD) -------------------------------------------
def model_vector(model) -> np.ndarray:
    """The model's weights and moving statistics as one new vector (what the parameter server
    holds, EASGD's center, what validation evaluates)."""
    return np.concatenate([model.flat_weights, model.flat_state])


def set_model_vector(model, vector: np.ndarray) -> None:
    """Give ``model`` the weights and moving statistics of a ``model_vector`` (its first
    ``flat_weights.size + flat_state.size`` values)."""
    w, s = model.flat_weights.size, model.flat_state.size
    model.set_flat_weights(vector[:w])
    if s:
        model.flat_state[...] = vector[w:w + s]



def worker_state(model, with_weights: bool = False,
                 residual: np.ndarray | None = None, with_slots: bool = True) -> tuple[dict, np.ndarray]:
    """``(meta, float32 vector)``: what a worker carries from one round or epoch to the next,
    kept by the driver per partition. The vector holds the weights and moving statistics
    (``with_weights``, EASGD), then the optimizer's slots (unless not ``with_slots``: in
    gradients mode the server steps the optimizer and the worker's slots never change), then
    what compressed pushes have not delivered yet (``residual``, see
    ``sparkdl.distributed.compression``); meta names the slots and holds the optimizer's
    iterations and the residual's size."""
    opt = model.optimizer
    names = sorted(opt.slots) if with_slots else []
    parts = ([model.flat_weights, model.flat_state] if with_weights else []) + [opt.slots[k] for k in names]
    if residual is not None:
        parts.append(residual)
    vector = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
    meta = {"slots": names, "iterations": int(opt.iterations), "weights": bool(with_weights)}
    if residual is not None:
        meta["residual"] = int(residual.size)
    return meta, vector


def set_worker_state(model, meta: dict, vector: np.ndarray | None) -> np.ndarray | None:
    """Give ``model`` the state ``worker_state`` took (weights only if it holds them); returns
    a copy of the state's residual of compressed pushes, or None if it holds none."""
    opt = model.optimizer
    w, s = model.flat_weights.size, model.flat_state.size
    start = 0
    if meta.get("weights"):
        assert vector is not None and vector.size >= w + s, "a state with weights carries them"
        set_model_vector(model, vector)
        start = w + s
    opt.reset_slots()
    if meta["slots"]:
        assert vector is not None, "slots travel with their vector"
        opt.build(w)
        for i, name in enumerate(meta["slots"]):
            opt.slots[name][...] = vector[start + i * w:start + (i + 1) * w]
    opt.iterations = int(meta["iterations"])
    size = int(meta.get("residual", 0))
    if not size:
        return None
    assert vector is not None, "a residual travels with its vector"
    start += len(meta["slots"]) * w
    return vector[start:start + size].copy()


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


def _gradient_sum(model, xs, y, batch_size, slices, out, on_ready=None) -> float:
    """Adds into ``out`` the per-batch gradients at fixed weights (each weighted by its batch's
    size) over the slices; returns the summed loss. Metrics restart and cover the slices.
    ``on_ready(start, stop)``: called during the last batch's backward as soon as
    ``out[start:stop]`` is final (see ``Model.loss_and_backward``); the sums are the same bits."""
    total = 0.0
    for m in model.metrics:
        m.reset()
    left = sum(len(BatchPlan(len(y), batch_size, key, a, b)) for key, a, b in slices)
    for key, a, b in slices:
        for _, xb, yb in BatchPlan(len(y), batch_size, key, a, b).iterate(model, xs, y):
            left -= 1
            if on_ready is not None and not left:
                loss, output = model.loss_and_backward(
                    xb, yb, on_ready=_adding(model, out, np.float32(len(yb)), on_ready))
            else:
                loss, output = model.loss_and_backward(xb, yb)
                out += model.flat_gradients * np.float32(len(yb))
            total += loss * len(yb)
            for m in model.metrics:
                m.update(yb, output)
    return total


def _adding(model, out: np.ndarray, weight: np.float32, on_ready: Callable[[int, int], None]):
    """A backward hook that adds a final range of the batch's gradients into ``out`` (as
    ``out += gradients * weight`` does, range by range) and then tells ``on_ready``."""
    def add(start: int, stop: int) -> None:
        out[start:stop] += model.flat_gradients[start:stop] * weight
        on_ready(start, stop)
    return add


def run_async_epoch(model, xs: list[np.ndarray], y: np.ndarray, spec: RoundSpec, partition: int,
                    client) -> RoundResult:
    """One pass over a partition against a parameter server, ``frequency`` steps per push.
    ``client`` has ``start() / pull(clock) / push(sequence, samples, update) / done()``.
    Batches and dropout draw from ``(seed, epoch, partition)`` as in sync mode.

    - async, hogwild, ssp: pull the weights, train (or sum the gradients of) the steps, push
      the change (or the gradient sum).
    - adag: as async, with the weight change divided by the number of steps it holds.
    - easgd (async): train the steps from the worker's own weights, then pull the center and
      push the elastic difference ``alpha (x - center)``, which the worker also subtracts.

    With ``spec.overlap`` (not easgd) the client also needs ``pull_request / pull_wait /
    push_request / added``: see ``sparkdl.distributed.feeds.PullsAhead``.
    """
    n = len(y)
    if n == 0:
        return RoundResult(partitions=1, empty_partitions=[partition])
    opt = model.optimizer
    w, s = model.flat_weights.size, model.flat_state.size
    if spec.optimizer is not None:
        opt.apply_config(spec.optimizer)
    opt.build(w)
    elastic = spec.mode == "easgd"
    per_epoch = -(-n // spec.batch_size)
    tau = per_epoch if spec.frequency == "epoch" else 1 if spec.frequency == "batch" else int(spec.frequency)
    key = (spec.seed, spec.round, partition)
    feed = PullsAhead(client, w + s) if spec.overlap and not elastic else InStep(client, w + s)
    loss_sum, seen, compute, states = 0.0, 0, 0.0, None
    client.start()
    for sequence, a in enumerate(range(0, per_epoch, tau)):
        b = min(a + tau, per_epoch)
        update = feed.buffer(sequence)
        if not elastic:
            pulled = feed.weights(sequence, last=b == per_epoch)
        start = time.perf_counter()
        if not elastic:
            set_model_vector(model, pulled)
        rows = _rows(n, spec.batch_size, a, b)
        seen += rows
        try:
            if spec.aggregate == "gradients":
                update[:w] = 0.0
                loss_sum += _gradient_sum(model, xs, y, spec.batch_size, [(key, a, b)], update[:w])
            else:
                loss_sum += model.train_epoch(xs, y, spec.batch_size, key, start=a, stop=b)
            if elastic:
                compute += time.perf_counter() - start
                pulled = client.pull(sequence)
                start = time.perf_counter()
                elastic_exchange(model.flat_weights, pulled[:w], spec.alpha, out=update[:w])
                if s:
                    elastic_exchange(model.flat_state, pulled[w:], spec.alpha, out=update[w:])
            else:
                if spec.aggregate == "weights":
                    np.subtract(model.flat_weights, pulled[:w], out=update[:w])
                    if spec.mode == "adag":     # the accumulated change, normalized by its steps
                        update[:w] /= np.float32(b - a)
                if s:
                    np.subtract(model.flat_state, pulled[w:], out=update[w:])
            what = non_finite(loss_sum, {"gradients" if spec.aggregate == "gradients" else "update": update})
        except TrainingDivergedError as error:
            loss_sum, what = float("nan"), str(error)
        compute += time.perf_counter() - start
        if what is not None:        # nothing non-finite reaches the server
            client.done()
            return diverged_push(partition, what, sequence, seen, per_epoch, loss_sum, compute)
        part = [m.state.copy() for m in model.metrics]
        states = part if states is None else [x + p for x, p in zip(states, part)]
        feed.push(sequence, rows, update)
    client.done()
    return epoch_result(partition, n, spec.batch_size, seen, per_epoch, loss_sum, states, compute)


def diverged_push(partition: int, what: str, sequence: int, seen: int, steps: int, loss_sum: float,
                  compute: float) -> RoundResult:
    """An epoch against a server that ended at push ``sequence``, whose ``what`` became
    non-finite (nothing of it was pushed)."""
    return RoundResult(samples=seen, steps=steps, loss_sum=loss_sum, partitions=1,
                       diverged=[(partition, f"{what} (push {sequence + 1})")], compute_seconds=compute)


def epoch_result(partition: int, rows: int, batch_size: int, seen: int, steps: int, loss_sum: float,
                 states: list | None, compute: float) -> RoundResult:
    """A partition's completed epoch against a server: counts, loss and metric states."""
    return RoundResult(samples=seen, steps=steps, loss_sum=loss_sum, metric_states=states or [],
                       compute_seconds=compute, partitions=1,
                       short_partitions=[(partition, rows)] if rows < batch_size else [])
