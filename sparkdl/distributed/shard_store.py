"""What one shard of the sharded parameter server holds, and the arithmetic on it.

A ``ShardStore`` keeps shard k's part of a model's vector (``shard_layout.ShardLayout``) as
one local vector — its dense weights, its rows of each table in id order, its moving
statistics — with the optimizer slots of gradients mode beside it (element for element, so
each row's slots live with the row). It reads requests (ids and counts, pushes of values
and ids), gathers rows, steps the optimizer on the dense weights and the pushed rows only,
and saves and restores its state. The services (``shards.ShardServer`` for the async modes,
``shard_rounds.ShardRounds`` for sync rounds) say when a push is applied.

A push's bytes: float32 ``[dense range | rows of table 0 | ...]`` followed by the ids
(table after table, ``counts[t]`` of table ``t``, in ``ParamMap.id_dtype``).
"""
from __future__ import annotations

import copy
import threading
from collections.abc import Mapping

import numpy as np

from sparkdl.distributed import admission
from sparkdl.distributed.protocol import Frame, Op
from sparkdl.distributed.server import Refused
from sparkdl.distributed.shard_layout import ShardLayout
from sparkdl.engine import checks, files


class ShardStore:
    """Shard ``shard`` of ``layout``: ``values`` (``layout.shard_values``) and, with an
    ``optimizer`` (the store steps a copy), its slots."""

    def __init__(self, layout: ShardLayout, shard: int, values: np.ndarray, optimizer=None):
        self.layout, self.shard = layout, int(shard)
        self.dw, self.ds = layout.dense_split(self.shard)
        self.owned = layout.owned_ids(self.shard)
        counts = [len(i) for i in self.owned]
        dims = [t.dim for t in layout.map.tables]
        self.row_offsets = np.concatenate([[self.dw], self.dw + np.cumsum([n * d for n, d in zip(counts, dims)])])
        self.values = np.array(values, np.float32).reshape(-1)
        if self.values.size != int(self.row_offsets[-1]) + self.ds:
            raise ValueError(f"{type(self).__name__}: shard {shard} holds {int(self.row_offsets[-1]) + self.ds} "
                             f"values, received {self.values.size}")
        self.optimizer = copy.deepcopy(optimizer)
        self._grads = None if optimizer is None else np.zeros(int(self.row_offsets[-1]), np.float32)
        self._lock = threading.Lock()
        idbytes = layout.map.id_dtype.itemsize
        owned = sum(counts)
        self.max_data = 4 * self.values.size + idbytes * owned
        self.data_limits = {Op.PULL: max(idbytes * owned, 1)}
        self.stats = {"pushes": 0, "duplicates": 0, "pulls": 0, "bytes_pushed": 0, "bytes_pulled": 0,
                      "rows_pushed": 0, "rows_pulled": 0, "waits": 0,
                      "epoch_max_staleness": 0}       # (ssp: the widest clock gap a pull saw this epoch)

    def snapshot(self) -> np.ndarray:
        """A copy of the local vector."""
        with self._lock:
            return self.values.copy()

    def state(self) -> dict[str, np.ndarray]:
        """Values, optimizer slots and steps: what a checkpoint keeps of this shard."""
        with self._lock:
            out = {"values": self.values.copy(),
                   "layout": np.array([self.shard, self.layout.num_shards, self.values.size], np.int64)}
            if self.optimizer is not None:
                out.update(self.optimizer.get_state())
            return out

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Take back a ``state()`` of this shard of the same layout (ValueError otherwise)."""
        expected = [self.shard, self.layout.num_shards, self.values.size]
        if list(np.asarray(state.get("layout", [])).tolist()) != expected:
            raise ValueError(f"ShardStore.restore: expected the state of shard {self.shard} of "
                             f"{self.layout.num_shards} ({self.values.size} values), received "
                             f"{np.asarray(state.get('layout')).tolist()}")
        with self._lock:
            self.values[...] = state["values"]
            if self.optimizer is not None:
                self.optimizer.reset_slots()
                self.optimizer.set_state(dict(state))

    def save(self, path: str) -> None:
        """Write ``state()`` to ``path`` atomically (a crash leaves the old file or the new)."""
        files.atomic_write(path, files.npz_bytes(self.state()))

    def load(self, path: str) -> None:
        with open(path, "rb") as f:
            self.restore(files.npz_arrays(f.read(), path, "ShardStore.load"))

    # ---- reading requests -------------------------------------------------------------------------
    def _local_index(self, counts: list[int], ids: np.ndarray) -> list[np.ndarray]:
        """Per table, the local row index of the requested ids (Refused unless the shard holds
        each, sorted and unique)."""
        out, at = [], 0
        for t, (n, owned) in enumerate(zip(counts, self.owned)):
            want = ids[at:at + n]
            at += n
            pos = np.searchsorted(owned, want)
            found = owned.size and np.all(pos < owned.size) and np.all(owned[np.minimum(pos, owned.size - 1)] == want)
            if n and (not found or np.any(np.diff(want) <= 0)):
                raise Refused(f"table {t}: expected sorted unique ids that shard {self.shard} holds")
            out.append(pos)
        return out

    def _counts(self, meta: dict, total: int) -> list[int]:
        counts = meta.get("counts")
        tables = len(self.owned)
        if not isinstance(counts, list) or len(counts) != tables or \
                not all(checks.is_integer(c) and 0 <= c <= o.size for c, o in zip(counts, self.owned)) or \
                sum(counts) != total:
            raise Refused(f"expected counts of {tables} tables adding up to the {total} ids sent, "
                          f"received {admission.shown(counts)}")
        return [int(c) for c in counts]

    def _ids(self, array: np.ndarray | None, what: str) -> np.ndarray:
        dtype = self.layout.map.id_dtype
        if array is None or array.ndim != 1 or array.dtype != dtype:
            got = None if array is None else (array.dtype.name, array.shape)
            raise Refused(f"expected the ids of {what} as a 1-d {dtype.name} array, received {got}")
        return array

    def _rows_view(self, t: int, pos: np.ndarray, vector: np.ndarray) -> np.ndarray:
        lo, hi = int(self.row_offsets[t]), int(self.row_offsets[t + 1])
        return vector[lo:hi].reshape(-1, self.layout.map.tables[t].dim)[pos]

    def _pull_index(self, frame: Frame) -> tuple[list[int], list[np.ndarray]]:
        """A pull's counts and the local rows of its ids."""
        ids = self._ids(frame.array if frame.array is not None else np.zeros(0, self.layout.map.id_dtype),
                        "a pull")
        counts = self._counts(frame.meta, ids.size)
        return counts, self._local_index(counts, ids)

    def _push_parts(self, frame: Frame) -> tuple[np.ndarray, list[np.ndarray]]:
        """A push's float32 values ``[dense weights | rows ... | statistics]`` (a view of the
        frame) and the local rows of its ids, or Refused."""
        meta, payload = frame.meta, frame.array
        if payload is None or payload.dtype != np.uint8 or payload.ndim != 1:
            raise Refused("expected a push as a 1-d uint8 array")
        dims = [t.dim for t in self.layout.map.tables]
        dense = self.dw + self.ds
        counts = meta.get("counts")
        floats = dense + sum(c * d for c, d in zip(counts, dims)) if isinstance(counts, list) and \
            all(checks.is_integer(c) for c in counts) else -1
        idbytes = self.layout.map.id_dtype.itemsize
        n_ids = (payload.size - 4 * floats) // idbytes if floats >= 0 else -1
        if floats < 0 or n_ids < 0 or 4 * floats + idbytes * n_ids != payload.size:
            raise Refused(f"expected a push of {dense} dense values and the rows and ids its counts "
                          f"say, received {payload.size} bytes with counts {admission.shown(counts)}")
        counts = self._counts(meta, n_ids)
        ids = np.frombuffer(payload, self.layout.map.id_dtype, n_ids, 4 * floats)
        return payload[:4 * floats].view(np.float32), self._local_index(counts, ids)

    def _spans(self, update: np.ndarray, index: list[np.ndarray]) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(table, local rows, their values)`` of a push laid out as ``_push_parts`` gives it."""
        spans, at = [], self.dw
        for t, pos in enumerate(index):
            dim = self.layout.map.tables[t].dim
            spans.append((t, pos, update[at:at + pos.size * dim].reshape(-1, dim)))
            at += pos.size * dim
        return spans

    # ---- the arithmetic ---------------------------------------------------------------------------
    def _gather(self, index: list[np.ndarray]) -> np.ndarray:
        """A pull's answer: dense weights, the rows at ``index``, statistics (a new array)."""
        v = self.values
        return np.concatenate([v[:self.dw], *(self._rows_view(t, p, v).reshape(-1) for t, p in enumerate(index)),
                               v[v.size - self.ds:]])

    def _element_index(self, t: int, pos: np.ndarray) -> np.ndarray:
        """Local element indices of rows ``pos`` of table ``t``."""
        dim = self.layout.map.tables[t].dim
        return (int(self.row_offsets[t]) + pos[:, None] * dim + np.arange(dim)).reshape(-1)

    def _step(self, dense_grads: np.ndarray, row_grads: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """One optimizer step on the dense weights (``dense_grads``) and on the rows of
        ``row_grads`` (``(table, local rows, gradients)``); the other rows and their slots stay
        as they are, as ``Optimizer.apply`` with a ``sparse_index`` leaves them."""
        grads = self._grads
        assert grads is not None and self.optimizer is not None, "a store with an optimizer steps"
        grads[:self.dw] = dense_grads
        flat = []
        for t, pos, g in row_grads:
            at = self._element_index(t, pos)
            grads[at] = g.reshape(-1)
            flat.append(at)
        sparse_index = np.concatenate(flat) if flat else np.zeros(0, np.int64)
        self.optimizer.apply(self.values[:grads.size], grads, dense_size=self.dw, sparse_index=sparse_index)
