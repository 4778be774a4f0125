"""Losses: value, gradient, target validation, and the fused logits forms.

A loss reduces to the mean over the batch (and over output units for mse and binary
cross-entropy, as Keras does). Cross-entropies also have a ``*_logits`` form used when the
model's last layer is the matching softmax/sigmoid: computing from logits is exact where the
probability form has to clip, and its gradient is the familiar ``(p - y) / n``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from sparkdl.engine import custom_objects

EPSILON = 1e-7


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * z) + 1.0)


class Loss:
    """Base class of the losses. Calling a loss gives its mean over the batch; ``per_sample`` gives one value per
    example."""
    name = "loss"
    #: The output activation this loss can fuse with (computing from its logits), if any.
    fusable_activation: str | None = None

    def __call__(self, y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
        return float(np.mean(self.per_sample(np.asarray(y_true), np.asarray(y_pred))))

    def per_sample(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        """The loss of each example of the batch, shape ``(n,)``."""
        raise NotImplementedError

    def value_and_grad(self, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean loss over the batch and dL/dy_pred."""
        raise NotImplementedError

    def value_and_grad_logits(self, y_true: np.ndarray, z: np.ndarray) -> tuple[float, np.ndarray]:
        """The mean loss and its gradient with respect to the logits ``z`` of the output layer, for a loss fused
        with its output activation (softmax or sigmoid)."""
        raise NotImplementedError(f"{self.name} has no logits form")

    def validate_targets(self, y: npt.ArrayLike, output_shape: tuple[int, ...]) -> np.ndarray:
        """Check targets against the model's output shape (no batch axis); return the array
        the loss consumes, or raise ValueError saying what was expected and received."""
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.number) and y.dtype != bool:
            raise TypeError(f"{self.name}: expected numeric targets, received dtype {y.dtype}")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{self.name}: targets contain NaN or inf")
        y = y.astype(np.float32, copy=False)
        if y.shape[1:] != tuple(output_shape):
            if y.ndim == 1 and tuple(output_shape) == (1,):
                return y.reshape(-1, 1)
            raise ValueError(f"{self.name}: expected targets of shape {(None,) + tuple(output_shape)} "
                             f"(the model's output), received {y.shape}")
        return y

    def get_config(self) -> dict[str, Any]:
        """The loss's name and settings, as JSON-plain values; saved with the model."""
        return {"name": self.name}


class MeanSquaredError(Loss):
    """Mean squared error, averaged over each example's outputs (``"mse"``)."""
    name = "mse"

    def per_sample(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        diff = (y_pred - y_true).reshape(len(y_pred), -1)
        return np.mean(diff * diff, axis=1)

    def value_and_grad(self, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, np.ndarray]:
        diff = y_pred - y_true
        loss = float(np.mean(diff * diff))
        return loss, diff * np.asarray(2.0 / diff.size, dtype=diff.dtype)


class BinaryCrossentropy(Loss):
    """Binary cross-entropy against 0/1 targets (``"binary_crossentropy"``); with a sigmoid output it is computed
    from the logits."""
    name = "binary_crossentropy"
    fusable_activation = "sigmoid"

    def per_sample(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        p = np.clip(y_pred, EPSILON, 1 - EPSILON)
        ll = y_true * np.log(p) + (1 - y_true) * np.log(1 - p)
        return -np.mean(ll.reshape(len(p), -1), axis=1)

    def value_and_grad(self, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, np.ndarray]:
        p = np.clip(y_pred, EPSILON, 1 - EPSILON)
        loss = float(-np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)))
        grad = (p - y_true) / (p * (1 - p)) / p.size
        # Where the prediction was clipped the loss is flat in y_pred.
        grad[(y_pred < EPSILON) | (y_pred > 1 - EPSILON)] = 0
        return loss, grad.astype(y_pred.dtype, copy=False)

    def per_sample_logits(self, y_true: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``per_sample`` computed from the logits ``z`` of a sigmoid output, exactly and stably."""
        ll = np.maximum(z, 0) - z * y_true + np.log1p(np.exp(-np.abs(z)))
        return np.mean(ll.reshape(len(z), -1), axis=1)

    def value_and_grad_logits(self, y_true: np.ndarray, z: np.ndarray) -> tuple[float, np.ndarray]:
        loss = float(np.mean(np.maximum(z, 0) - z * y_true + np.log1p(np.exp(-np.abs(z)))))
        grad = (_sigmoid(z) - y_true) / z.size
        return loss, grad.astype(z.dtype, copy=False)

    def validate_targets(self, y: npt.ArrayLike, output_shape: tuple[int, ...]) -> np.ndarray:
        y = super().validate_targets(y, output_shape)
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"{self.name}: expected targets in [0, 1], received values in "
                             f"[{y.min():g}, {y.max():g}]")
        return y


class CategoricalCrossentropy(Loss):
    """Cross-entropy against one-hot (or probability) rows, or against class ids: targets of
    shape ``(n,)`` for a ``(k,)`` output are one-hot encoded batch by batch, so a label column
    of class ids (what Spark's evaluators read) trains exactly as its one-hot rows would."""

    name = "categorical_crossentropy"
    fusable_activation = "softmax"

    @staticmethod
    def _rows(y_true: np.ndarray, like: np.ndarray) -> np.ndarray:
        """One-hot rows of class ids (``like``'s width and dtype); one-hot rows as they are."""
        if y_true.ndim == like.ndim:
            return y_true
        rows = np.zeros(like.shape, dtype=like.dtype)
        rows[np.arange(len(y_true)), y_true] = 1
        return rows

    def per_sample(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        y_true = self._rows(y_true, y_pred)
        p = np.clip(y_pred, EPSILON, 1 - EPSILON)
        return -np.sum(y_true * np.log(p), axis=-1)

    def value_and_grad(self, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, np.ndarray]:
        y_true = self._rows(y_true, y_pred)
        p = np.clip(y_pred, EPSILON, 1 - EPSILON)
        n = len(p)
        loss = float(-np.sum(y_true * np.log(p)) / n)
        grad = -y_true / p / n
        grad[(y_pred < EPSILON) | (y_pred > 1 - EPSILON)] = 0
        return loss, grad.astype(y_pred.dtype, copy=False)

    def per_sample_logits(self, y_true: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``per_sample`` computed from the logits ``z`` of a softmax output, exactly and stably."""
        return -np.sum(self._rows(y_true, z) * _log_softmax(z), axis=-1)

    def value_and_grad_logits(self, y_true: np.ndarray, z: np.ndarray) -> tuple[float, np.ndarray]:
        y_true = self._rows(y_true, z)
        logp = _log_softmax(z)
        n = len(z)
        loss = float(-np.sum(y_true * logp) / n)
        grad = (np.exp(logp) * y_true.sum(axis=-1, keepdims=True) - y_true) / n
        return loss, grad.astype(z.dtype, copy=False)

    def validate_targets(self, y: npt.ArrayLike, output_shape: tuple[int, ...]) -> np.ndarray:
        y = np.asarray(y)
        shape = tuple(output_shape)
        # Class ids: (n,) or (n, 1) for a (k,) output with k > 1 (one-hot rows are (n, k)).
        if len(shape) == 1 and shape[0] > 1 and y.ndim in (1, 2) and y.shape[1:] in ((), (1,)):
            return class_ids(y.reshape(-1), shape[0], self.name)
        y = super().validate_targets(y, output_shape)
        if y.size and y.min() < 0:
            raise ValueError(f"{self.name}: expected one-hot or probability rows, received a "
                             f"negative value {y.min():g}")
        return y


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy against integer class ids (``"sparse_categorical_crossentropy"``); with a softmax output it
    is computed from the logits."""
    name = "sparse_categorical_crossentropy"
    fusable_activation = "softmax"

    def per_sample(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        p = y_pred[np.arange(len(y_pred)), y_true]
        return -np.log(np.clip(p, EPSILON, 1 - EPSILON))

    def value_and_grad(self, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, np.ndarray]:
        n = len(y_pred)
        rows = np.arange(n)
        p = y_pred[rows, y_true]
        pc = np.clip(p, EPSILON, 1 - EPSILON)
        loss = float(-np.mean(np.log(pc)))
        grad = np.zeros_like(y_pred)
        grad[rows, y_true] = np.where(p == pc, -1.0 / (n * pc), 0.0)
        return loss, grad

    def per_sample_logits(self, y_true: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``per_sample`` computed from the logits ``z`` of a softmax output, exactly and stably."""
        return -_log_softmax(z)[np.arange(len(z)), y_true]

    def value_and_grad_logits(self, y_true: np.ndarray, z: np.ndarray) -> tuple[float, np.ndarray]:
        n = len(z)
        rows = np.arange(n)
        shifted = z - z.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=-1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) - shifted[rows, y_true]))
        grad = e
        grad /= s
        grad[rows, y_true] -= 1
        grad *= np.asarray(1.0 / n, dtype=grad.dtype)
        return loss, grad

    def validate_targets(self, y: npt.ArrayLike, output_shape: tuple[int, ...]) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"{self.name}: expected integer class ids of shape (n,), received "
                             f"shape {y.shape} (use categorical_crossentropy for one-hot rows)")
        return class_ids(y, output_shape[-1], self.name)


def class_ids(y: np.ndarray, n_classes: int, who: str) -> np.ndarray:
    """``y`` (one dimension) checked as class ids of a model with ``n_classes`` outputs: whole
    numbers (integers, or floats such as a Spark label column holds) in ``[0, n_classes)``;
    returned as int64."""
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise TypeError(f"{who}: expected integer class ids, received dtype {y.dtype}")
    if y.size:
        if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y) & (y == np.round(y))):
            raise ValueError(f"{who}: expected integer class ids, received non-integer values")
        lo, hi = y.min(), y.max()
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"{who}: expected class ids in [0, {n_classes - 1}] for a model "
                             f"with {n_classes} outputs, received values in [{lo:g}, {hi:g}]")
    return y.astype(np.int64, copy=False)


_REGISTRY = {cls.name: cls for cls in (MeanSquaredError, BinaryCrossentropy,
                                       CategoricalCrossentropy, SparseCategoricalCrossentropy)}
_ALIASES = {"mean_squared_error": "mse"}


def names() -> list[str]:
    """The names of the built-in losses, sorted."""
    return sorted(_REGISTRY)


def get(identifier: str | dict[str, Any] | Loss) -> Loss:
    """A Loss from itself, a name or a config; names are looked up in the custom objects
    (scopes, then the registry: ``sparkdl.saving``) before the built-ins."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, (str, dict)):
        user = custom_objects.resolve(identifier, "loss", Loss)
        if user is not None:
            return user
    if isinstance(identifier, dict):
        identifier = identifier.get("name")  # type: ignore[assignment]  # checked just below
    if isinstance(identifier, str):
        key = _ALIASES.get(identifier.lower(), identifier.lower())
        if key not in _REGISTRY:
            raise ValueError(f"unknown loss {identifier!r}; expected one of {names()}")
        return _REGISTRY[key]()
    raise TypeError(f"expected a loss name (one of {names()}) or a Loss, "
                    f"received {type(identifier).__name__}: {identifier!r}")
