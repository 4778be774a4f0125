"""Element-wise activation functions, their derivatives, and the name registry.

Every built-in activation computes its derivative from its *output* alone, so a layer keeps
one array per activation for the backward pass and the forward pass may work in place on
the pre-activation buffer it owns.

A user function works too (``Dense(10, activation=swish)``), through a small protocol: the
callable maps an array to an array of the same shape, element-wise, and carries a
``derivative(x, y)`` attribute returning dy/dx element-wise for the input ``x`` and the output
``y = fn(x)`` (use whichever is cheaper)::

    def swish(x):
        return x / (1 + np.exp(-x))
    swish.derivative = lambda x, y: y + (1 - y) / (1 + np.exp(-x))

A class whose instances have ``__call__`` and ``derivative`` methods does as well. Such an
activation (``needs_input``) keeps its input for the backward pass. A saved model records it
under its registered name (``sparkdl.saving.register_serializable``), else its ``__name__``,
and a loader finds it by that name in the registry or ``custom_objects``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from sparkdl.engine import checks, custom_objects


class Differentiable(Protocol):
    """What a user activation function provides: ``fn(x) -> y`` element-wise, and
    ``fn.derivative(x, y) -> dy/dx`` element-wise (see the module docstring)."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def derivative(self, x: np.ndarray, y: np.ndarray) -> np.ndarray: ...


class ActivationFn:
    name = "activation"
    #: True when ``backward`` needs the input ``x`` as well as the output: a layer then keeps
    #: the input and calls ``backward(dLdy, y, x)``; others are called as ``backward(dLdy, y)``.
    needs_input = False

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Return f(z); writes into ``out`` (which may be ``z`` itself) when given."""
        raise NotImplementedError

    def backward(self, dLdy: np.ndarray, y: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        """Return dL/dz given dL/dy, the output y = f(z) and, when ``needs_input``, z itself."""
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

    def backward(self, dLdy: np.ndarray, y: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        return dLdy


class ReLU(ActivationFn):
    name = "relu"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.maximum(z, 0, out=out)

    def backward(self, dLdy: np.ndarray, y: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        return dLdy * (y > 0)


class LeakyReLU(ActivationFn):
    name = "leaky_relu"

    def __init__(self, alpha: float = 0.01):
        # The derivative is read off the output's sign, which needs alpha >= 0.
        self.alpha = checks.fraction(alpha, "alpha", "LeakyReLU")

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.maximum(z, z * self.alpha, out=out)

    def backward(self, dLdy: np.ndarray, y: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
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

    def backward(self, dLdy: np.ndarray, y: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        return dLdy * y * (1 - y)


class Tanh(ActivationFn):
    name = "tanh"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.tanh(z, out=out)

    def backward(self, dLdy: np.ndarray, y: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        return dLdy * (1 - y * y)


class Softmax(ActivationFn):
    """Softmax over the last axis."""

    name = "softmax"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = np.subtract(z, z.max(axis=-1, keepdims=True), out=out)
        np.exp(out, out=out)
        out /= out.sum(axis=-1, keepdims=True)
        return out

    def backward(self, dLdy: np.ndarray, y: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        return y * (dLdy - (dLdy * y).sum(axis=-1, keepdims=True))


class CallableActivation(ActivationFn):
    """A user function following the ``Differentiable`` protocol, saved as ``name``."""

    needs_input = True

    def __init__(self, fn: Differentiable | Callable[[np.ndarray], np.ndarray], name: str | None = None):
        if not callable(getattr(fn, "derivative", None)):
            label = name or custom_objects.get_registered_name(fn)
            raise TypeError(f"activation {label!r}: expected a callable with a derivative: add "
                            f"{label}.derivative = lambda x, y: ... returning dy/dx element-wise "
                            f"(x the input, y the output), received {fn!r} without one")
        self.fn: Differentiable = fn  # type: ignore[assignment]  # its derivative is checked above
        self.name = name or custom_objects.get_registered_name(fn)

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        y = np.asarray(self.fn(z))
        if y.shape != z.shape:
            raise ValueError(f"activation {self.name!r}: expected an output of the input's shape "
                             f"{z.shape} (an element-wise function), received {y.shape}")
        if out is not None:
            out[...] = y
            return out
        return y.astype(z.dtype, copy=False)

    def backward(self, dLdy: np.ndarray, y: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        assert x is not None, "layers keep the input of an activation that needs_input"
        dydx = np.asarray(self.fn.derivative(x, y))
        return (dLdy * dydx).astype(dLdy.dtype, copy=False)

    def __repr__(self) -> str:
        return f"CallableActivation({self.name!r})"


_REGISTRY = {cls.name: cls for cls in (Linear, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax)}

#: What ``activation=`` accepts besides a Layer: a name, a config, an ActivationFn, a
#: ``Differentiable`` callable (a plain function with a ``derivative`` attribute, which type
#: checkers cannot see, is checked when the layer is made), or None (linear).
Identifier = str | Mapping[str, Any] | ActivationFn | Differentiable | Callable[[np.ndarray], np.ndarray] | None


def names() -> list[str]:
    return sorted(_REGISTRY)


def builtin_name(activation: object) -> str | None:
    """The name of a built-in activation (``"softmax"``, ...); None for anything else, user
    activations that share a built-in's name included."""
    name = getattr(activation, "name", None)
    return name if isinstance(name, str) and type(activation) is _REGISTRY.get(name) else None


def serialize(activation: ActivationFn) -> str | dict[str, Any]:
    """What a layer's config records for ``activation``: the name alone when that is its whole
    config, an instance of a registered class under its registered name."""
    config = activation.get_config()
    doc = custom_objects.serialize(activation, config)
    return config["name"] if doc is config and len(config) == 1 else doc


def backward(activation: ActivationFn, dLdy: np.ndarray, y: np.ndarray, x: np.ndarray | None) -> np.ndarray:
    """dL/dz of ``activation``: ``x`` (kept by the layer only when it ``needs_input``) is
    passed to those that need it."""
    if activation.needs_input:
        return activation.backward(dLdy, y, x)
    return activation.backward(dLdy, y)


def _user(name: str, found: Any) -> ActivationFn:
    """The activation a custom object called ``name`` makes (a class is instantiated first)."""
    made = custom_objects.instantiate(found, None)
    if isinstance(made, ActivationFn):
        return made
    if callable(made):
        return CallableActivation(made, name)
    raise TypeError(f"expected the custom object {name!r} to be an activation (a function with a "
                    f"derivative, or an ActivationFn), received {made!r}")


def get(identifier: Identifier) -> ActivationFn:
    """Resolve ``None``, a name, a config dict, an ActivationFn instance or a
    ``Differentiable`` callable. Names are looked up in ``custom_objects`` (scopes, then the
    registry) before the built-ins."""
    if identifier is None:
        return Linear()
    if isinstance(identifier, ActivationFn):
        return identifier
    if isinstance(identifier, str):
        found = custom_objects.get_registered_object(identifier)
        if found is not None:
            return _user(identifier, found)
        cls = _REGISTRY.get(identifier.lower())
        if cls is None:
            raise ValueError(f"unknown activation {identifier!r}; expected one of {names()}, a "
                             f"registered name or a name in custom_objects")
        return cls()
    if isinstance(identifier, Mapping):
        user = custom_objects.resolve(identifier, "activation", ActivationFn)
        if user is not None:
            return user
        config = dict(identifier)
        cls = _REGISTRY.get(config.pop("name", None))
        if cls is None:
            raise ValueError(f"unknown activation config {identifier!r}; expected one of {names()}")
        return cls(**config)
    if callable(identifier) and not isinstance(identifier, type):
        return CallableActivation(identifier)
    raise TypeError(f"expected an activation name (one of {names()}), a function with a "
                    f"derivative, or None, received {type(identifier).__name__}: {identifier!r}")
