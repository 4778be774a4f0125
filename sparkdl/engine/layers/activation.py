"""Activation layers: ``Activation(name)`` and its named shorthands."""
from __future__ import annotations

from sparkdl.engine import activations
from sparkdl.engine.layers.base import Layer


class Activation(Layer):
    """Applies an activation function element-wise (softmax over the last axis)."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)
        self._y = None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, x, training=False):
        # Not in place: x may be an array another layer (or the caller) still holds.
        y = self.activation.forward(x)
        if training:
            self._y = y
        return y

    def backward(self, dLdy):
        return self.activation.backward(dLdy, self._y)

    # Fusion with a cross-entropy loss (see ActivatedLayer): the logits are the input.
    def forward_logits(self, x, training=False):
        return x

    def backward_logits(self, dLdz):
        return dLdz

    def get_config(self):
        config = super().get_config()
        act = self.activation.get_config()
        config["activation"] = act["name"] if len(act) == 1 else act
        return config


def _shorthand(class_name: str, activation_name: str):
    def __init__(self, **kwargs):
        Activation.__init__(self, activation_name, **kwargs)

    def get_config(self):
        config = Activation.get_config(self)
        config.pop("activation")
        return config

    return type(class_name, (Activation,), {"__init__": __init__, "get_config": get_config,
                                            "__doc__": f"``Activation('{activation_name}')``."})


ReLU = _shorthand("ReLU", "relu")
Sigmoid = _shorthand("Sigmoid", "sigmoid")
Tanh = _shorthand("Tanh", "tanh")
Softmax = _shorthand("Softmax", "softmax")


class LeakyReLU(Activation):
    """``max(x, alpha * x)``."""

    def __init__(self, alpha: float = 0.01, **kwargs):
        super().__init__(activations.LeakyReLU(alpha), **kwargs)
        self.alpha = self.activation.alpha

    def get_config(self):
        config = Layer.get_config(self)
        config["alpha"] = self.alpha
        return config
