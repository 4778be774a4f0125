"""Learning-rate schedules: callables from the optimizer's step count to a learning rate.

Exposed as ``sparkdl.optimizers.schedules``. Every schedule round-trips through
``get_config`` / ``deserialize`` so a saved model keeps its schedule.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sparkdl.engine import checks


class LearningRateSchedule:
    """Base class of the learning-rate schedules: calling one with a step number gives that step's rate."""
    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """The schedule's name and arguments, as JSON-plain values; saved with the optimizer."""
        raise NotImplementedError


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (floored if staircase)."""

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float,
                 staircase: bool = False):
        who = "ExponentialDecay"
        self.initial_learning_rate = checks.number(initial_learning_rate, "initial_learning_rate", who,
                                                   above=0)
        self.decay_steps = int(checks.number(decay_steps, "decay_steps", who, above=0))
        self.decay_rate = checks.number(decay_rate, "decay_rate", who, above=0)
        self.staircase = bool(staircase)

    def __call__(self, step: int) -> float:
        p = step / self.decay_steps
        return self.initial_learning_rate * self.decay_rate ** (math.floor(p) if self.staircase else p)

    def get_config(self) -> dict[str, Any]:
        return {"class_name": "ExponentialDecay", "initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase}


class StepDecay(LearningRateSchedule):
    """Multiply the rate by ``gamma`` every ``step_size`` steps (PyTorch's StepLR)."""

    def __init__(self, initial_learning_rate: float, step_size: int, gamma: float = 0.1):
        who = "StepDecay"
        self.initial_learning_rate = checks.number(initial_learning_rate, "initial_learning_rate", who,
                                                   above=0)
        self.step_size = int(checks.number(step_size, "step_size", who, above=0))
        self.gamma = checks.number(gamma, "gamma", who, above=0)

    def __call__(self, step: int) -> float:
        return self.initial_learning_rate * self.gamma ** (step // self.step_size)

    def get_config(self) -> dict[str, Any]:
        return {"class_name": "StepDecay", "initial_learning_rate": self.initial_learning_rate,
                "step_size": self.step_size, "gamma": self.gamma}


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[i]`` for steps in ``(boundaries[i-1], boundaries[i]]``."""

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]):
        boundaries, values = [int(b) for b in boundaries], [float(v) for v in values]
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"PiecewiseConstantDecay: expected len(values) == len(boundaries) + 1, "
                             f"received {len(values)} values and {len(boundaries)} boundaries")
        if boundaries != sorted(boundaries):
            raise ValueError(f"PiecewiseConstantDecay: expected increasing boundaries, received {boundaries}")
        self.boundaries, self.values = boundaries, values

    def __call__(self, step: int) -> float:
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return value
        return self.values[-1]

    def get_config(self) -> dict[str, Any]:
        return {"class_name": "PiecewiseConstantDecay", "boundaries": self.boundaries,
                "values": self.values}


class CosineDecay(LearningRateSchedule):
    """Keras' CosineDecay: optional linear warmup from ``initial_learning_rate`` to
    ``warmup_target`` over ``warmup_steps``, then a cosine from the peak down to
    ``alpha * peak`` over ``decay_steps``."""

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0,
                 warmup_target: float | None = None, warmup_steps: int = 0):
        who = "CosineDecay"
        self.initial_learning_rate = checks.number(initial_learning_rate, "initial_learning_rate", who,
                                                   at_least=0)
        self.decay_steps = int(checks.number(decay_steps, "decay_steps", who, above=0))
        self.alpha = checks.number(alpha, "alpha", who, at_least=0, at_most=1)
        self.warmup_target = None if warmup_target is None else float(warmup_target)
        self.warmup_steps = int(checks.number(warmup_steps, "warmup_steps", who, at_least=0))

    def __call__(self, step: int) -> float:
        peak = self.initial_learning_rate if self.warmup_target is None else self.warmup_target
        if self.warmup_target is not None and step < self.warmup_steps:
            frac = step / self.warmup_steps
            return self.initial_learning_rate + frac * (self.warmup_target - self.initial_learning_rate)
        t = min(step - (self.warmup_steps if self.warmup_target is not None else 0), self.decay_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * t / self.decay_steps))
        return peak * ((1 - self.alpha) * cosine + self.alpha)

    def get_config(self) -> dict[str, Any]:
        return {"class_name": "CosineDecay", "initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha,
                "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}


class LinearWarmup(LearningRateSchedule):
    """Ramp linearly from ``initial_learning_rate`` to the value of ``after`` (a float or a
    schedule, which then starts counting at the end of the warmup) over ``warmup_steps``."""

    def __init__(self, after: float | LearningRateSchedule, warmup_steps: int,
                 initial_learning_rate: float = 0.0):
        self.after = after
        self.warmup_steps = int(checks.number(warmup_steps, "warmup_steps", "LinearWarmup", above=0))
        self.initial_learning_rate = float(initial_learning_rate)

    def _after(self, step: int) -> float:
        return self.after(step) if callable(self.after) else float(self.after)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            target = self._after(0)
            return self.initial_learning_rate + (target - self.initial_learning_rate) * step / self.warmup_steps
        return self._after(step - self.warmup_steps)

    def get_config(self) -> dict[str, Any]:
        after = self.after.get_config() if isinstance(self.after, LearningRateSchedule) else float(self.after)
        return {"class_name": "LinearWarmup", "after": after, "warmup_steps": self.warmup_steps,
                "initial_learning_rate": self.initial_learning_rate}


_REGISTRY = {cls.__name__: cls for cls in (ExponentialDecay, StepDecay, PiecewiseConstantDecay,
                                           CosineDecay, LinearWarmup)}


def deserialize(config: float | dict[str, Any]) -> float | LearningRateSchedule:
    """A float stays a float; a schedule config becomes the schedule."""
    if isinstance(config, (int, float)):
        return float(config)
    config = dict(config)
    cls = _REGISTRY.get(config.pop("class_name", None))
    if cls is None:
        raise ValueError(f"unknown learning-rate schedule config {config!r}; expected one of {sorted(_REGISTRY)}")
    if cls is LinearWarmup:
        config["after"] = deserialize(config["after"])
    return cls(**config)
