"""Batch normalisation over axis 1: the features of (N, F) inputs or the channels of NCHW."""
from __future__ import annotations

from typing import Any

import numpy as np

from sparkdl.engine import checks
from sparkdl.engine.layers.base import Layer


class BatchNorm(Layer):
    """``gamma * (x - mean) / sqrt(var + epsilon) + beta`` per feature/channel.

    In training the batch's mean and (biased) variance are used and the moving statistics
    follow them: ``moving = momentum * moving + (1 - momentum) * batch`` (Keras). In inference
    the moving statistics are used.
    """

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, **kwargs: Any):
        super().__init__(**kwargs)
        self.momentum = checks.fraction(momentum, "momentum", "BatchNorm")
        self.epsilon = checks.number(epsilon, "epsilon", "BatchNorm", above=0)

    def build(self, input_shape: tuple[int, ...]) -> None:
        if len(input_shape) not in (1, 3):
            raise ValueError(f"BatchNorm '{self.name}': expected (features,) or (channels, height, "
                             f"width) inputs, received shape {(None,) + tuple(input_shape)}")
        c = input_shape[0]
        self.add_weight("gamma", (c,), "ones")
        self.add_weight("beta", (c,), "zeros")
        self.add_weight("moving_mean", (c,), "zeros", trainable=False)
        self.add_weight("moving_variance", (c,), "ones", trainable=False)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def _as3d(self, x: np.ndarray) -> np.ndarray:
        """View as (N, C, S) so every reduction runs over axes 0 and 2."""
        return x.reshape(x.shape[0], x.shape[1], -1)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x3 = self._as3d(x)
        gamma, beta = self.params["gamma"], self.params["beta"]
        if not training:
            scale = gamma / np.sqrt(self.state["moving_variance"] + self.epsilon)
            shift = beta - self.state["moving_mean"] * scale
            return (x3 * scale[:, None].astype(x.dtype) + shift[:, None].astype(x.dtype)).reshape(x.shape)
        mean = x3.mean(axis=(0, 2))
        centered = x3 - mean[:, None]
        var = np.mean(centered * centered, axis=(0, 2))
        inv_std = 1.0 / np.sqrt(var + self.epsilon)
        xhat = centered * inv_std[:, None]
        self._xhat, self._inv_std = xhat, inv_std
        m = self.momentum
        self.state["moving_mean"][...] = m * self.state["moving_mean"] + (1 - m) * mean
        self.state["moving_variance"][...] = m * self.state["moving_variance"] + (1 - m) * var
        return (xhat * gamma[:, None] + beta[:, None]).reshape(x.shape)

    def backward(self, dLdy: np.ndarray) -> np.ndarray | None:
        dy = self._as3d(dLdy)
        xhat, inv_std = self._xhat, self._inv_std
        count = dy.shape[0] * dy.shape[2]
        sum_dy = dy.sum(axis=(0, 2))
        sum_dy_xhat = (dy * xhat).sum(axis=(0, 2))
        self.grads["gamma"][...] = sum_dy_xhat
        self.grads["beta"][...] = sum_dy
        if not self.needs_input_grad:
            return None
        scale = (self.params["gamma"] * inv_std / count)[:, None]
        dx = scale * (count * dy - sum_dy[:, None] - xhat * sum_dy_xhat[:, None])
        return dx.astype(dLdy.dtype, copy=False).reshape(dLdy.shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(momentum=self.momentum, epsilon=self.epsilon)
        return config
