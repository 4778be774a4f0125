"""Learning-rate schedules (``sparkdl.engine.schedules``) against hand-written closed forms
(Keras semantics), their config round trips and argument validation. How an optimizer reads a
schedule is in test_optimizers.py."""
from __future__ import annotations

import json
import math

import pytest

from sparkdl.engine import schedules


def test_exponential_decay():
    s = schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    assert [s(k) for k in (0, 5, 10, 20)] == pytest.approx([0.1, 0.1 * 0.5 ** 0.5, 0.05, 0.025])
    st = schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    assert [st(k) for k in (0, 9, 10, 15, 20)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_step_decay():
    s = schedules.StepDecay(0.1, step_size=3, gamma=0.5)
    assert [s(k) for k in (0, 2, 3, 5, 6, 9)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.0125])


def test_piecewise_constant_decay_boundaries_are_inclusive():
    s = schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    steps = [0, 9, 10, 11, 19, 20, 21, 1000]
    assert [s(k) for k in steps] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.1, 0.1]


def test_cosine_decay_without_warmup():
    s = schedules.CosineDecay(0.1, decay_steps=10)
    assert [s(k) for k in (0, 5, 10, 50)] == pytest.approx([0.1, 0.05, 0.0, 0.0], abs=1e-12)
    assert s(2) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    a = schedules.CosineDecay(0.1, decay_steps=10, alpha=0.1)
    assert [a(k) for k in (0, 5, 10, 50)] == pytest.approx([0.1, 0.055, 0.01, 0.01])
    # Keras ignores warmup_steps when there is no warmup_target.
    w = schedules.CosineDecay(0.1, decay_steps=10, warmup_steps=4)
    assert [w(k) for k in (0, 5, 10)] == pytest.approx([0.1, 0.05, 0.0], abs=1e-12)


def test_cosine_decay_with_warmup_keras_semantics():
    s = schedules.CosineDecay(0.0, decay_steps=10, alpha=0.2, warmup_target=0.1, warmup_steps=5)
    # Linear from initial_learning_rate to warmup_target over warmup_steps ...
    assert [s(k) for k in (0, 1, 2, 4)] == pytest.approx([0.0, 0.02, 0.04, 0.08])
    # ... then a cosine from the peak down to alpha * peak over decay_steps, then flat.
    assert s(5) == pytest.approx(0.1)
    assert s(10) == pytest.approx(0.1 * (0.8 * 0.5 + 0.2))
    assert s(8) == pytest.approx(0.1 * (0.8 * 0.5 * (1 + math.cos(math.pi * 0.3)) + 0.2))
    assert [s(15), s(100)] == pytest.approx([0.02, 0.02])
    s2 = schedules.CosineDecay(0.01, decay_steps=4, warmup_target=0.05, warmup_steps=4)
    assert s2(2) == pytest.approx(0.03)


def test_linear_warmup_to_a_constant():
    s = schedules.LinearWarmup(0.1, warmup_steps=4)
    assert [s(k) for k in (0, 1, 3, 4, 100)] == pytest.approx([0.0, 0.025, 0.075, 0.1, 0.1])
    s = schedules.LinearWarmup(0.1, warmup_steps=4, initial_learning_rate=0.02)
    assert s(2) == pytest.approx(0.06)


def test_linear_warmup_wrapping_a_schedule_starts_it_after_the_warmup():
    s = schedules.LinearWarmup(schedules.StepDecay(0.1, step_size=2, gamma=0.5), warmup_steps=4)
    assert [s(k) for k in (0, 2, 4, 5, 6, 8)] == pytest.approx([0.0, 0.05, 0.1, 0.1, 0.05, 0.025])


@pytest.mark.parametrize("schedule", [
    schedules.ExponentialDecay(0.1, 7, 0.3, staircase=True),
    schedules.StepDecay(0.2, 3, 0.7),
    schedules.PiecewiseConstantDecay([3, 8], [0.3, 0.2, 0.1]),
    schedules.CosineDecay(0.01, 20, alpha=0.05, warmup_target=0.1, warmup_steps=5),
    schedules.LinearWarmup(schedules.ExponentialDecay(0.1, 5, 0.5), 3, initial_learning_rate=0.01),
    schedules.LinearWarmup(0.3, 6),
], ids=lambda s: type(s).__name__)
def test_schedule_config_round_trip(schedule):
    config = json.loads(json.dumps(schedule.get_config()))
    clone = schedules.deserialize(config)
    assert type(clone) is type(schedule) and clone is not schedule
    assert clone.get_config() == schedule.get_config()
    steps = range(0, 30, 1)
    assert [clone(k) for k in steps] == [schedule(k) for k in steps]


@pytest.mark.parametrize("make,arg", [
    (lambda: schedules.ExponentialDecay(0.1, decay_steps=0, decay_rate=0.5), "decay_steps"),
    (lambda: schedules.StepDecay(-0.1, step_size=2), "initial_learning_rate"),
    (lambda: schedules.CosineDecay(0.1, decay_steps=10, alpha=1.5), "alpha"),
    (lambda: schedules.LinearWarmup(0.1, warmup_steps=0), "warmup_steps"),
    (lambda: schedules.PiecewiseConstantDecay([1, 2], [0.1, 0.2]), "values"),
])
def test_invalid_schedule_arguments_raise(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()
