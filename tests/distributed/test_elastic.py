"""EASGD and ADAG without Spark: their update rules against a few lines of NumPy written from
the papers, on a linear model trained with full-batch plain SGD (so each step is
``w - lr * 2/n X^T (Xw + b - y)``, whatever order the rows come in).

- EASGD (Zhang, Choromanska and LeCun 2015), every tau local steps:
  ``x_i <- x_i - alpha (x_i - center)``; sync: ``center <- center + alpha sum_i (x_i - center)``
  with every worker against the same center; async: ``center <- center + alpha (x_i - center)``
  one worker at a time.
- ADAG (Hermans et al. 2017): a worker pulls the center, takes tau steps and pushes
  ``(x - pulled) / tau``; the server adds it.
"""
from __future__ import annotations

import numpy as np
import pytest

from sparkdl import layers, optimizers
from sparkdl.distributed import worker
from sparkdl.distributed.parameter_server import ParameterServer
from sparkdl.distributed.protocol import Frame, Op
from sparkdl.distributed.strategies import get_strategy
from sparkdl.distributed.worker import RoundSpec
from sparkdl.models import Sequential

f32 = np.float32
LR = 0.05


def linear(weights=None):
    """``Dense(1)`` on 3 inputs with mse and plain SGD; flat weights are ``[w (3), b (1)]``."""
    model = Sequential([layers.Dense(1, input_shape=(3,))])
    model.compile(optimizers.SGD(LR), "mse")
    if weights is not None:
        model.set_flat_weights(np.asarray(weights, f32))
    return model


def data(seed, n=8):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(f32)
    return x, (x @ np.array([[1.0], [-2.0], [0.5]], f32) + 0.3).astype(f32)


def sgd_steps(vector, x, y, steps):
    """Full-batch SGD on the mean squared error, in float64."""
    w, b = vector[:3].astype(np.float64).reshape(3, 1), float(vector[3])
    for _ in range(steps):
        r = x @ w + b - y
        w = w - LR * 2.0 / len(y) * (x.T @ r)
        b = b - LR * 2.0 / len(y) * r.sum()
    return np.concatenate([w.ravel(), [b]])


def spec(mode, frequency, alpha=0.0, round_index=0, batch_size=8):
    return RoundSpec(round=round_index, seed=3, batch_size=batch_size, frequency=frequency,
                     aggregate="weights", mode=mode, alpha=alpha)


# ---- EASGD ----------------------------------------------------------------------------------------
def test_the_elastic_exchange_is_the_papers_rule_and_worker_and_driver_get_the_same_bits():
    rng = np.random.default_rng(0)
    center = rng.normal(size=50).astype(f32)
    workers = {p: rng.normal(size=50).astype(f32) for p in (0, 1, 2)}
    alpha = 0.3
    states = {p: ({"slots": [], "iterations": 4, "weights": True}, x) for p, x in workers.items()}
    new_center, after = worker.elastic_center(center, states, alpha)

    expected_center = center + alpha * sum(x - center for x in workers.values())
    np.testing.assert_allclose(new_center, expected_center, rtol=1e-5, atol=1e-6)
    for p, x in workers.items():
        np.testing.assert_allclose(after[p][1], x - alpha * (x - center), rtol=1e-6, atol=1e-7)
        mine = x.copy()                       # what the worker itself computes
        e = worker.elastic_exchange(mine, center, alpha)
        np.testing.assert_array_equal(mine, after[p][1])
        np.testing.assert_allclose(e, alpha * (x - center), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(states[0][1], workers[0])      # the reports are left alone


def test_a_sync_easgd_round_trains_each_workers_own_weights_then_exchanges():
    """Two workers with weights of their own, one center; tau = 3 local steps each, then the
    exchange, as the NumPy of the paper's synchronous EASGD does it."""
    center = np.array([0.1, 0.2, -0.1, 0.0], f32)
    own = {0: np.array([0.5, -0.3, 0.2, 0.1], f32), 1: np.array([-0.4, 0.6, 0.0, -0.2], f32)}
    alpha = 0.4
    states = {}
    for p in (0, 1):
        model = linear(own[p])
        x, y = data(p)
        result = worker.run_elastic_round(model, [x], y, spec("easgd", 3, alpha), p)
        assert (result.samples, result.steps) == (24, 3) and result.vector is None
        states.update(result.worker_states)
        trained = sgd_steps(own[p], x, y, 3)
        np.testing.assert_allclose(states[p][1], trained, rtol=1e-5, atol=1e-6)
        assert states[p][0] == {"slots": [], "iterations": 3, "weights": True}
    new_center, after = worker.elastic_center(center, states, alpha)
    trained = {p: sgd_steps(own[p], *data(p), 3) for p in (0, 1)}
    np.testing.assert_allclose(new_center, center + alpha * sum(t - center for t in trained.values()),
                               rtol=1e-5, atol=1e-6)
    for p in (0, 1):
        np.testing.assert_allclose(after[p][1], trained[p] - alpha * (trained[p] - center),
                                   rtol=1e-5, atol=1e-6)


class Center:
    """A parameter server in one process: serves its vector, adds each push."""

    def __init__(self, vector):
        self.vector = np.array(vector, f32)
        self.pushes = []

    def start(self):
        pass

    def done(self):
        pass

    def pull(self, clock):
        return self.vector.copy()

    def push(self, sequence, samples, update):
        self.pushes.append(update.copy())
        self.vector += update
        return True


def test_an_async_easgd_worker_trains_its_own_weights_and_pushes_the_elastic_difference():
    """Each epoch (one full-batch step here) the worker steps from its own weights, pulls the
    center, pushes ``alpha (x - center)`` and moves by as much the other way."""
    center = Center([0.1, 0.2, -0.1, 0.0])
    x, y = data(0)
    own = np.array([0.5, -0.3, 0.2, 0.1], f32)
    model = linear(own)
    alpha = 0.25
    mine, c = own.astype(np.float64), center.vector.astype(np.float64)
    for epoch in range(3):
        result = worker.run_async_epoch(model, [x], y, spec("easgd", "epoch", alpha, epoch), 0, center)
        assert result.samples == 8
        mine = sgd_steps(mine, x, y, 1)
        e = alpha * (mine - c)
        mine, c = mine - e, c + e
        np.testing.assert_allclose(center.pushes[-1], e, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.get_flat_weights(), mine, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(center.vector, c, rtol=1e-5, atol=1e-6)
    assert len(center.pushes) == 3


# ---- ADAG -----------------------------------------------------------------------------------------
def test_an_adag_push_is_the_change_of_its_steps_divided_by_their_number():
    """tau = 3 steps of 2 rows over a pass of 8 rows (4 steps): pushes of 3 steps then 1 step,
    each the change from the weights pulled, divided by its steps; the server adds them."""
    center = Center([0.1, 0.2, -0.1, 0.0])
    x, y = data(1)
    model = linear()
    the_spec = spec("adag", 3, batch_size=2)
    worker.run_async_epoch(model, [x], y, the_spec, 0, center)
    assert len(center.pushes) == 2

    # The same steps on a local copy: train_epoch's batches [0, 3) then [3, 4) of the pass.
    local = linear()
    start = np.array([0.1, 0.2, -0.1, 0.0], f32)
    expected_center = start.astype(np.float64)
    for push, (a, b) in zip(center.pushes, [(0, 3), (3, 4)]):
        local.set_flat_weights(expected_center.astype(f32))
        local.train_epoch([x], y, 2, (3, 0, 0), start=a, stop=b)
        change = (local.get_flat_weights() - expected_center.astype(f32)) / (b - a)
        np.testing.assert_allclose(push, change, rtol=1e-5, atol=1e-7)
        expected_center = expected_center + change
    np.testing.assert_allclose(center.vector, expected_center, rtol=1e-5, atol=1e-6)


def test_adag_with_one_step_per_push_is_async():
    """tau = 1: the change of one step divided by 1, the same pushes as mode async."""
    x, y = data(2)
    pushes = {}
    for mode in ("async", "adag"):
        center = Center([0.1, 0.2, -0.1, 0.0])
        worker.run_async_epoch(linear(), [x], y, spec(mode, "batch", batch_size=2), 0, center)
        pushes[mode] = center.pushes
    assert len(pushes["adag"]) == 4
    for a, b in zip(pushes["async"], pushes["adag"]):
        np.testing.assert_array_equal(a, b)


def test_the_adag_server_divides_only_moving_statistics_among_the_workers():
    ps = ParameterServer(np.zeros(4, f32), mode="adag", weights_size=3, workers=2, rows={0: 8})
    ps.begin_epoch(0)
    update = np.array([0.3, -0.6, 0.9, 4.0], f32)
    reply = ps.handle(Frame(Op.PUSH, {"epoch": 0, "partition": 0, "attempt": 0, "sequence": 0, "samples": 8},
                            update))
    assert reply.meta["applied"]
    np.testing.assert_array_equal(ps.snapshot(), np.array([0.3, -0.6, 0.9, 2.0], f32))


def test_the_async_easgd_server_adds_elastic_differences_as_they_are():
    ps = ParameterServer(np.ones(3, f32), mode="easgd", rows={1: 4})
    ps.begin_epoch(0)
    ps.handle(Frame(Op.PUSH, {"epoch": 0, "partition": 1, "attempt": 0, "sequence": 0, "samples": 4},
                    np.array([0.5, -0.25, 0.0], f32)))
    np.testing.assert_array_equal(ps.snapshot(), np.array([1.5, 0.75, 1.0], f32))


# ---- options --------------------------------------------------------------------------------------
def test_easgd_and_adag_options_are_checked_before_anything_runs():
    from sparkdl.spark import SparkModel
    strategy = get_strategy("easgd")
    assert (strategy.rho, strategy.variant, strategy.asynchronous, strategy.elastic) == (None, "sync", False, True)
    assert strategy.alpha(0.05, 2) == pytest.approx(0.45)           # the paper's beta = 0.9
    assert get_strategy("easgd", rho=4.0).alpha(0.05, 2) == pytest.approx(0.2)   # lr * rho
    assert get_strategy("easgd", variant="async").asynchronous
    assert get_strategy("adag").asynchronous and not get_strategy("adag").elastic
    with pytest.raises(ValueError, match="rho > 0"):
        get_strategy("easgd", rho=0)
    with pytest.raises(ValueError, match="variant"):
        get_strategy("easgd", variant="hogwild")
    with pytest.raises(TypeError, match=r"takes only rho=..., variant=..., received unknown \['tau'\]"):
        get_strategy("easgd", tau=3)
    with pytest.raises(TypeError, match=r"'adag' takes no options, received unknown \['rho'\]"):
        get_strategy("adag", rho=3)
    model = linear()
    with pytest.raises(ValueError, match=r"0 < alpha < 1.*learning_rate=0.05 and rho=40"):
        SparkModel(model, mode="easgd", rho=40)
    for mode in ("easgd", "adag"):
        with pytest.raises(ValueError, match="aggregate='gradients'"):
            SparkModel(model, mode=mode, aggregate="gradients")
