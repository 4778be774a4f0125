"""Arrow record batches to contiguous float32 NumPy blocks, with no per-row Python objects.

Spark hands a Python task its rows as Arrow batches (``mapInArrow``). A features column
arrives as one of: an ml ``Vector`` (Arrow struct ``type, size, indices, values``; type 1 is
dense, 0 sparse), a list of numbers, or several numeric columns. Each becomes one
``(rows, width)`` float32 array built from the Arrow buffers with vectorised NumPy.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def _list_parts(arr: pa.Array, who: str) -> tuple[np.ndarray, np.ndarray]:
    """``(flat values as float64-or-native ndarray, offsets)`` of a list array (nulls rejected)."""
    if arr.null_count:
        raise ValueError(f"{who}: expected no null rows, received {arr.null_count}")
    offsets = np.asarray(arr.offsets)
    values = arr.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    return values, offsets - offsets[0]


def vector_struct_to_dense(arr: pa.StructArray, width: int, who: str = "features") -> np.ndarray:
    """Dense ``(n, width)`` float32 from the Arrow form of ml Vectors (dense and sparse mixed)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = pa.concat_arrays(arr.chunks) if arr.num_chunks != 1 else arr.chunk(0)
    n = len(arr)
    if arr.null_count:
        raise ValueError(f"{who}: expected no null vectors, received {arr.null_count}")
    kind = arr.field("type").to_numpy(zero_copy_only=False)
    values, voff = _list_parts(arr.field("values"), who)
    lengths = np.diff(voff)
    out = np.zeros((n, width), dtype=np.float32)
    dense = kind == 1
    if dense.any():
        bad = dense & (lengths != width)
        if bad.any():
            raise ValueError(f"{who}: expected vectors of size {width}, received a dense vector of "
                             f"size {int(lengths[bad][0])}")
        if dense.all():
            return values.astype(np.float32, copy=False).reshape(n, width)
    sizes = arr.field("size").to_numpy(zero_copy_only=False)
    sparse = ~dense
    bad = sparse & (np.nan_to_num(sizes.astype(np.float64), nan=-1) != width)
    if bad.any():
        raise ValueError(f"{who}: expected vectors of size {width}, received a sparse vector of "
                         f"size {int(sizes[bad][0])}")
    rows = np.repeat(np.arange(n), lengths)
    # Dense rows: a value's column is its position in the row. Sparse rows: the row's indices
    # list, which lines up one-to-one with its values (dense rows have no indices).
    cols = np.arange(len(values)) - np.repeat(voff[:-1], lengths)
    if sparse.any():
        idx_arr = arr.field("indices")
        if idx_arr.null_count:
            idx_arr = idx_arr.fill_null(pa.scalar([], idx_arr.type))
        indices, ioff = _list_parts(idx_arr, who)
        cols[np.repeat(sparse, lengths)] = indices[np.repeat(sparse, np.diff(ioff))]
        if len(cols) and (cols.max() >= width or cols.min() < 0):
            raise ValueError(f"{who}: a sparse vector has an index outside [0, {width})")
    out[rows, cols] = values
    return out


def list_to_dense(arr: pa.Array, width: int, who: str = "features") -> np.ndarray:
    """Dense ``(n, width)`` float32 from a list<number> column whose rows all have ``width`` items."""
    if isinstance(arr, pa.ChunkedArray):
        arr = pa.concat_arrays(arr.chunks) if arr.num_chunks != 1 else arr.chunk(0)
    values, offsets = _list_parts(arr, who)
    lengths = np.diff(offsets)
    if len(lengths) and (lengths != width).any():
        raise ValueError(f"{who}: expected arrays of length {width}, received one of length "
                         f"{int(lengths[lengths != width][0])}")
    return values.astype(np.float32, copy=False).reshape(len(arr), width)


def columns_to_dense(arrays: list[pa.Array], who: str = "features") -> np.ndarray:
    """Dense ``(n, len(arrays))`` float32 from several numeric columns."""
    n = len(arrays[0]) if arrays else 0
    out = np.empty((n, len(arrays)), dtype=np.float32)
    for j, a in enumerate(arrays):
        if a.null_count:
            raise ValueError(f"{who}: column {j} has {a.null_count} null values; expected none")
        out[:, j] = a.to_numpy(zero_copy_only=False)
    return out
