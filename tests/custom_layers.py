"""User objects the tests save and load by their registered names, in this process and in
fresh ones that import this module: a layer with a weight, an activation function with its
derivative (the protocol of ``sparkdl.engine.activations``) and an optimizer."""
from __future__ import annotations

import numpy as np

from sparkdl import layers, optimizers
from sparkdl.saving import register_serializable

PACKAGE = "sparkdl_tests"


@register_serializable(package=PACKAGE)
class Scale(layers.Layer):
    """``y = x * w``: one trainable factor per feature, starting at ``init``."""

    def __init__(self, init: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.init = float(init)

    def build(self, input_shape):
        self.add_weight("w", (input_shape[-1],), {"name": "random_uniform", "minval": self.init,
                                                  "maxval": self.init})

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, x, training=False):
        if training:
            self._x = x
        return x * self.params["w"]

    def backward(self, dLdy):
        np.sum((dLdy * self._x).reshape(-1, dLdy.shape[-1]), axis=0, out=self.grads["w"])
        return dLdy * self.params["w"]

    def get_config(self):
        config = super().get_config()
        config["init"] = self.init
        return config


@register_serializable(package=PACKAGE)
def swish(x):
    """``x * sigmoid(x)``."""
    return x / (1 + np.exp(-x))


# dy/dx = sigmoid(x) + x sigmoid(x) (1 - sigmoid(x)) = y + sigmoid(x) (1 - y)
swish.derivative = lambda x, y: y + (1 - y) / (1 + np.exp(-x))


@register_serializable(package=PACKAGE)
class SignSGD(optimizers.Optimizer):
    """``p -= learning_rate * scale * sign(g)``."""

    name = "sign_sgd"
    scale = optimizers.Hyperparameter()

    def __init__(self, learning_rate=None, scale=1.0, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.scale = scale

    def _update(self, p, g, lr, slots, tmp):
        np.sign(g, out=tmp)
        tmp *= lr * np.float32(self.scale)
        p -= tmp

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
