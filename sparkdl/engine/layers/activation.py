"""Activation layers: ``Activation(name)`` and its named shorthands."""
from __future__ import annotations

from typing import Any

import numpy as np

from sparkdl.engine import activations
from sparkdl.engine.layers.base import Layer


class Activation(Layer):
    """Applies an activation function element-wise (softmax over the last axis): a name, a
    config, an ActivationFn, or a function with a ``derivative`` (see
    ``sparkdl.engine.activations``)."""

    def __init__(self, activation: activations.Identifier, **kwargs: Any):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)
        self._y: np.ndarray | None = None
        self._x: np.ndarray | None = None   # kept when the activation needs_input

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        # Not in place: x may be an array another layer (or the caller) still holds.
        y = self.activation.forward(x)
        if training:
            self._y, self._x = y, (x if self.activation.needs_input else None)
        return y

    def backward(self, dLdy: np.ndarray) -> np.ndarray:
        # _y is None without a training forward pass; a linear activation's derivative does
        # not read it.
        return activations.backward(self.activation, dLdy, self._y, self._x)  # type: ignore[arg-type]

    # Fusion with a cross-entropy loss (see ActivatedLayer): the logits are the input.
    def forward_logits(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The input unchanged: the logits of this activation, for a loss computed from them."""
        return x

    def backward_logits(self, dLdz: np.ndarray) -> np.ndarray:
        """The gradient with respect to the logits, unchanged: it is the gradient with respect to the input."""
        return dLdz

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["activation"] = activations.serialize(self.activation)
        return config


class _Shorthand(Activation):
    """An ``Activation`` of one fixed function, which its config therefore leaves out."""

    activation_name = "linear"

    def __init__(self, **kwargs: Any):
        super().__init__(self.activation_name, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("activation")
        return config


def _shorthand(class_name: str, activation_name: str) -> type[_Shorthand]:
    return type(class_name, (_Shorthand,), {"activation_name": activation_name,
                                            "__doc__": f"``Activation('{activation_name}')``."})


ReLU = _shorthand("ReLU", "relu")
Sigmoid = _shorthand("Sigmoid", "sigmoid")
Tanh = _shorthand("Tanh", "tanh")
Softmax = _shorthand("Softmax", "softmax")


class LeakyReLU(Activation):
    """``max(x, alpha * x)``."""

    def __init__(self, alpha: float = 0.01, **kwargs: Any):
        activation = activations.LeakyReLU(alpha)
        super().__init__(activation, **kwargs)
        self.alpha = activation.alpha

    def get_config(self) -> dict[str, Any]:
        config = Layer.get_config(self)
        config["alpha"] = self.alpha
        return config
