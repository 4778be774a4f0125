"""Core layers: Input, Dense, Dropout, Flatten, Reshape."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from sparkdl.engine import checks, initializers
from sparkdl.engine.layers.base import ActivatedLayer, ActivationLike, InitializerLike, Layer
from sparkdl.engine.symbolic import SymbolicTensor, check_dtype


class InputLayer(Layer):
    """Marks the model's input: its shape (no batch axis) and dtype. Identity in computation."""

    def __init__(self, shape: int | Sequence[int] | None = None, dtype: npt.DTypeLike = "float32",
                 name: str | None = None, input_shape: int | Sequence[int] | None = None):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("InputLayer: expected a shape such as (784,), received None")
        super().__init__(name=name)
        self.shape = checks.shape(shape, "shape", "Input")
        self.dtype: str = check_dtype(dtype)
        self.ensure_built(self.shape)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return x

    def backward(self, dLdy: np.ndarray) -> np.ndarray:
        return dLdy

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def Input(shape: int | Sequence[int], dtype: npt.DTypeLike = "float32", name: str | None = None) -> SymbolicTensor:
    """A symbolic model input of the given shape (batch axis excluded), Keras-style."""
    layer = InputLayer(shape, dtype=dtype, name=name)
    return SymbolicTensor(layer.shape, layer.dtype, layer, [])


class Dense(ActivatedLayer):
    """``activation(x @ kernel + bias)`` over the last axis."""

    def __init__(self, units: int, activation: ActivationLike = None, use_bias: bool = True,
                 kernel_initializer: InitializerLike = "glorot_uniform",
                 bias_initializer: InitializerLike = "zeros", **kwargs: Any):
        units = checks.integer(units, "units", "Dense", above=0)
        super().__init__(activation=activation, **kwargs)
        self.units = units
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self._x: np.ndarray | None = None

    def build(self, input_shape: tuple[int, ...]) -> None:
        if len(input_shape) < 1:
            raise ValueError(f"Dense '{self.name}': expected inputs with a feature axis, "
                             f"received shape {(None,) + tuple(input_shape)}")
        self.add_weight("kernel", (input_shape[-1], self.units), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape[:-1]) + (self.units,)

    def _linear_forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if x.ndim != 2:
            lead = x.shape[:-1]
            return self._linear_forward(x.reshape(-1, x.shape[-1]), training).reshape(lead + (self.units,))
        if training:
            self._x = x
        z = x @ self.params["kernel"]
        if self.use_bias:
            z += self.params["bias"]
        return z

    def _linear_backward(self, dLdz: np.ndarray) -> np.ndarray | None:
        x = self._x
        assert x is not None, "backward follows a forward pass in training mode"
        shape = dLdz.shape
        dLdz = dLdz.reshape(-1, self.units)
        kernel_grad = self.grads["kernel"]
        if kernel_grad.dtype == dLdz.dtype:
            np.matmul(x.T, dLdz, out=kernel_grad)
        else:
            kernel_grad[...] = x.T @ dLdz
        if self.use_bias:
            np.sum(dLdz, axis=0, out=self.grads["bias"])
        if not self.needs_input_grad:
            return None
        dLdx = dLdz @ self.params["kernel"].T
        return dLdx.reshape(shape[:-1] + (x.shape[-1],))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(units=self.units, use_bias=self.use_bias,
                      kernel_initializer=initializers.serialize(self.kernel_initializer),
                      bias_initializer=initializers.serialize(self.bias_initializer))
        return config


class Dropout(Layer):
    """Zeroes a fraction ``rate`` of activations in training and rescales the rest."""

    stochastic = True

    def __init__(self, rate: float, seed: int | None = None, **kwargs: Any):
        rate = checks.fraction(rate, "rate", "Dropout")
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._mask: np.ndarray | None = None

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.rate == 0:
            self._mask = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.rate
        self._mask = keep.astype(x.dtype) * np.asarray(1.0 / (1.0 - self.rate), dtype=x.dtype)
        return x * self._mask

    def backward(self, dLdy: np.ndarray) -> np.ndarray:
        return dLdy if self._mask is None else dLdy * self._mask

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


class Flatten(Layer):
    """Collapses every axis but the batch axis."""

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(input_shape)),)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._in_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dLdy: np.ndarray) -> np.ndarray:
        return dLdy.reshape(self._in_shape)


class Reshape(Layer):
    """Reshapes each example to ``target_shape`` (one entry may be -1)."""

    def __init__(self, target_shape: Sequence[int], **kwargs: Any):
        super().__init__(**kwargs)
        try:
            target = tuple(int(v) for v in target_shape)
        except TypeError:
            raise TypeError(f"Reshape: expected target_shape as a tuple of ints, "
                            f"received {target_shape!r}") from None
        if sum(v == -1 for v in target) > 1 or any(v == 0 or v < -1 for v in target):
            raise ValueError(f"Reshape: expected positive sizes and at most one -1, "
                             f"received target_shape={target_shape!r}")
        self.target_shape = target

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        total = int(np.prod(input_shape))
        known = int(np.prod([v for v in self.target_shape if v != -1]))
        if -1 in self.target_shape:
            if total % known:
                raise ValueError(f"Reshape '{self.name}': cannot reshape inputs of shape "
                                 f"{(None,) + tuple(input_shape)} to {(None,) + self.target_shape}")
            return tuple(total // known if v == -1 else v for v in self.target_shape)
        if known != total:
            raise ValueError(f"Reshape '{self.name}': cannot reshape inputs of shape "
                             f"{(None,) + tuple(input_shape)} ({total} values) to "
                             f"{(None,) + self.target_shape} ({known} values)")
        return self.target_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._in_shape = x.shape
        return x.reshape((x.shape[0],) + self.output_shape)  # type: ignore[operator]  # set once built

    def backward(self, dLdy: np.ndarray) -> np.ndarray:
        return dLdy.reshape(self._in_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["target_shape"] = list(self.target_shape)
        return config
