"""Arrow record batches to contiguous float32 NumPy blocks, with no per-row Python objects.

Spark hands a Python task its rows as Arrow batches (``mapInArrow``). A features column
arrives as one of: an ml ``Vector`` (Arrow struct ``type, size, indices, values``; type 1 is
dense, 0 sparse), a list of numbers, or several numeric columns. Each becomes one
``(rows, width)`` float32 array built from the Arrow buffers with vectorised NumPy.

For a model whose input holds integer ids (an ``Embedding`` behind ``Input(dtype="int64")``)
the same columns become int64 arrays instead, never passing through float32 (which holds
integers exactly only up to 2**24): lists and numeric columns give their values, and an ml
Vector gives the indices of its active entries — the one-hot-per-field rows that Spark's
``libsvm`` source and ``OneHotEncoder`` + ``VectorAssembler`` produce.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def _one_array(arr):
    if isinstance(arr, pa.ChunkedArray):
        return pa.concat_arrays(arr.chunks) if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def _as_ids(values: np.ndarray, who: str) -> np.ndarray:
    """Integer ids as int64: integer values as they are, floats only if they are whole."""
    if values.dtype == object:          # decimals
        values = values.astype(np.float64)
    if np.issubdtype(values.dtype, np.integer) or values.dtype == bool:
        return values.astype(np.int64, copy=False)
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.floor(values)) | (np.abs(values) > 2.0 ** 63)
    if bad.any():
        raise ValueError(f"{who}: the model's input holds integer ids; expected whole numbers, "
                         f"received {float(values[bad][0])!r}")
    return values.astype(np.int64)


def _list_parts(arr: pa.Array, who: str) -> tuple[np.ndarray, np.ndarray]:
    """``(flat values as float64-or-native ndarray, offsets)`` of a list array (nulls rejected)."""
    if arr.null_count:
        raise ValueError(f"{who}: expected no null rows, received {arr.null_count}")
    offsets = np.asarray(arr.offsets)
    values = arr.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    return values, offsets - offsets[0]


def vector_struct_to_dense(arr: pa.StructArray, width: int, who: str = "features") -> np.ndarray:
    """Dense ``(n, width)`` float32 from the Arrow form of ml Vectors (dense and sparse mixed)."""
    arr = _one_array(arr)
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


def vector_struct_to_ids(arr: pa.StructArray, count: int, who: str = "features") -> np.ndarray:
    """``(n, count)`` int64 ids from the Arrow form of ml Vectors: each row's active indices in
    increasing order (a sparse row's ``indices``, whatever its values; a dense row's positions
    of non-zero values). Every row must have exactly ``count`` of them."""
    arr = _one_array(arr)
    n = len(arr)
    if arr.null_count:
        raise ValueError(f"{who}: expected no null vectors, received {arr.null_count}")
    dense = arr.field("type").to_numpy(zero_copy_only=False) == 1
    sparse = ~dense
    counts = np.zeros(n, dtype=np.int64)
    dense_ids = np.zeros(0, dtype=np.int64)
    if dense.any():
        values, voff = _list_parts(arr.field("values"), who)
        lengths = np.diff(voff)
        # The position of each value in its row; keep those of non-zero values in dense rows.
        positions = np.arange(len(values)) - np.repeat(voff[:-1], lengths)
        active = np.repeat(dense, lengths) & (values != 0)
        dense_ids = positions[active].astype(np.int64)
        counts += np.bincount(np.repeat(np.arange(n), lengths)[active], minlength=n)
    sparse_ids = np.zeros(0, dtype=np.int64)
    if sparse.any():
        idx_arr = arr.field("indices")
        if idx_arr.null_count:
            idx_arr = idx_arr.fill_null(pa.scalar([], idx_arr.type))
        indices, ioff = _list_parts(idx_arr, who)
        lengths = np.diff(ioff)
        sparse_ids = indices[np.repeat(sparse, lengths)].astype(np.int64)
        counts[sparse] = lengths[sparse]
    sizes = np.where(dense, np.diff(np.asarray(arr.field("values").offsets)),
                     arr.field("size").to_numpy(zero_copy_only=False))
    if (sizes == count).any():
        # All ``count`` positions active: the ids 0..count-1 in every row. This is how a vector
        # holding the ids as its values would look; say so rather than train on constant ids.
        raise ValueError(f"{who}: a vector of size {count} cannot carry {count} ids as active indices "
                         f"(every row would give the ids 0..{count - 1}); an integer input reads the "
                         f"active indices of one-hot-per-field vectors (size = the number of ids). For "
                         f"ids stored as the vector's values, convert the column with "
                         f"pyspark.ml.functions.vector_to_array")
    bad = counts != count
    if bad.any():
        raise ValueError(f"{who}: expected {count} active indices per row (the ids of the model's "
                         f"integer input), received a row with {int(counts[bad][0])} "
                         f"({int(bad.sum())} of {n} rows in this batch have another count)")
    out = np.empty((n, count), dtype=np.int64)
    out[dense] = dense_ids.reshape(-1, count)            # already in increasing order
    out[sparse] = np.sort(sparse_ids.reshape(-1, count), axis=1)
    return out


def list_to_dense(arr: pa.Array, width: int, who: str = "features", ids: bool = False) -> np.ndarray:
    """Dense ``(n, width)`` float32 from a list<number> column whose rows all have ``width`` items
    (int64 with ``ids=True``, for a model's integer input)."""
    arr = _one_array(arr)
    values, offsets = _list_parts(arr, who)
    lengths = np.diff(offsets)
    if len(lengths) and (lengths != width).any():
        raise ValueError(f"{who}: expected arrays of length {width}, received one of length "
                         f"{int(lengths[lengths != width][0])}")
    if ids:
        return _as_ids(values, who).reshape(len(arr), width)
    return values.astype(np.float32, copy=False).reshape(len(arr), width)


def columns_to_dense(arrays: list[pa.Array], who: str = "features", ids: bool = False,
                     names: list[str] | None = None) -> np.ndarray:
    """Dense ``(n, len(arrays))`` float32 from several numeric columns (int64 with ``ids=True``);
    ``names`` name the columns in errors."""
    n = len(arrays[0]) if arrays else 0
    out = np.empty((n, len(arrays)), dtype=np.int64 if ids else np.float32)
    for j, a in enumerate(arrays):
        if a.null_count:
            name = repr(names[j]) if names else str(j)
            raise ValueError(f"{who}: column {name} has {a.null_count} null values; expected none "
                             f"(drop or fill them first, e.g. df.na.drop(subset=[{name}]))")
        values = a.to_numpy(zero_copy_only=False)
        out[:, j] = _as_ids(values, who) if ids else values
    return out
