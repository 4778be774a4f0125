"""Convolution and pooling layers on NCHW inputs (channels first)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sparkdl.engine import checks, conv_ops, initializers
from sparkdl.engine.layers.base import ActivatedLayer, ActivationLike, InitializerLike, Layer


class _Spatial(Layer):
    """Shared geometry of conv and pooling layers: kernel, strides, padding -> output size;
    and the workspace of reusable buffers their training passes run in (see conv_ops)."""

    own_threads = True
    _ws: dict | None = None
    strides: tuple[int, int]
    padding: str

    def _workspace(self, training: bool) -> dict | None:
        if not training:
            return None
        if self._ws is None:
            self._ws = {}
        return self._ws

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_ws", None)  # scratch buffers: rebuilt by the next training pass
        return state

    def _geometry(self, input_shape: tuple[int, ...],
                  kernel: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} '{self.name}': expected inputs of shape "
                             f"(None, channels, height, width), received {(None,) + tuple(input_shape)}")
        _, h, w = input_shape
        oh, top, bottom = conv_ops.out_size_and_pads(h, kernel[0], self.strides[0], self.padding)
        ow, left, right = conv_ops.out_size_and_pads(w, kernel[1], self.strides[1], self.padding)
        if oh <= 0 or ow <= 0 or h + top + bottom < kernel[0] or w + left + right < kernel[1]:
            raise ValueError(f"{type(self).__name__} '{self.name}': the {kernel[0]}x{kernel[1]} kernel "
                             f"is larger than the padded input ({h + top + bottom}x{w + left + right}) "
                             f"of inputs of shape {(None,) + tuple(input_shape)}")
        return (oh, ow), (top, bottom, left, right)

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != 4 or x.shape[1:] != tuple(self.input_shape):  # type: ignore[arg-type]  # set once built
            raise ValueError(f"{type(self).__name__} '{self.name}': expected inputs of shape "
                             f"{(None,) + tuple(self.input_shape)}, received {x.shape}")  # type: ignore[arg-type]


class Conv2D(_Spatial, ActivatedLayer):
    """2-D cross-correlation over NCHW inputs; kernel ``(filters, in_channels, kh, kw)``."""

    def __init__(self, filters: int, kernel_size: int | Sequence[int], strides: int | Sequence[int] = 1,
                 padding: str = "valid", activation: ActivationLike = None, use_bias: bool = True,
                 kernel_initializer: InitializerLike = "glorot_uniform",
                 bias_initializer: InitializerLike = "zeros", **kwargs: Any):
        filters = checks.integer(filters, "filters", "Conv2D", above=0)
        super().__init__(activation=activation, **kwargs)
        self.filters = filters
        self.kernel_size = checks.pair(kernel_size, "kernel_size", "Conv2D")
        self.strides = checks.pair(strides, "strides", "Conv2D")
        self.padding = checks.one_of(padding, ("valid", "same"), "padding", "Conv2D", ignore_case=True)
        self.use_bias = bool(use_bias)
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def build(self, input_shape: tuple[int, ...]) -> None:
        self._out_hw, self._pads = self._geometry(input_shape, self.kernel_size)
        self.add_weight("kernel", (self.filters, input_shape[0]) + self.kernel_size, self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        out_hw, _ = self._geometry(input_shape, self.kernel_size)
        return (self.filters,) + out_hw

    def _linear_forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._check_input(x)
        return conv_ops.conv2d_forward(x, self.params["kernel"], self.params.get("bias"), self.strides,
                                       self._pads, self._workspace(training))

    def _linear_backward(self, dLdz: np.ndarray) -> np.ndarray | None:
        dk, db, dx = conv_ops.conv2d_backward(dLdz, self.params["kernel"], self._ws,
                                              need_dx=self.needs_input_grad)
        self.grads["kernel"][...] = dk
        if self.use_bias:
            self.grads["bias"][...] = db
        return dx

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=list(self.kernel_size), strides=list(self.strides),
                      padding=self.padding, use_bias=self.use_bias,
                      kernel_initializer=initializers.serialize(self.kernel_initializer),
                      bias_initializer=initializers.serialize(self.bias_initializer))
        return config


class _Pool(_Spatial, Layer):
    def __init__(self, pool_size: int | Sequence[int] = 2, strides: int | Sequence[int] | None = None,
                 padding: str = "valid", **kwargs: Any):
        super().__init__(**kwargs)
        who = type(self).__name__
        self.pool_size = checks.pair(pool_size, "pool_size", who)
        self.strides = self.pool_size if strides is None else checks.pair(strides, "strides", who)
        self.padding = checks.one_of(padding, ("valid", "same"), "padding", who, ignore_case=True)

    def build(self, input_shape: tuple[int, ...]) -> None:
        self._out_hw, self._pads = self._geometry(input_shape, self.pool_size)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        out_hw, _ = self._geometry(input_shape, self.pool_size)
        return (input_shape[0],) + out_hw

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(pool_size=list(self.pool_size), strides=list(self.strides), padding=self.padding)
        return config


class MaxPool2D(_Pool):
    """Maximum over each window; on ties the first maximum (row-major) gets the gradient."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._check_input(x)
        return conv_ops.max_pool_forward(x, self.pool_size, self.strides, self._pads,
                                         self._workspace(training))

    def backward(self, dLdy: np.ndarray) -> np.ndarray:
        return conv_ops.max_pool_backward(dLdy, self._ws)


class AvgPool2D(_Pool):
    """Mean over each window's cells inside the input (padding is not counted)."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._check_input(x)
        return conv_ops.avg_pool_forward(x, self.pool_size, self.strides, self._pads,
                                         self._workspace(training))

    def backward(self, dLdy: np.ndarray) -> np.ndarray:
        return conv_ops.avg_pool_backward(dLdy, self._ws)


MaxPooling2D, AveragePooling2D = MaxPool2D, AvgPool2D  # the Keras names
