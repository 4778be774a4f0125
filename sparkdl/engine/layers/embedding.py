"""Embedding: integer ids to dense vectors, with a gradient that touches only the rows used.

After backward, ``touched_rows["embeddings"]`` lists the rows that received gradient; the
model hands them to the optimizer, which then updates (and advances the state of) only those
rows — the cost of a step grows with the batch, not with the vocabulary.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from sparkdl.engine import checks, initializers
from sparkdl.engine.layers.base import InitializerLike, Layer


class Embedding(Layer):
    input_dtype = "int64"
    sparse_params = ("embeddings",)

    def __init__(self, input_dim: int, output_dim: int,
                 embeddings_initializer: InitializerLike = "random_uniform",
                 input_length: int | None = None, **kwargs: Any):
        input_dim = checks.integer(input_dim, "input_dim", "Embedding", above=0)
        output_dim = checks.integer(output_dim, "output_dim", "Embedding", above=0)
        if input_length is not None:
            # Keras 2's spelling of input_shape=(input_length,) (input_dim is the vocabulary).
            if kwargs.get("input_shape") is not None:
                raise TypeError(f"Embedding: expected input_shape or input_length, not both; received "
                                f"input_shape={kwargs['input_shape']!r} and input_length={input_length!r}")
            kwargs["input_shape"] = (checks.integer(input_length, "input_length", "Embedding", above=0),)
        super().__init__(**kwargs)
        self.input_dim, self.output_dim = input_dim, output_dim
        self.embeddings_initializer = embeddings_initializer
        self.touched_rows = {"embeddings": np.zeros(0, dtype=np.int64)}

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.add_weight("embeddings", (self.input_dim, self.output_dim), self.embeddings_initializer)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape) + (self.output_dim,)

    def _check_ids(self, ids: np.ndarray) -> None:
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"Embedding '{self.name}': expected integer ids, received dtype {ids.dtype} "
                            f"(declare the input with Input(shape, dtype='int64'))")
        if ids.size:
            lo, hi = ids.min(), ids.max()
            if lo < 0 or hi >= self.input_dim:
                raise ValueError(f"Embedding '{self.name}': expected ids in [0, {self.input_dim - 1}] "
                                 f"(input_dim={self.input_dim}), received values in [{lo}, {hi}]")

    def forward(self, ids: npt.ArrayLike, training: bool = False) -> np.ndarray:
        ids = np.asarray(ids)
        self._check_ids(ids)
        if training:
            self._ids = ids
        return self.params["embeddings"][ids]

    def backward(self, dLdy: np.ndarray) -> None:
        flat_ids = self._ids.reshape(-1)
        rows, inverse = np.unique(flat_ids, return_inverse=True)
        summed = np.zeros((len(rows), self.output_dim), dtype=dLdy.dtype)
        np.add.at(summed, inverse, dLdy.reshape(-1, self.output_dim))
        grad = self.grads["embeddings"]
        # Keep the dense gradient exact: clear the rows of the previous step, write this one's.
        grad[self.touched_rows["embeddings"]] = 0
        grad[rows] = summed
        self.touched_rows = {"embeddings": rows}
        return None  # ids have no gradient

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(input_dim=self.input_dim, output_dim=self.output_dim,
                      embeddings_initializer=initializers.serialize(self.embeddings_initializer))
        return config
