"""Merge layers for the functional API: they take a list of tensors and give one."""
from __future__ import annotations

from typing import Any

import numpy as np

from sparkdl.engine import checks
from sparkdl.engine.layers.base import Layer


class _Merge(Layer):
    is_merge = True

    def _shapes(self, input_shape: Any) -> list[tuple]:
        if not isinstance(input_shape, (list, tuple)) or not input_shape or \
                not all(isinstance(s, tuple) for s in input_shape) or len(input_shape) < 2:
            raise ValueError(f"{type(self).__name__} '{self.name}': expected a list of at least two "
                             f"inputs, received {input_shape!r}")
        return [tuple(s) for s in input_shape]


class Add(_Merge):
    """Element-wise sum of inputs of one shape."""

    def compute_output_shape(self, input_shape: list[tuple[int, ...]]) -> tuple[int, ...]:
        shapes = self._shapes(input_shape)
        for s in shapes[1:]:
            if s != shapes[0]:
                raise ValueError(f"Add '{self.name}': expected inputs of one shape, received shapes "
                                 f"{[(None,) + s for s in shapes]}")
        return shapes[0]

    def forward(self, xs: list[np.ndarray], training: bool = False) -> np.ndarray:
        self._n = len(xs)
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out += x
        return out

    def backward(self, dLdy: np.ndarray) -> list[np.ndarray]:
        return [dLdy] * self._n


class Concatenate(_Merge):
    """Joins inputs along ``axis`` (default the last); other axes must match."""

    def __init__(self, axis: int = -1, **kwargs: Any):
        super().__init__(**kwargs)
        if not checks.is_integer(axis) or axis == 0:
            raise checks.invalid("Concatenate", "a non-batch axis (an int other than 0)", "axis", axis)
        self.axis = int(axis)

    def compute_output_shape(self, input_shape: list[tuple[int, ...]]) -> tuple[int, ...]:
        shapes = self._shapes(input_shape)
        ndim = len(shapes[0]) + 1
        axis = self.axis % ndim
        if not -ndim <= self.axis < ndim or axis == 0 or any(len(s) + 1 != ndim for s in shapes):
            raise ValueError(f"Concatenate '{self.name}': expected inputs of equal rank with axis "
                             f"{self.axis} inside it, received shapes {[(None,) + s for s in shapes]}")
        rest = [s[:axis - 1] + s[axis:] for s in shapes]
        if any(r != rest[0] for r in rest):
            raise ValueError(f"Concatenate '{self.name}': expected shapes that match except on axis "
                             f"{self.axis}, received {[(None,) + s for s in shapes]}")
        size = sum(s[axis - 1] for s in shapes)
        return shapes[0][:axis - 1] + (size,) + shapes[0][axis:]

    def forward(self, xs: list[np.ndarray], training: bool = False) -> np.ndarray:
        self._sizes = [x.shape[self.axis] for x in xs]
        return np.concatenate(xs, axis=self.axis)

    def backward(self, dLdy: np.ndarray) -> list[np.ndarray]:
        return np.split(dLdy, np.cumsum(self._sizes)[:-1], axis=self.axis)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["axis"] = self.axis
        return config
