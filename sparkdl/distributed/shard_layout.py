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
        a, b = self.dense_bounds[shard]
        dense = self.map.dense(vector)[a:b]
        dw, _ = self.dense_split(shard)
        rows = [self.map.table(vector, t)[i].reshape(-1) for t, i in enumerate(self.owned_ids(shard))]
        return np.concatenate([dense[:dw], *rows, dense[dw:]]).astype(np.float32)

    def assemble(self, shard_values: Sequence[np.ndarray]) -> np.ndarray:
        """The whole vector from every shard's local vector (for checks and small models)."""
        m = self.map
        vector = np.empty(m.size, np.float32)
        dense = np.empty(m.dense_length, np.float32)
        for k, values in enumerate(shard_values):
            a, b = self.dense_bounds[k]
            dw, ds = self.dense_split(k)
            dense[a:a + dw], dense[a + dw:b] = values[:dw], values[len(values) - ds:]
            at = dw
            for t, ids in enumerate(self.owned_ids(k)):
                dim = m.tables[t].dim
                m.table(vector, t)[ids] = values[at:at + len(ids) * dim].reshape(len(ids), dim)
                at += len(ids) * dim
        vector[:m.dense_size], vector[m.weights_size:] = dense[:m.dense_size], dense[m.dense_size:]
        return vector
