"""Keras' ``keras.utils`` names that Keras and Elephas code imports: ``to_categorical``, and the
custom-object helpers of ``sparkdl.saving``."""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sparkdl.engine import checks
from sparkdl.saving import custom_object_scope, get_custom_objects, register_keras_serializable

__all__ = ["custom_object_scope", "get_custom_objects", "register_keras_serializable", "to_categorical"]


def to_categorical(y: npt.ArrayLike, num_classes: int | None = None, dtype: str = "float32") -> np.ndarray:
    """One-hot rows of class ids ``y`` (any shape; a trailing axis of 1 is dropped, as Keras
    does): ``(..., num_classes)``, ``num_classes`` defaulting to ``max(y) + 1``."""
    who = "to_categorical"
    ids = np.asarray(y)
    if ids.ndim and ids.shape[-1] == 1 and ids.ndim > 1:
        ids = ids[..., 0]
    if not (np.issubdtype(ids.dtype, np.integer) or np.issubdtype(ids.dtype, np.floating)):
        raise TypeError(f"{who}: expected numeric class ids, received an array of {ids.dtype}")
    flat = ids.reshape(-1)
    fractional = flat[flat != np.round(flat)]
    if fractional.size:
        raise ValueError(f"{who}: expected whole-number class ids, received {float(fractional[0])!r}")
    ids = ids.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise ValueError(f"{who}: expected class ids >= 0, received {int(ids.min())}")
    largest = int(ids.max()) + 1 if ids.size else 0
    classes = largest if num_classes is None else checks.integer(num_classes, "num_classes", who, at_least=1)
    if largest > classes:
        raise ValueError(f"{who}: expected class ids below num_classes={classes}, received {largest - 1}")
    out = np.zeros(ids.shape + (classes,), dtype=dtype)
    np.put_along_axis(out, ids[..., None], 1, axis=-1)
    return out
