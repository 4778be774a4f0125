"""Weight initializers (Keras names and fan conventions), drawn from a NumPy Generator.

Fans follow Keras: a 2-D kernel ``(in, out)`` has fan_in = in, fan_out = out; a convolution
kernel ``(filters, in_channels, kh, kw)`` has fan_in = in_channels*kh*kw and
fan_out = filters*kh*kw.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from sparkdl.engine import custom_objects


def _fans(shape: tuple) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


class Initializer:
    name = "initializer"

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}


class Zeros(Initializer):
    name = "zeros"

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)


class Ones(Initializer):
    name = "ones"

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return np.ones(shape, dtype=np.float32)


class _Scaled(Initializer):
    """Variance scaling: uniform or (truncated) normal with variance scale / fan."""

    scale = 1.0
    mode = "fan_avg"
    distribution = "uniform"

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        fan_in, fan_out = _fans(tuple(shape))
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        var = self.scale / max(1.0, fan)
        if self.distribution == "uniform":
            limit = np.sqrt(3.0 * var)
            return rng.uniform(-limit, limit, size=shape).astype(np.float32)
        # Truncated at two standard deviations, rescaled as in Keras.
        std = np.sqrt(var) / 0.87962566103423978
        out = rng.standard_normal(size=shape)
        bad = np.abs(out) > 2
        while bad.any():
            out[bad] = rng.standard_normal(size=int(bad.sum()))
            bad = np.abs(out) > 2
        return (out * std).astype(np.float32)


class GlorotUniform(_Scaled):
    name = "glorot_uniform"


class GlorotNormal(_Scaled):
    name = "glorot_normal"
    distribution = "normal"


class HeUniform(_Scaled):
    name = "he_uniform"
    scale, mode = 2.0, "fan_in"


class HeNormal(_Scaled):
    name = "he_normal"
    scale, mode, distribution = 2.0, "fan_in", "normal"


class LecunUniform(_Scaled):
    name = "lecun_uniform"
    mode = "fan_in"


class RandomNormal(Initializer):
    name = "random_normal"

    def __init__(self, mean: float = 0.0, stddev: float = 0.05):
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return rng.normal(self.mean, self.stddev, size=shape).astype(np.float32)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "mean": self.mean, "stddev": self.stddev}


class RandomUniform(Initializer):
    name = "random_uniform"

    def __init__(self, minval: float = -0.05, maxval: float = 0.05):
        self.minval, self.maxval = float(minval), float(maxval)

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.minval, self.maxval, size=shape).astype(np.float32)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "minval": self.minval, "maxval": self.maxval}


_REGISTRY = {cls.name: cls for cls in (Zeros, Ones, GlorotUniform, GlorotNormal, HeUniform,
                                       HeNormal, LecunUniform, RandomNormal, RandomUniform)}


def names() -> list[str]:
    return sorted(_REGISTRY)


def serialize(identifier: str | dict[str, Any] | Initializer) -> str | dict[str, Any]:
    """What a layer's config records for an ``*_initializer=`` argument: a name or config as
    given, an Initializer's config (an instance of a registered class under its registered
    name)."""
    if isinstance(identifier, (str, dict)):
        return identifier
    return custom_objects.serialize(identifier, identifier.get_config())


def get(identifier: str | dict[str, Any] | Initializer) -> Initializer:
    """An Initializer from itself, a name or a config; names are looked up in the custom
    objects (scopes, then the registry: ``sparkdl.saving``) before the built-ins."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, (str, dict)):
        user = custom_objects.resolve(identifier, "initializer", Initializer)
        if user is not None:
            return user
    if isinstance(identifier, dict):
        config = dict(identifier)
        cls = _REGISTRY.get(config.pop("name", None))
        if cls is None:
            raise ValueError(f"unknown initializer config {identifier!r}; expected one of {names()}")
        return cls(**config)
    if isinstance(identifier, str):
        cls = _REGISTRY.get(identifier.lower())
        if cls is None:
            raise ValueError(f"unknown initializer {identifier!r}; expected one of {names()}")
        return cls()
    raise TypeError(f"expected an initializer name (one of {names()}), "
                    f"received {type(identifier).__name__}: {identifier!r}")
