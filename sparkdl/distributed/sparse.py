"""Row-sparse views of a model's vector: what a worker pulls and pushes for models with
embedding tables, instead of the whole vector.

The vector is the parameter server's (``worker.model_vector``): the trainable weights — the
dense parameters first, then each embedding table as ``rows x dim`` (``Model.dense_size``,
``Model.row_tables``) — followed by the moving statistics. ``ParamMap`` names those parts:
the *dense part* is the dense weights followed by the moving statistics, ``dense_length``
values; a table's rows are addressed by id.

What travels (``RowSlice``): the dense part, and per table the sorted unique ids with their
rows. A pull asks for the ids the next steps will read (``touched_ids`` from the batch
plans, before training); a push carries the dense update and the rows that changed
(``RowSlice.changed``; in gradients mode every touched row, whose lazy optimizer step runs
even at a zero gradient). Bytes of a push: ``4 * dense_length + sum_t n_t * (id_bytes + 4 *
dim_t)`` for ``n_t`` rows of table ``t``; ids are int32 while every table has fewer than
2**31 rows, else int64. Gathering and scattering copy float32 values, and updates are the
element-wise differences (or sums) of the same values the whole-vector path would compute,
so the two paths give equal results (``-0.0`` aside, which compares equal to ``0.0``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sparkdl.engine.training import BatchPlan


@dataclass(frozen=True)
class Table:
    """An embedding table inside the vector: ``rows x dim`` float32 from ``offset``, read by
    ids from the model input ``input_index``, ``per_example`` ids an example."""
    name: str
    offset: int
    rows: int
    dim: int
    input_index: int
    per_example: int = 1


class ParamMap:
    """Where a model's vector keeps its dense values and its embedding tables.

    ``size`` = weights + moving statistics (the parameter server's vector); ``dense_size``
    dense weights at the start; tables after them, up to ``weights_size``; statistics after.
    """

    def __init__(self, weights_size: int, state_size: int, dense_size: int, tables: Sequence[Table]):
        self.weights_size, self.state_size, self.dense_size = int(weights_size), int(state_size), int(dense_size)
        self.size = self.weights_size + self.state_size
        self.tables = list(tables)
        self.dense_length = self.dense_size + self.state_size
        covered = self.dense_size + sum(t.rows * t.dim for t in self.tables)
        if covered != self.weights_size:
            raise ValueError(f"ParamMap: the dense part ({self.dense_size}) and the tables "
                             f"({covered - self.dense_size}) cover {covered} weights, expected "
                             f"{self.weights_size}")
        self.id_dtype = np.dtype(np.int32 if all(t.rows < 2**31 for t in self.tables) else np.int64)

    @classmethod
    def from_model(cls, model) -> ParamMap:
        """The map of a built model. Each table's layer must read a model input directly (its
        ids are then known from the batch plan before the steps run): ValueError otherwise."""
        tables = []
        for layer, key, offset in model.row_tables():
            index = model.feeding_input(layer)
            if index is None:
                raise ValueError(f"row-sparse traffic: expected layer '{layer.name}' to read its ids "
                                 f"from a model input directly (its rows are pulled by the ids of the "
                                 f"next batches), received a layer fed by another layer")
            rows, dim = layer.params[key].shape[0], int(np.prod(layer.params[key].shape[1:]))
            per_example = int(np.prod(model.input_specs()[index][0]))
            tables.append(Table(f"{layer.name}/{key}", offset, rows, dim, index, per_example))
        return cls(model.flat_weights.size, model.flat_state.size, model.dense_size, tables)

    # ---- views of a whole vector, or of a model's weights and statistics -------------------------
    def table(self, weights: np.ndarray, t: int) -> np.ndarray:
        """Table ``t`` of a whole vector (or of ``flat_weights``), as a ``rows x dim`` view."""
        tab = self.tables[t]
        return weights[tab.offset:tab.offset + tab.rows * tab.dim].reshape(tab.rows, tab.dim)

    def dense(self, vector: np.ndarray) -> np.ndarray:
        """The dense part of a whole vector (a new array)."""
        return np.concatenate([vector[:self.dense_size], vector[self.weights_size:self.size]])

    def take(self, vector: np.ndarray, ids: Sequence[np.ndarray]) -> RowSlice:
        """The dense part and the rows ``ids[t]`` of each table of a whole vector (copies)."""
        return self._take(vector[:self.weights_size], vector[self.weights_size:self.size], ids)

    def take_model(self, model, ids: Sequence[np.ndarray]) -> RowSlice:
        """As ``take``, from a model's ``flat_weights`` and ``flat_state``."""
        return self._take(model.flat_weights, model.flat_state, ids)

    def _take(self, weights: np.ndarray, state: np.ndarray, ids: Sequence[np.ndarray]) -> RowSlice:
        self.check_ids(ids)
        return RowSlice(np.concatenate([weights[:self.dense_size], state]),
                        [np.asarray(i, self.id_dtype) for i in ids],
                        [self.table(weights, t)[i] for t, i in enumerate(ids)])

    def put(self, vector: np.ndarray, part: RowSlice) -> None:
        """Write a slice's dense part and rows into a whole vector (the rest is left as it is)."""
        self._put(vector[:self.weights_size], vector[self.weights_size:self.size], part)

    def put_model(self, model, part: RowSlice) -> None:
        """As ``put``, into a model's ``flat_weights`` and ``flat_state``."""
        self._put(model.flat_weights, model.flat_state, part)

    def _put(self, weights: np.ndarray, state: np.ndarray, part: RowSlice) -> None:
        weights[:self.dense_size] = part.dense[:self.dense_size]
        state[...] = part.dense[self.dense_size:]
        for t, (ids, rows) in enumerate(zip(part.ids, part.rows)):
            self.table(weights, t)[ids] = rows

    def check_ids(self, ids: Sequence[np.ndarray]) -> None:
        """``ids`` has one sorted array of unique in-range ids per table, or ValueError."""
        if len(ids) != len(self.tables):
            raise ValueError(f"expected ids for {len(self.tables)} tables, received {len(ids)}")
        for tab, i in zip(self.tables, ids):
            i = np.asarray(i)
            if i.ndim != 1 or not np.issubdtype(i.dtype, np.integer):
                raise ValueError(f"table {tab.name}: expected a 1-d integer array of ids, received "
                                 f"{i.dtype} of shape {i.shape}")
            if i.size and (i[0] < 0 or i[-1] >= tab.rows or np.any(np.diff(i) <= 0)):
                raise ValueError(f"table {tab.name}: expected sorted unique ids in [0, {tab.rows}), "
                                 f"received {i.size} ids in [{i.min()}, {i.max()}]")

    def capacity(self, steps: int, batch_size: int) -> list[int]:
        """Per table, the most rows ``steps`` batches of ``batch_size`` examples can touch."""
        return [min(t.rows, steps * batch_size * t.per_example) for t in self.tables]

    # ---- what the next steps touch ----------------------------------------------------------------
    def ids_in(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per table, the sorted unique ids that the rows ``xs`` read (their inputs' ids)."""
        by_input = {tab.input_index: np.unique(np.asarray(xs[tab.input_index]).reshape(-1)).astype(self.id_dtype)
                    for tab in self.tables}
        return [by_input[tab.input_index] for tab in self.tables]

    def touched_ids(self, xs: Sequence[np.ndarray], plans: Sequence[BatchPlan]) -> list[np.ndarray]:
        """Per table, the sorted unique ids that the batches of ``plans`` (slices of passes over
        the block ``xs``, as the worker will train them) read: the rows a pull must bring."""
        by_input: dict[int, np.ndarray] = {}      # tables that read the same input touch the same ids
        for tab in self.tables:
            if tab.input_index in by_input:
                continue
            column = xs[tab.input_index]
            parts = []
            for plan in plans:
                if not plan.bounds:
                    continue
                lo, hi = plan.bounds[0][0], plan.bounds[-1][1]
                parts.append(column[plan.rows] if plan.rows is not None else column[lo:hi])
            ids = np.unique(np.concatenate([p.reshape(-1) for p in parts])) if parts else np.zeros(0)
            by_input[tab.input_index] = ids.astype(self.id_dtype)
        return [by_input[tab.input_index] for tab in self.tables]


@dataclass
class RowSlice:
    """Part of a vector: the dense part, and per table sorted unique ``ids`` with their
    ``rows`` (``len(ids[t]) x dim_t`` float32). What a pull returns and a push carries."""
    dense: np.ndarray
    ids: list[np.ndarray]
    rows: list[np.ndarray]

    @property
    def nbytes(self) -> int:
        """Bytes of the values and ids (what travels, headers aside)."""
        return self.dense.nbytes + sum(i.nbytes + r.nbytes for i, r in zip(self.ids, self.rows))

    def flat(self) -> np.ndarray:
        """The values, dense part then rows, as one new vector (for checks)."""
        return np.concatenate([self.dense, *(r.reshape(-1) for r in self.rows)])

    def minus(self, base: RowSlice) -> RowSlice:
        """``self - base`` on the same ids: the change a worker's steps made since its pull."""
        return RowSlice(self.dense - base.dense, list(self.ids),
                        [a - b for a, b in zip(self.rows, base.rows)])

    def changed(self) -> RowSlice:
        """The same update without the rows that are all zeros (untouched by the steps)."""
        keep = [np.any(r != 0, axis=1) for r in self.rows]
        return RowSlice(self.dense, [i[k] for i, k in zip(self.ids, keep)],
                        [r[k] for r, k in zip(self.rows, keep)])
