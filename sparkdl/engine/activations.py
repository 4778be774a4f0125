"""Element-wise activation functions, their derivatives, and the name registry.

Every activation here can compute its derivative from its *output* alone, so a layer keeps
one array per activation for the backward pass and the forward pass may work in place on
the pre-activation buffer it owns.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from sparkdl.engine import checks


class ActivationFn:
    name = "activation"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Return f(z); writes into ``out`` (which may be ``z`` itself) when given."""
        raise NotImplementedError

    def backward(self, dLdy: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Return dL/dz given dL/dy and the output y = f(z)."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Linear(ActivationFn):
    name = "linear"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is not None and out is not z:
            out[...] = z
            return out
        return z

    def backward(self, dLdy: np.ndarray, y: np.ndarray) -> np.ndarray:
        return dLdy


class ReLU(ActivationFn):
    name = "relu"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.maximum(z, 0, out=out)

    def backward(self, dLdy: np.ndarray, y: np.ndarray) -> np.ndarray:
        return dLdy * (y > 0)


class LeakyReLU(ActivationFn):
    name = "leaky_relu"

    def __init__(self, alpha: float = 0.01):
        # The derivative is read off the output's sign, which needs alpha >= 0.
        self.alpha = checks.fraction(alpha, "alpha", "LeakyReLU")

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.maximum(z, z * self.alpha, out=out)

    def backward(self, dLdy: np.ndarray, y: np.ndarray) -> np.ndarray:
        return dLdy * np.where(y > 0, 1.0, self.alpha).astype(dLdy.dtype, copy=False)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "alpha": self.alpha}


class Sigmoid(ActivationFn):
    name = "sigmoid"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        # 1 / (1 + exp(-z)) overflows for very negative z; the tanh form never does.
        out = np.multiply(z, 0.5, out=out)
        np.tanh(out, out=out)
        out += 1
        out *= 0.5
        return out

    def backward(self, dLdy: np.ndarray, y: np.ndarray) -> np.ndarray:
        return dLdy * y * (1 - y)


class Tanh(ActivationFn):
    name = "tanh"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.tanh(z, out=out)

    def backward(self, dLdy: np.ndarray, y: np.ndarray) -> np.ndarray:
        return dLdy * (1 - y * y)


class Softmax(ActivationFn):
    """Softmax over the last axis."""

    name = "softmax"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = np.subtract(z, z.max(axis=-1, keepdims=True), out=out)
        np.exp(out, out=out)
        out /= out.sum(axis=-1, keepdims=True)
        return out

    def backward(self, dLdy: np.ndarray, y: np.ndarray) -> np.ndarray:
        return y * (dLdy - (dLdy * y).sum(axis=-1, keepdims=True))


_REGISTRY = {cls.name: cls for cls in (Linear, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax)}


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(identifier: str | dict[str, Any] | ActivationFn | None) -> ActivationFn:
    """Resolve ``None``, a name, a config dict or an ActivationFn instance."""
    if identifier is None:
        return Linear()
    if isinstance(identifier, ActivationFn):
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier)
        cls = _REGISTRY.get(config.pop("name", None))
        if cls is None:
            raise ValueError(f"unknown activation config {identifier!r}; expected one of {names()}")
        return cls(**config)
    if isinstance(identifier, str):
        cls = _REGISTRY.get(identifier.lower())
        if cls is None:
            raise ValueError(f"unknown activation {identifier!r}; expected one of {names()}")
        return cls()
    raise TypeError(f"expected an activation name (one of {names()}) or None, "
                    f"received {type(identifier).__name__}: {identifier!r}")
