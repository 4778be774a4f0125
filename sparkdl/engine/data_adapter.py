"""Checking user arrays against a model before any work starts, and cutting them into batches.

Inputs are handled as a list of arrays (one per model input) so single- and multi-input models
share one path. Every check raises a ValueError/TypeError naming what was expected and what
was received.
"""
from __future__ import annotations

import numpy as np


def to_input_list(x, input_specs: list[tuple[tuple, str]], who: str) -> list[np.ndarray]:
    """Convert ``x`` (an array, or a list/dict of arrays for several inputs) to a list of
    contiguous arrays of the model's input dtypes, checking shapes and finiteness."""
    n_inputs = len(input_specs)
    if isinstance(x, dict):
        raise TypeError(f"{who}: expected an array or a list of {n_inputs} arrays, received a dict")
    if n_inputs == 1 and not isinstance(x, (list, tuple)):
        xs = [x]
    elif isinstance(x, (list, tuple)) and n_inputs > 1:
        xs = list(x)
    elif isinstance(x, (list, tuple)) and n_inputs == 1 and len(x) == 1 and hasattr(x[0], "shape"):
        xs = [x[0]]
    else:
        xs = [x]
    if len(xs) != n_inputs:
        raise ValueError(f"{who}: expected {n_inputs} input arrays, received {len(xs)}")
    out = []
    for i, (arr, (shape, dtype)) in enumerate(zip(xs, input_specs)):
        label = "x" if n_inputs == 1 else f"x[{i}]"
        if arr is None:
            raise TypeError(f"{who}: expected {label} to be an array, received None")
        try:
            a = np.asarray(arr)
        except Exception as exc:  # noqa: BLE001 - report any conversion failure the same way
            raise TypeError(f"{who}: expected {label} to be array-like, received "
                            f"{type(arr).__name__} ({exc})") from None
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise TypeError(f"{who}: expected {label} to hold numbers, received dtype {a.dtype}")
        if a.shape[1:] != tuple(shape):
            raise ValueError(f"{who}: expected {label} of shape {(None,) + tuple(shape)}, "
                             f"received {a.shape}")
        if np.issubdtype(np.dtype(dtype), np.integer):
            if np.issubdtype(a.dtype, np.floating):
                if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                    raise ValueError(f"{who}: expected integer ids in {label}, received non-integer values")
            a = np.ascontiguousarray(a, dtype=dtype)
        else:
            a = np.ascontiguousarray(a, dtype=dtype)
            if not np.isfinite(a).all():
                bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
                raise ValueError(f"{who}: {label} contains {bad} NaN or inf values; "
                                 f"expected finite numbers")
        out.append(a)
    lengths = {len(a) for a in out}
    if len(lengths) > 1:
        raise ValueError(f"{who}: expected all inputs to have the same number of rows, "
                         f"received {[len(a) for a in out]}")
    return out


def check_lengths(xs: list[np.ndarray], y: np.ndarray, who: str) -> None:
    if len(y) != len(xs[0]):
        raise ValueError(f"{who}: expected len(y) == len(x), received len(x)={len(xs[0])} "
                         f"and len(y)={len(y)}")


def batches(n: int, batch_size: int):
    """``(start, stop)`` of consecutive batches covering ``range(n)``; the last may be short."""
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)
