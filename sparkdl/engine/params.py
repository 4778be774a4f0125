"""The flat parameter buffer: every weight of a model is a view into one contiguous vector.

A model owns two `FlatBuffer`s: one for trainable parameters (with a twin vector of
gradients) and one for non-trainable state such as BatchNorm moving statistics. Averaging,
broadcasting, pushing to a parameter server and checkpointing are then single vector
operations, and optimizers update the whole model with a handful of NumPy calls.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

DTYPE = np.float32


class FlatBuffer:
    """Packs named arrays owned by layers into one float32 vector and rebinds them as views.

    ``slots`` is a list of ``(owner_dict, key)`` pairs: after packing, ``owner_dict[key]`` is a
    view into ``values``. With ``with_grads=True`` a second vector of the same size holds the
    gradients, and ``grad_dicts`` (parallel to ``slots``) receive views into it.
    """

    def __init__(self, slots: list[tuple[dict, str]], grad_dicts: list[dict] | None = None):
        self.slots = slots
        self.shapes = [np.shape(d[k]) for d, k in slots]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes, dtype=np.int64)]).astype(np.int64)
        self.size = int(self.offsets[-1])
        self.values = np.zeros(self.size, dtype=DTYPE)
        self._value_views = [self.view(self.values, i) for i in range(len(slots))]
        for (d, k), view in zip(slots, self._value_views):
            view[...] = d[k]
            d[k] = view
        self.grads = None
        self.grad_dicts = grad_dicts
        self._grad_views = []
        if grad_dicts is not None:
            self.grads = np.zeros(self.size, dtype=DTYPE)
            self._grad_views = [self.view(self.grads, i) for i in range(len(slots))]
            for (_, k), gd, view in zip(slots, grad_dicts, self._grad_views):
                gd[k] = view

    def ranges(self, indices: Iterable[int]) -> list[tuple[int, int]]:
        """``(start, stop)`` of the slots at ``indices`` in the flat vectors, adjacent ones merged."""
        out: list[tuple[int, int]] = []
        for i in sorted(indices):
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], b)
            elif b > a:
                out.append((a, b))
        return out

    def view(self, vector: np.ndarray, i: int) -> np.ndarray:
        return vector[self.offsets[i]:self.offsets[i + 1]].reshape(self.shapes[i])

    def arrays(self) -> list[np.ndarray]:
        return list(self._value_views)

    def grad_arrays(self) -> list[np.ndarray]:
        return list(self._grad_views)

    def sync_grads(self, indices: Iterable[int] | None = None) -> None:
        """Re-attach gradients that a custom layer rebound instead of writing in place (those
        of the slots at ``indices``, or all)."""
        assert self.grad_dicts is not None, "only a buffer made with grad_dicts has gradients"
        for i in range(len(self.slots)) if indices is None else indices:
            (_, k), gd, view = self.slots[i], self.grad_dicts[i], self._grad_views[i]
            g = gd[k]
            if g is not view:
                if np.shape(g) != view.shape:
                    raise ValueError(f"gradient '{k}' has shape {np.shape(g)}, "
                                     f"expected {view.shape} (the shape of the parameter)")
                view[...] = g
                gd[k] = view

    def sync_values(self) -> None:
        """Re-attach values that a custom layer rebound (e.g. ``self.params['w'] = new``)."""
        for (d, k), view in zip(self.slots, self._value_views):
            if d[k] is not view:
                view[...] = d[k]
                d[k] = view

    def relocate(self, values: np.ndarray, copy: bool = True) -> None:
        """Move the values into ``values`` (a float32 vector of ``size``: e.g. a memory-mapped
        file; ``copy=False`` when it holds them already) and rebind every owner's array to
        views of it; the old vector is no longer used. Gradients stay where they are."""
        if values.dtype != DTYPE or values.shape != (self.size,):
            raise ValueError(f"expected a float32 vector of shape ({self.size},), received "
                             f"{values.dtype} {values.shape}")
        if copy:
            values[...] = self.values
        self.values = values
        self._value_views = [self.view(values, i) for i in range(len(self.slots))]
        for (d, k), view in zip(self.slots, self._value_views):
            d[k] = view

    def set_flat(self, vector: npt.ArrayLike) -> None:
        vector = np.asarray(vector)
        if vector.shape != (self.size,):
            raise ValueError(f"expected a flat vector of shape ({self.size},), received {vector.shape}")
        self.values[...] = vector
