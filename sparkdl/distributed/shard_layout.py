"""Which shard of a sharded parameter server (``shards``) holds which part of a model's vector.

The dense part (``sparse.ParamMap``: dense weights, then moving statistics) is cut into K
contiguous ranges, shard k holding ``[k*D//K, (k+1)*D//K)``; row ``i`` of table ``t`` lives
on shard ``splitmix64(i ^ salt(t)) mod K``, a hash that every process computes alike, so no
directory of rows is needed, a client routes the ids it holds without anything the size of
a table, and each shard holds about 1/K of every table.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sparkdl.distributed.sparse import ParamMap
from sparkdl.engine import checks

_M64 = (1 << 64) - 1
_CHUNK = 1 << 20            # ids hashed at a time when a shard lists its rows
#: about the bytes of a piece of a shard's local vector between the driver and the shard
PIECE_BYTES = 1 << 20
#: at most the ids of a piece (hashed at once to find a shard's rows among them)
PIECE_ROWS = 1 << 16


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 values (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def shard_of(table: int, ids: np.ndarray, num_shards: int) -> np.ndarray:
    """The shard (0 … num_shards-1) of each row ``ids`` of table ``table``."""
    salt = np.uint64((int(table) * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & _M64)
    with np.errstate(over="ignore"):        # wrapping is the hash's arithmetic
        mixed = _mix(np.asarray(ids).astype(np.uint64) ^ salt)
    return (mixed % np.uint64(num_shards)).astype(np.int64)


class ShardLayout:
    """Which shard holds what (see the module docstring), for a ``ParamMap`` and K shards.
    Nothing here grows with the tables: a client routes the ids it holds by their hash, and
    only a shard lists the rows it owns (``owned_ids``, once)."""

    def __init__(self, param_map: ParamMap, num_shards: int):
        self.map = param_map
        self.num_shards = checks.integer(num_shards, "num_shards", "ShardLayout", at_least=1)
        d, k = param_map.dense_length, self.num_shards
        self.dense_bounds = [(i * d // k, (i + 1) * d // k) for i in range(k)]

    def dense_split(self, shard: int) -> tuple[int, int]:
        """``(dense weights, moving statistics)`` of the dense range ``shard`` holds."""
        a, b = self.dense_bounds[shard]
        dw = max(0, min(b, self.map.dense_size) - a)
        return dw, (b - a) - dw

    def owned_ids(self, shard: int) -> list[np.ndarray]:
        """Per table, the sorted ids of the rows ``shard`` holds."""
        out = []
        for t, tab in enumerate(self.map.tables):
            parts = [lo + np.flatnonzero(self.owners(t, np.arange(lo, min(lo + _CHUNK, tab.rows))) == shard)
                     for lo in range(0, tab.rows, _CHUNK)]
            out.append(np.concatenate(parts).astype(self.map.id_dtype) if parts else
                       np.zeros(0, self.map.id_dtype))
        return out

    def owners(self, table: int, ids: np.ndarray) -> np.ndarray:
        """The shard of each of ``ids`` in table ``table``."""
        return shard_of(table, ids, self.num_shards)

    def split(self, ids: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        """``ids`` (per table, sorted) as ``[shard][table]`` ids, each still sorted; table t's
        rows come back in id order by ``merge``."""
        owners = [self.owners(t, i) for t, i in enumerate(ids)]
        return [[i[o == k] for i, o in zip(ids, owners)] for k in range(self.num_shards)]

    def merge(self, ids: Sequence[np.ndarray], per_shard: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
        """The rows of each table in the order of ``ids[t]``, from ``per_shard[k][t]`` (the rows
        of the ids ``split`` gave shard k)."""
        out = []
        for t, i in enumerate(ids):
            owner = self.owners(t, i)
            rows = np.empty((len(i), self.map.tables[t].dim), np.float32)
            for k in range(self.num_shards):
                rows[owner == k] = per_shard[k][t]
            out.append(rows)
        return out

    def shard_values(self, vector: np.ndarray, shard: int) -> np.ndarray:
        """The local vector of ``shard`` (dense weights, rows, statistics) from a whole one."""
        w = self.map.weights_size
        return self.values_of(vector[:w], vector[w:], shard)

    def values_of(self, weights: np.ndarray, state: np.ndarray, shard: int) -> np.ndarray:
        """``shard``'s local vector from a model's ``flat_weights`` and ``flat_state``."""
        return np.concatenate([self.piece_values(weights, state, shard, p) for p in self.pieces()])

    def put_values(self, weights: np.ndarray, state: np.ndarray, shard: int, values: np.ndarray) -> None:
        """Write ``shard``'s local vector into a model's ``flat_weights`` and ``flat_state``
        (the inverse of ``values_of``)."""
        at = 0
        for piece in self.pieces():
            n = self.piece_length(shard, piece)
            self.put_piece(weights, state, shard, piece, values[at:at + n])
            at += n

    def assemble(self, shard_values: Sequence[np.ndarray]) -> np.ndarray:
        """The whole vector from every shard's local vector (for checks and small models)."""
        m = self.map
        vector = np.empty(m.size, np.float32)
        for k, values in enumerate(shard_values):
            self.put_values(vector[:m.weights_size], vector[m.weights_size:], k, values)
        return vector

    # ---- a local vector in pieces -----------------------------------------------------------------
    def pieces(self) -> list[tuple]:
        """How a shard's local vector travels whole between the driver and the shard, a few
        MB at a time: ``("dense",)`` (its dense weights), ``("rows", t, lo, hi)`` (the rows it
        owns among ids ``[lo, hi)`` of table ``t``, at most ``PIECE_BYTES`` of them and
        ``PIECE_ROWS`` ids), ...,
        ``("state",)`` (its moving statistics) — in the local vector's order, so the pieces
        of a shard concatenate to it. No piece needs anything the size of a table."""
        out: list[tuple] = [("dense",)]
        for t, tab in enumerate(self.map.tables):
            step = max(1, min(PIECE_ROWS, PIECE_BYTES * self.num_shards // (4 * tab.dim)))
            out += [("rows", t, lo, min(lo + step, tab.rows)) for lo in range(0, tab.rows, step)]
        return out + [("state",)]

    def owned_in(self, shard: int, table: int, lo: int, hi: int) -> np.ndarray:
        """The sorted ids among ``[lo, hi)`` of ``table`` that ``shard`` owns."""
        ids = np.arange(lo, hi, dtype=np.int64)
        return ids[self.owners(table, ids) == shard].astype(self.map.id_dtype)

    def piece_length(self, shard: int, piece: tuple, owned: Sequence[np.ndarray] | None = None) -> int:
        """The values of ``piece`` of ``shard``'s local vector (``owned``: the shard's
        ``owned_ids``, to count rows without hashing)."""
        dw, ds = self.dense_split(shard)
        if piece[0] != "rows":
            return dw if piece[0] == "dense" else ds
        _, t, lo, hi = piece
        if owned is None:
            n = len(self.owned_in(shard, t, lo, hi))
        else:
            n = int(np.searchsorted(owned[t], hi) - np.searchsorted(owned[t], lo))
        return n * self.map.tables[t].dim

    def piece_span(self, piece: tuple) -> tuple[int, int] | None:
        """``[lo, hi)`` in ``flat_weights`` of the rows a ``("rows", ...)`` piece covers (those
        of every shard); None for the dense pieces."""
        if piece[0] != "rows":
            return None
        _, t, lo, hi = piece
        tab = self.map.tables[t]
        return tab.offset + lo * tab.dim, tab.offset + hi * tab.dim

    def piece_values(self, weights: np.ndarray, state: np.ndarray, shard: int, piece: tuple) -> np.ndarray:
        """``piece`` of ``shard``'s local vector, from a model's ``flat_weights`` and ``flat_state``."""
        if piece[0] != "rows":
            return np.array(self._dense_piece(weights, state, shard, piece[0]), np.float32)
        _, t, lo, hi = piece
        return self.map.table(weights, t)[self.owned_in(shard, t, lo, hi)].reshape(-1).astype(np.float32, copy=False)

    def put_piece(self, weights: np.ndarray, state: np.ndarray, shard: int, piece: tuple, values: np.ndarray) -> None:
        """Write ``piece`` of ``shard``'s local vector into ``flat_weights`` and ``flat_state``."""
        if piece[0] != "rows":
            self._dense_piece(weights, state, shard, piece[0])[...] = values
            return
        _, t, lo, hi = piece
        ids = self.owned_in(shard, t, lo, hi)
        self.map.table(weights, t)[ids] = np.asarray(values).reshape(len(ids), self.map.tables[t].dim)

    def _dense_piece(self, weights: np.ndarray, state: np.ndarray, shard: int, which: str) -> np.ndarray:
        """The view of ``shard``'s dense weights (``which="dense"``) or statistics (``"state"``)."""
        a, b = self.dense_bounds[shard]
        d = self.map.dense_size
        if which == "dense":
            return weights[min(a, d):min(b, d)]
        return state[max(a, d) - d:max(b, d) - d]
