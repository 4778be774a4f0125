"""Optimizers (``sparkdl.engine.optimizers``) against hand-written closed forms, with
learning-rate schedules, plus config, state and argument-validation behaviour, and the same
steps against ``torch.optim`` (skipped without torch).

Optimizers run on float32 vectors; the expected values are computed here in float64 from the
Keras update rules, so comparisons allow float32 rounding (rtol 1e-6, atol 1e-7). Against torch
the values are O(1) and differ by a few float32 ulps: rtol 1e-5, atol 1e-6.
"""
from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

from sparkdl import optimizers
from tests.engine.layer_case import assert_close, to_torch

schedules = optimizers.schedules

P0 = np.array([1.0, -2.0, 0.5, 0.25, -0.75])
G1 = np.array([0.5, -1.0, 2.0, -0.125, 0.0])
G2 = np.array([-0.25, 0.75, 1.5, 0.5, 0.0])
RTOL, ATOL = 1e-6, 1e-7


def run(opt, *grads, p0=P0):
    """Apply ``grads`` in turn to a float32 copy of ``p0``; return the params after each step."""
    p = p0.astype(np.float32)
    out = []
    for g in grads:
        opt.apply(p, np.asarray(g, dtype=np.float32))
        assert p.dtype == np.float32
        out.append(p.astype(np.float64))
    return out


close = functools.partial(assert_close, rtol=RTOL, atol=ATOL)


# ---- update rules ----------------------------------------------------------------------------
def test_sgd_plain():
    p1, p2 = run(optimizers.SGD(learning_rate=0.1), G1, G2)
    close(p1, P0 - 0.1 * G1)
    close(p2, P0 - 0.1 * G1 - 0.1 * G2)
    close(p1, [0.95, -1.9, 0.3, 0.2625, -0.75])  # the same, written out


def test_sgd_momentum():
    lr, m = 0.1, 0.9
    p1, p2 = run(optimizers.SGD(learning_rate=lr, momentum=m), G1, G2)
    v1 = -lr * G1
    v2 = m * v1 - lr * G2
    close(p1, P0 + v1)
    close(p2, P0 + v1 + v2)


def test_sgd_nesterov():
    lr, m = 0.1, 0.9
    p1, p2 = run(optimizers.SGD(learning_rate=lr, momentum=m, nesterov=True), G1, G2)
    v1 = -lr * G1
    v2 = m * v1 - lr * G2
    close(p1, P0 + m * v1 - lr * G1)
    close(p2, P0 + m * v1 - lr * G1 + m * v2 - lr * G2)
    # Differs from plain momentum from the first step on.
    assert not np.allclose(p1, P0 + v1)


def test_adam():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    p1, p2 = run(optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps), G1, G2)
    m1, v1 = (1 - b1) * G1, (1 - b2) * G1 ** 2
    e1 = P0 - lr * math.sqrt(1 - b2) / (1 - b1) * m1 / (np.sqrt(v1) + eps)
    m2, v2 = b1 * m1 + (1 - b1) * G2, b2 * v1 + (1 - b2) * G2 ** 2
    e2 = e1 - lr * math.sqrt(1 - b2 ** 2) / (1 - b1 ** 2) * m2 / (np.sqrt(v2) + eps)
    close(p1, e1)
    close(p2, e2)
    # Adam's first step is lr * sign(g) (up to epsilon); a zero gradient leaves the entry alone.
    close(p1, P0 - lr * np.sign(G1), rtol=1e-5)
    assert p2[4] == P0[4]


def test_adam_epsilon_is_outside_the_square_root_and_scaled_keras_style():
    # A huge epsilon makes its placement visible: step = alpha * m / (sqrt(v) + eps).
    lr, b1, b2, eps = 1.0, 0.9, 0.999, 1.0
    g = np.array([0.5, -2.0])
    (p1,) = run(optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps), g,
                p0=np.zeros(2))
    alpha = lr * math.sqrt(1 - b2) / (1 - b1)
    close(p1, -alpha * (1 - b1) * g / (np.sqrt((1 - b2) * g ** 2) + eps))


def test_adagrad():
    lr, init, eps = 0.1, 0.1, 1e-7
    p1, p2 = run(optimizers.Adagrad(learning_rate=lr, initial_accumulator_value=init, epsilon=eps), G1, G2)
    a1 = init + G1 ** 2
    e1 = P0 - lr * G1 / (np.sqrt(a1) + eps)
    a2 = a1 + G2 ** 2
    close(p1, e1)
    close(p2, e1 - lr * G2 / (np.sqrt(a2) + eps))


def test_rmsprop_without_momentum():
    lr, rho, eps = 0.01, 0.9, 1e-7
    p1, p2 = run(optimizers.RMSprop(learning_rate=lr, rho=rho, epsilon=eps), G1, G2)
    s1 = (1 - rho) * G1 ** 2
    e1 = P0 - lr * G1 / (np.sqrt(s1) + eps)
    s2 = rho * s1 + (1 - rho) * G2 ** 2
    close(p1, e1)
    close(p2, e1 - lr * G2 / (np.sqrt(s2) + eps))


def test_rmsprop_with_momentum():
    lr, rho, mom, eps = 0.01, 0.8, 0.5, 1e-7
    p1, p2 = run(optimizers.RMSprop(learning_rate=lr, rho=rho, momentum=mom, epsilon=eps), G1, G2)
    s1 = (1 - rho) * G1 ** 2
    b1 = lr * G1 / (np.sqrt(s1) + eps)
    s2 = rho * s1 + (1 - rho) * G2 ** 2
    b2 = mom * b1 + lr * G2 / (np.sqrt(s2) + eps)
    close(p1, P0 - b1)
    close(p2, P0 - b1 - b2)


def _ftrl_reference(p, grads, lr, l1=0.0, l2=0.0, init=0.1, beta=0.0):
    n, z, out = np.full_like(p, init), np.zeros_like(p), []
    for g in grads:
        n_new = n + g * g
        z = z + g - (np.sqrt(n_new) - np.sqrt(n)) / lr * p
        n = n_new
        p = (np.clip(z, -l1, l1) - z) / (np.sqrt(n) / lr + 2 * l2 + beta / lr)
        out.append(p)
    return out


@pytest.mark.parametrize("l1,l2,beta", [(0.0, 0.0, 0.0), (0.0, 0.3, 0.0), (0.05, 0.0, 0.0),
                                        (0.05, 0.2, 0.5)])
def test_ftrl(l1, l2, beta):
    lr = 0.1
    got = run(optimizers.Ftrl(learning_rate=lr, l1=l1, l2=l2, beta=beta), G1, G2)
    for g, e in zip(got, _ftrl_reference(P0, [G1, G2], lr, l1, l2, beta=beta)):
        close(g, e, rtol=1e-5, atol=1e-6)  # (sqrt(n') - sqrt(n)) / lr cancels in float32


def test_ftrl_first_step_closed_form_and_l1_zeroing():
    lr, l1 = 0.5, 1.0
    p0 = np.array([0.0, 0.0, 0.0, 0.0])
    g = np.array([0.5, -0.9, 3.0, -2.0])
    (p1,) = run(optimizers.Ftrl(learning_rate=lr, l1=l1), g, p0=p0)
    # From p = 0 the linear term is just g; |g| <= l1 gives exactly 0, else
    # p = -(g - sign(g) * l1) / (sqrt(0.1 + g^2) / lr).
    assert p1[0] == 0.0 and p1[1] == 0.0
    close(p1[2:], [-(3.0 - 1.0) / (math.sqrt(9.1) / lr), -(-2.0 + 1.0) / (math.sqrt(4.1) / lr)])
    # Without l1 the same small gradients move the weights.
    (q1,) = run(optimizers.Ftrl(learning_rate=lr), g, p0=p0)
    assert np.all(q1 != 0)
    close(q1, -g / (np.sqrt(0.1 + g ** 2) / lr))


# ---- learning-rate schedules -----------------------------------------------------------------
def test_learning_rate_accepts_a_schedule_and_reads_the_current_value():
    opt = optimizers.SGD(learning_rate=schedules.StepDecay(0.1, step_size=2, gamma=0.5))
    assert opt.learning_rate == pytest.approx(0.1)
    p = np.zeros(3, dtype=np.float32)
    seen = []
    for _ in range(5):
        seen.append(opt.learning_rate)
        opt.apply(p, np.ones(3, dtype=np.float32))
    assert seen == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert opt.learning_rate == pytest.approx(0.025)
    assert opt.iterations == 5
    # Each step used the rate of the step count before it.
    close(p, np.full(3, -(0.1 + 0.1 + 0.05 + 0.05 + 0.025)))


def test_learning_rate_can_be_set_to_a_float_or_schedule_later():
    opt = optimizers.Adam()
    assert opt.learning_rate == pytest.approx(0.001)
    opt.learning_rate = 0.5
    assert opt.learning_rate == 0.5
    opt.learning_rate = schedules.ExponentialDecay(0.2, decay_steps=10, decay_rate=0.5)
    assert opt.learning_rate == pytest.approx(0.2)


# ---- config round trips ----------------------------------------------------------------------
def _configured_optimizers():
    return [
        optimizers.SGD(learning_rate=0.05, momentum=0.8, nesterov=True),
        optimizers.Adam(learning_rate=0.002, beta_1=0.8, beta_2=0.99, epsilon=1e-6),
        optimizers.Adagrad(learning_rate=0.03, initial_accumulator_value=0.2, epsilon=1e-5),
        optimizers.RMSprop(learning_rate=0.004, rho=0.8, momentum=0.3, epsilon=1e-6),
        optimizers.Ftrl(learning_rate=0.05, l1=0.01, l2=0.02, initial_accumulator_value=0.3, beta=0.1),
        optimizers.Adam(learning_rate=schedules.CosineDecay(0.0, 10, alpha=0.1, warmup_target=0.01,
                                                            warmup_steps=2)),
        optimizers.SGD(learning_rate=schedules.LinearWarmup(
            schedules.PiecewiseConstantDecay([2, 4], [0.1, 0.05, 0.01]), warmup_steps=2)),
        optimizers.RMSprop(learning_rate=0.004, momentum=0.5, decay=0.25),
        optimizers.Adam(learning_rate=0.002, decay=1e-2),
    ]


@pytest.mark.parametrize("opt", _configured_optimizers(), ids=lambda o: type(o).__name__)
def test_optimizer_config_round_trip(opt):
    config = json.loads(json.dumps(opt.get_config()))  # configs are saved as JSON
    clone = optimizers.get(config)
    assert type(clone) is type(opt)
    assert clone is not opt
    assert clone.get_config() == opt.get_config()
    # Same behaviour: identical updates over a few steps (schedules included).
    fresh = optimizers.get(opt.get_config())
    a = run(fresh, G1, G2, G1, G2)
    b = run(clone, G1, G2, G1, G2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[-1], P0)


@pytest.mark.parametrize("opt", _configured_optimizers(), ids=lambda o: type(o).__name__)
def test_apply_config_takes_hyperparameters_and_keeps_state(opt):
    """A worker's optimizer takes the driver's hyperparameters (possibly changed by a
    callback) and then steps exactly like the driver's, from its own slots."""
    default = type(opt)()
    run(default, G1, G2)                               # slots and iterations of its own
    iterations, slots = default.iterations, {k: v.copy() for k, v in default.slots.items()}
    default.apply_config(json.loads(json.dumps(opt.get_config())))
    assert default.get_config() == opt.get_config()
    assert default.iterations == iterations
    for k, v in slots.items():
        np.testing.assert_array_equal(default.slots[k], v)
    with pytest.raises(ValueError, match="expected a config of"):
        default.apply_config({"name": "not-" + default.name})


def test_partial_dict_config_uses_defaults():
    opt = optimizers.get({"name": "sgd", "momentum": 0.9})
    assert isinstance(opt, optimizers.SGD)
    assert opt.momentum == 0.9 and opt.learning_rate == pytest.approx(0.01)


def test_numpy_scalar_hyperparameters_are_accepted():
    opt = optimizers.SGD(learning_rate=np.float32(0.25), momentum=np.float64(0.5))
    assert opt.learning_rate == 0.25 and opt.momentum == 0.5
    assert type(opt.learning_rate) is float
    json.dumps(opt.get_config())


# ---- state round trip ------------------------------------------------------------------------
@pytest.mark.parametrize("opt_fn", [lambda o=o: optimizers.get(o.get_config())
                                    for o in _configured_optimizers()],
                         ids=[type(o).__name__ for o in _configured_optimizers()])
def test_state_round_trip_resumes_identically(opt_fn):
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(5, P0.size)).astype(np.float32)
    first = opt_fn()
    p = P0.astype(np.float32)
    for g in grads[:3]:
        first.apply(p, g)
    state = first.get_state()
    saved_state = {k: np.array(v, copy=True) for k, v in state.items()}
    p_mid = p.copy()
    for g in grads[3:]:
        first.apply(p, g)
    # The snapshot does not change when the optimizer keeps training.
    for k in saved_state:
        np.testing.assert_array_equal(state[k], saved_state[k], err_msg=k)
    assert int(state["iterations"]) == 3

    resumed = opt_fn()
    resumed.set_state(state)
    assert resumed.iterations == 3
    q = p_mid.copy()
    for g in grads[3:]:
        resumed.apply(q, g)
    np.testing.assert_array_equal(q, p)
    assert resumed.iterations == first.iterations == 5


def test_state_holds_the_slots_by_name():
    opt = optimizers.Adam()
    run(opt, G1)
    state = opt.get_state()
    assert set(state) == {"slot/m", "slot/v", "iterations"}
    close(state["slot/m"], 0.1 * G1)
    close(state["slot/v"], 0.001 * G1 ** 2)


# ---- names and validation --------------------------------------------------------------------
KERAS_DEFAULTS = {
    "sgd": (optimizers.SGD, {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False}),
    "adam": (optimizers.Adam, {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}),
    "adagrad": (optimizers.Adagrad, {"learning_rate": 0.001, "initial_accumulator_value": 0.1,
                                     "epsilon": 1e-7}),
    "rmsprop": (optimizers.RMSprop, {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0,
                                     "epsilon": 1e-7}),
    "ftrl": (optimizers.Ftrl, {"learning_rate": 0.001, "l1": 0.0, "l2": 0.0,
                               "initial_accumulator_value": 0.1, "beta": 0.0}),
}


@pytest.mark.parametrize("name", sorted(KERAS_DEFAULTS))
def test_string_names_resolve_with_keras_defaults(name):
    cls, defaults = KERAS_DEFAULTS[name]
    opt = optimizers.get(name)
    assert type(opt) is cls
    config = opt.get_config()
    assert config["name"] == name
    for k, v in defaults.items():
        assert config[k] == pytest.approx(v), k
    assert type(optimizers.get(name.upper())) is cls


def test_get_passes_an_instance_through():
    opt = optimizers.RMSprop()
    assert optimizers.get(opt) is opt


@pytest.mark.parametrize("bad", ["adamw", {"name": "nadam"}])
def test_unknown_name_raises_listing_valid_names(bad):
    with pytest.raises(ValueError) as info:
        optimizers.get(bad)
    for name in KERAS_DEFAULTS:
        assert name in str(info.value)


@pytest.mark.parametrize("make,arg", [
    (lambda: optimizers.SGD(learning_rate=-0.1), "learning_rate"),
    (lambda: optimizers.Adam(learning_rate=-1e-3), "learning_rate"),
    (lambda: optimizers.Adagrad(learning_rate=float("nan")), "learning_rate"),
    (lambda: optimizers.RMSprop(learning_rate=float("inf")), "learning_rate"),
    (lambda: optimizers.Ftrl(learning_rate=-1), "learning_rate"),
    (lambda: optimizers.SGD(momentum=1.5), "momentum"),
    (lambda: optimizers.SGD(momentum=-0.1), "momentum"),
    (lambda: optimizers.RMSprop(momentum=1.5), "momentum"),
    (lambda: optimizers.RMSprop(rho=1.0), "rho"),
    (lambda: optimizers.Adam(beta_1=1.0), "beta_1"),
    (lambda: optimizers.Adam(beta_2=-0.5), "beta_2"),
    (lambda: optimizers.Adam(epsilon=-1e-7), "epsilon"),
    (lambda: optimizers.Adagrad(initial_accumulator_value=-0.1), "initial_accumulator_value"),
    (lambda: optimizers.Ftrl(l1=-0.01), "l1"),
    (lambda: optimizers.Ftrl(l2=-0.01), "l2"),
    (lambda: optimizers.Ftrl(beta=-1.0), "beta"),
    (lambda: optimizers.SGD(learning_rate="0.1"), "learning_rate"),
    (lambda: optimizers.SGD(decay=-0.1), "decay"),
    (lambda: optimizers.Adam(decay=float("inf")), "decay"),
])
def test_invalid_hyperparameters_raise_naming_the_argument(make, arg):
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        make()


def test_setting_an_invalid_learning_rate_later_raises():
    opt = optimizers.SGD()
    with pytest.raises(ValueError, match="learning_rate"):
        opt.learning_rate = -0.5
    assert opt.learning_rate == pytest.approx(0.01)


# ---- Keras 2 spellings: lr and decay ----------------------------------------------------------
ALL_OPTIMIZERS = [optimizers.SGD, optimizers.Adam, optimizers.Adagrad, optimizers.RMSprop, optimizers.Ftrl]


@pytest.mark.parametrize("cls", ALL_OPTIMIZERS, ids=lambda c: c.__name__)
def test_lr_is_a_deprecated_alias_of_learning_rate(cls):
    with pytest.warns(DeprecationWarning, match=rf"{cls.__name__}: lr is deprecated; use learning_rate"):
        opt = cls(lr=0.125)
    assert opt.learning_rate == 0.125
    assert opt.get_config()["learning_rate"] == 0.125 and "lr" not in opt.get_config()
    with pytest.raises(TypeError, match=rf"{cls.__name__}: expected learning_rate or its Keras 2 alias lr, "
                                        r"not both; received learning_rate=0.5 and lr=0.125"):
        cls(learning_rate=0.5, lr=0.125)
    with pytest.raises(TypeError, match="not both"):
        cls(0.5, lr=0.125)
    with pytest.raises(ValueError, match="learning_rate"), pytest.warns(DeprecationWarning):
        cls(lr=-1.0)
    # The attribute too, both ways.
    with pytest.warns(DeprecationWarning, match=r"\.lr is deprecated"):
        opt.lr = 0.25
    assert opt.learning_rate == 0.25
    with pytest.warns(DeprecationWarning, match=r"\.lr is deprecated"):
        assert opt.lr == 0.25


def test_the_learning_rate_defaults_are_keras_s_whether_given_or_not():
    assert [cls().learning_rate for cls in ALL_OPTIMIZERS] == [0.01, 0.001, 0.001, 0.001, 0.001]
    assert optimizers.SGD(None).learning_rate == 0.01


def test_sgd_decay_divides_the_rate_by_one_plus_decay_times_iterations():
    """Keras 2: step t (0-based) uses lr / (1 + decay * t)."""
    lr, decay = 0.1, 0.5
    opt = optimizers.SGD(learning_rate=lr, decay=decay)
    rates, p = [], np.zeros(2, dtype=np.float32)
    for _ in range(4):
        rates.append(opt.current_learning_rate)
        opt.apply(p, np.ones(2, dtype=np.float32))
    assert rates == pytest.approx([0.1, 0.1 / 1.5, 0.05, 0.1 / 2.5], rel=1e-12)
    assert opt.learning_rate == 0.1                      # the undecayed rate, as Keras 2's lr
    assert opt.current_learning_rate == pytest.approx(0.1 / 3)      # the fifth step's
    close(p, np.full(2, -(0.1 + 0.1 / 1.5 + 0.05 + 0.04)))


def test_decay_with_momentum_and_adam_after_n_steps():
    lr, decay, m = 0.2, 0.25, 0.9
    p1, p2, p3 = run(optimizers.SGD(learning_rate=lr, momentum=m, decay=decay), G1, G2, G1)
    l1, l2, l3 = lr, lr / 1.25, lr / 1.5
    v1 = -l1 * G1
    v2 = m * v1 - l2 * G2
    v3 = m * v2 - l3 * G1
    close(p3, P0 + v1 + v2 + v3)
    # Adam: the decayed rate, then Keras' bias correction folded into the step size.
    a1, a2 = run(optimizers.Adam(learning_rate=0.01, decay=1.0), G1, G2)
    b1, b2 = 0.9, 0.999
    m1, v1_ = (1 - b1) * G1, (1 - b2) * G1 ** 2
    m2, v2_ = b1 * m1 + (1 - b1) * G2, b2 * v1_ + (1 - b2) * G2 ** 2
    step1 = 0.01 * math.sqrt(1 - b2) / (1 - b1) * m1 / (np.sqrt(v1_) + 1e-7)
    step2 = 0.01 / 2 * math.sqrt(1 - b2 ** 2) / (1 - b1 ** 2) * m2 / (np.sqrt(v2_) + 1e-7)
    close(a1, P0 - step1)
    close(a2, P0 - step1 - step2)


def test_decay_is_declared_like_the_other_hyperparameters():
    opt = optimizers.SGD(0.1, decay=0.01)
    assert opt.get_config()["decay"] == 0.01
    assert optimizers.SGD().get_config()["decay"] == 0.0
    with pytest.raises(ValueError, match=r"SGD: expected decay >= 0, received decay=-1"):
        opt.decay = -1
    assert opt.decay == 0.01
    run(opt, G1, G1)
    other = optimizers.SGD(0.1)
    other.apply_config(opt.get_config())
    assert other.decay == 0.01
    other.apply_config({**opt.get_config(), "decay": 0.0})
    assert other.decay == 0.0 and other.current_learning_rate == 0.1
    clone = optimizers.get(json.loads(json.dumps(opt.get_config())))
    clone.set_state(opt.get_state())
    assert clone.current_learning_rate == pytest.approx(0.1 / 1.02)


def test_a_user_optimizer_whose_constructor_takes_no_decay_round_trips_its_config():
    class Halving(optimizers.Optimizer):
        name = "halving"

        def __init__(self, learning_rate=0.5, factor=0.5):
            super().__init__(learning_rate)
            self.factor = factor

        def _update(self, p, g, lr, slots, tmp):
            p -= lr * self.factor * g

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}
    opt = Halving(factor=0.25)
    opt.decay = 0.5
    clone = Halving.from_config(json.loads(json.dumps(opt.get_config())))
    assert (clone.factor, clone.decay, clone.learning_rate) == (0.25, 0.5, 0.5)


def test_decay_and_a_schedule_exclude_each_other():
    schedule = schedules.StepDecay(0.1, step_size=2)
    message = r"SGD: expected decay=0 with a learning-rate schedule .* received decay=0.1 and learning_rate="
    with pytest.raises(ValueError, match=message):
        optimizers.SGD(learning_rate=schedule, decay=0.1)
    opt = optimizers.SGD(learning_rate=schedule)
    with pytest.raises(ValueError, match=message):
        opt.decay = 0.1
    assert opt.decay == 0.0
    decayed = optimizers.SGD(0.1, decay=0.1)
    with pytest.raises(ValueError, match=message):
        decayed.learning_rate = schedule
    assert decayed.learning_rate == 0.1
    # apply_config switches between the two in either direction, and refuses both at once.
    decayed.apply_config(opt.get_config())
    assert (decayed.decay, decayed.get_config()["learning_rate"]) == (0.0, schedule.get_config())
    opt.apply_config(optimizers.SGD(0.2, decay=0.5).get_config())
    assert (opt.learning_rate, opt.decay) == (0.2, 0.5)
    with pytest.raises(ValueError, match="expected decay=0 with a learning-rate schedule"):
        opt.apply_config({"learning_rate": schedule.get_config(), "decay": 0.5})
    assert (opt.learning_rate, opt.decay) == (0.2, 0.5)    # all or nothing


# ---- against torch (float32 steps; skipped without torch) ---------------------------------
def _param_and_grads(seed, size=40, steps=5):
    rng = np.random.default_rng(seed)
    p0 = rng.normal(size=size).astype(np.float32)
    # |g| in [0.1, 1]: keeps Adam's epsilon negligible next to sqrt(v) (see the Adam tests).
    gs = (rng.uniform(0.1, 1.0, size=(steps, size)) * rng.choice([-1, 1], size=(steps, size)))
    return p0, gs.astype(np.float32)


def _run_both(ours, make_torch, p0, gs, before_torch_step=None):
    """Apply the same gradient sequence to both; yield the parameters after every step."""
    import torch
    p = p0.copy()
    pt = torch.nn.Parameter(to_torch(p0))
    opt = make_torch([pt])
    for i, g in enumerate(gs):
        ours.apply(p, g.copy())
        pt.grad = to_torch(g)
        if before_torch_step is not None:
            before_torch_step(opt, i + 1)
        opt.step()
        yield p.copy(), pt.detach().numpy().copy()


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True), (0.5, True)],
                         ids=["plain", "momentum", "nesterov", "nesterov_0.5"])
def test_sgd_matches_torch(torch, momentum, nesterov):
    # torch keeps buf = m*buf + g and steps -lr*(g + m*buf) (nesterov) or -lr*buf; with a
    # constant lr this is exactly Keras' v = m*v - lr*g with v = -lr*buf.
    p0, gs = _param_and_grads(10)
    ours = optimizers.SGD(learning_rate=0.1, momentum=momentum, nesterov=nesterov)
    steps = list(_run_both(ours, lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=momentum,
                                                             nesterov=nesterov), p0, gs))
    for i, (mine, theirs) in enumerate(steps):
        assert_close(mine, theirs, msg=f"step {i + 1}")
    assert not np.allclose(steps[-1][0], p0)


def test_adam_matches_torch_exactly_with_rescaled_epsilon(torch):
    # Keras: p -= lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps)
    # torch: p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps_t)
    # These are the same update when eps_t = eps / sqrt(bc2), bc2 = 1 - beta_2**t.
    p0, gs = _param_and_grads(11)
    eps, b1, b2 = 1e-3, 0.9, 0.999  # a large epsilon so that a wrong placement would show

    def rescale(opt, step):
        opt.param_groups[0]["eps"] = eps / math.sqrt(1 - b2 ** step)

    ours = optimizers.Adam(learning_rate=0.01, beta_1=b1, beta_2=b2, epsilon=eps)
    steps = _run_both(ours, lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(b1, b2), eps=eps),
                      p0, gs, before_torch_step=rescale)
    for i, (mine, theirs) in enumerate(steps):
        assert_close(mine, theirs, msg=f"step {i + 1}")


def test_adam_matches_torch_with_the_same_epsilon_within_the_placement_gap(torch):
    p0, gs = _param_and_grads(12)
    lr, b1, b2, eps = 0.001, 0.9, 0.999, 1e-7
    # Quantify the formula gap in float64. In Keras terms torch uses eps*sqrt(bc2) instead of
    # eps, so per step the updates differ by at most alpha*|m|/sqrt(v) * eps/sqrt(v) <=
    # lr * eps / sqrt(v) (alpha*|m|/sqrt(v) <= lr for Adam). The smallest sqrt(v) is at step 1,
    # sqrt(1 - b2) * min|g| = 0.0316 * 0.1, giving <= 3.2e-8 per step and <= 1.6e-7 over the
    # 5 steps: two orders of magnitude below the 1e-5 tolerance.
    def simulate(keras):
        p, m, v = p0.astype(np.float64), 0.0, 0.0
        for step, g in enumerate(gs.astype(np.float64), start=1):
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
            if keras:
                p = p - lr * math.sqrt(bc2) / bc1 * m / (np.sqrt(v) + eps)
            else:
                p = p - lr / bc1 * m / (np.sqrt(v) / math.sqrt(bc2) + eps)
        return p

    gap = np.max(np.abs(simulate(True) - simulate(False)))
    assert 0 < gap < 1.6e-7
    *_, (mine, theirs) = _run_both(optimizers.Adam(lr, b1, b2, eps),
                                   lambda ps: torch.optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps),
                                   p0, gs)
    assert_close(mine, theirs)
    assert_close(mine, simulate(True), msg="float64 Keras reference")


@pytest.mark.parametrize("opt", [optimizers.Adagrad(initial_accumulator_value=0.25), optimizers.Adam(),
                                 optimizers.Ftrl(initial_accumulator_value=0.5)], ids=lambda o: o.name)
def test_reset_elements_gives_a_range_the_slots_of_a_fresh_optimizer(opt):
    fresh = optimizers.get(opt.get_config())
    p, g = np.ones(6, np.float32), np.full(6, 0.5, np.float32)
    opt.apply(p, g)
    fresh.build(6)
    stepped = {k: s.copy() for k, s in opt.slots.items()}
    opt.reset_elements(2, 5)
    for k, s in opt.slots.items():
        np.testing.assert_array_equal(s[2:5], fresh.slots[k][2:5])
        np.testing.assert_array_equal(s[[0, 1, 5]], stepped[k][[0, 1, 5]])
        assert not np.array_equal(stepped[k][2:5], fresh.slots[k][2:5])
