"""Symbolic tensors: what ``Input(...)`` returns and what calling a layer on one gives.

A SymbolicTensor records its shape (no batch axis), dtype, the layer that produced it and
that layer's symbolic inputs, so a model can later walk the graph from outputs to inputs.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias, Union

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sparkdl.engine.layers.base import Layer


class SymbolicTensor:
    def __init__(self, shape: tuple[int, ...], dtype: str, layer: Layer, inputs: list[SymbolicTensor]):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.layer = layer
        self.inputs = inputs

    def __repr__(self) -> str:
        return f"<SymbolicTensor shape={(None,) + self.shape} dtype={self.dtype} from '{self.layer.name}'>"


#: One symbolic tensor, or a list or tuple of them (the inputs of a merge layer or a model).
SymbolicTensors: TypeAlias = Union[SymbolicTensor, "list[SymbolicTensor]", "tuple[SymbolicTensor, ...]"]


def call_symbolic(layer: Layer, x: SymbolicTensor | Sequence[SymbolicTensor]) -> SymbolicTensor:
    """Build ``layer`` for the symbolic input(s) ``x`` and return its symbolic output."""
    in_shape: tuple[int, ...] | list[tuple[int, ...]]
    if isinstance(x, SymbolicTensor):
        inputs, in_shape = [x], x.shape
    else:
        inputs, in_shape = list(x), [t.shape for t in x]
    out_shape = layer.ensure_built(in_shape)
    dtype = "float32"
    return SymbolicTensor(out_shape, dtype, layer, inputs)


def check_dtype(dtype: npt.DTypeLike) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        raise TypeError(f"Input: expected a NumPy dtype name such as 'float32' or 'int64', "
                        f"received {dtype!r}") from None
    return name
