"""Streaming metrics whose state is a float64 array that adds up across batches and workers.

``update(y_true, y_pred)`` accumulates a batch, ``result()`` reads the value, and
``merge_state(other)`` adds another worker's state, so a metric computed on Spark executors
is combined on the driver by summing one small array. The kind of target is read from the
shapes: one output unit means binary (threshold 0.5), ``y_true`` of shape (n,) with several
outputs means class ids, otherwise one-hot (or probability) rows.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import numpy.typing as npt

from sparkdl.engine import checks, custom_objects

_EPS = 1e-7


def _binary(y_pred: np.ndarray) -> bool:
    return y_pred.ndim == 1 or y_pred.shape[-1] == 1


def _class_ids(y_true: npt.ArrayLike, y_pred: np.ndarray) -> np.ndarray:
    """Targets as integer class ids for a multi-class output."""
    y_true = np.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == y_pred.shape[-1]:
        return np.argmax(y_true, axis=-1)
    return y_true.reshape(-1).astype(np.int64)


class Metric:
    """Base class of the metrics. The state is a small float64 array that adds up across batches and workers
    (``merge_state``); ``result`` turns it into the metric's value."""
    name = "metric"

    def __init__(self) -> None:
        self.state = self._zero_state()

    def _zero_state(self) -> np.ndarray:
        return np.zeros(2)

    def reset(self) -> None:
        """Set the state back to zero."""
        self.state = self._zero_state()

    def fresh(self) -> Metric:
        """A metric of the same kind and settings with an empty state, for a separate pass
        (evaluation, a worker's share); user metrics need no registered name for it."""
        new = copy.deepcopy(self)
        new.reset()
        return new

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        """Add a batch's targets and predictions to the state."""
        raise NotImplementedError

    def result(self) -> float:
        """The metric's value for everything added since the last ``reset`` (NaN when nothing was)."""
        total, count = self.state
        return float(total / count) if count else float("nan")

    def merge_state(self, other_state: np.ndarray) -> None:
        """Add another metric's state (of the same kind and settings) to this one, as the driver does with the
        workers' states."""
        self.state += other_state

    def __call__(self, y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
        """The metric of one batch, leaving the running state untouched."""
        saved = self.state
        self.reset()
        try:
            self.update(np.asarray(y_true), np.asarray(y_pred))
            return self.result()
        finally:
            self.state = saved

    def get_config(self) -> dict[str, Any]:
        """The metric's name and settings, as JSON-plain values."""
        return {"name": self.name}


class Accuracy(Metric):
    """The share of examples predicted right (``"accuracy"``): a one-unit output is thresholded at 0.5, several
    units are compared by their argmax with class ids or one-hot rows."""
    name = "accuracy"

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        if _binary(y_pred):
            correct = (y_pred.reshape(-1) > 0.5) == (np.asarray(y_true).reshape(-1) > 0.5)
        else:
            correct = np.argmax(y_pred, axis=-1) == _class_ids(y_true, y_pred)
        self.state += (np.count_nonzero(correct), correct.size)


class TopKAccuracy(Metric):
    """The share of examples whose true class is among the ``k`` highest scores (``"top_k_accuracy"``); for
    multi-class outputs."""
    name = "top_k_accuracy"

    def __init__(self, k: int = 5):
        self.k = checks.integer(k, "k", "TopKAccuracy", at_least=1)
        super().__init__()

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        if _binary(y_pred):
            raise ValueError("top_k_accuracy: expected a multi-class output, received one output unit")
        ids = _class_ids(y_true, y_pred)
        k = min(self.k, y_pred.shape[-1])
        # A class is in the top k when fewer than k classes score strictly higher.
        true_score = y_pred[np.arange(len(ids)), ids][:, None]
        correct = (y_pred > true_score).sum(axis=-1) < k
        self.state += (np.count_nonzero(correct), correct.size)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k}


class MeanSquaredError(Metric):
    """Mean squared error over all outputs (``"mse"``)."""
    name = "mse"

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        diff = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64).reshape(y_pred.shape)
        self.state += (np.sum(diff * diff), diff.size)


class MeanAbsoluteError(Metric):
    """Mean of ``|y_pred - y_true|`` over every output value; the state is (sum, count)."""

    name = "mae"

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        diff = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64).reshape(y_pred.shape)
        self.state += (np.sum(np.abs(diff)), diff.size)


class LogLoss(Metric):
    """Mean cross-entropy of the predicted probabilities (binary or multi-class)."""

    name = "logloss"

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        p = np.clip(np.asarray(y_pred, dtype=np.float64), _EPS, 1 - _EPS)
        if _binary(y_pred):
            y = np.asarray(y_true, dtype=np.float64).reshape(-1)
            p = p.reshape(-1)
            ll = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        else:
            ids = _class_ids(y_true, y_pred)
            ll = -np.log(p[np.arange(len(ids)), ids])
        self.state += (np.sum(ll), ll.size)


class AUC(Metric):
    """Area under the ROC curve from score histograms (``num_bins`` equal bins over [0, 1]).

    Exact (ties counted one half, as in the Mann-Whitney statistic) for scores quantised to
    the bins; for continuous scores the error is bounded by the mass sharing a bin. Several
    output units give the one-vs-rest macro average over classes that have both positive
    and negative examples.
    """

    name = "auc"

    def __init__(self, num_bins: int = 4096):
        self.num_bins = checks.integer(num_bins, "num_bins", "AUC", at_least=2)
        self._classes = None
        super().__init__()

    def _zero_state(self) -> np.ndarray:
        # Allocated on the first update, once the number of classes is known.
        return np.zeros((0,))

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        y_pred = np.asarray(y_pred)
        if _binary(y_pred):
            scores = y_pred.reshape(-1, 1)
            positive = (np.asarray(y_true).reshape(-1, 1) > 0.5)
        else:
            scores = y_pred
            ids = _class_ids(y_true, y_pred)
            positive = ids[:, None] == np.arange(y_pred.shape[-1])[None, :]
        n_classes = scores.shape[1]
        if self.state.size == 0:
            self.state = np.zeros((2, n_classes, self.num_bins))
        elif self.state.shape[1] != n_classes:
            raise ValueError(f"auc: expected {self.state.shape[1]} output columns, received {n_classes}")
        bins = np.clip((scores * self.num_bins).astype(np.int64), 0, self.num_bins - 1)
        # One bincount over (is_positive, class, bin) fills both histograms of every class.
        flat = (positive.astype(np.int64) * n_classes + np.arange(n_classes)[None, :]) * self.num_bins + bins
        counts = np.bincount(flat.reshape(-1), minlength=2 * n_classes * self.num_bins)
        # Index 0 of the state is negatives, 1 positives.
        self.state += counts.reshape(2, n_classes, self.num_bins)

    def merge_state(self, other_state: np.ndarray) -> None:
        if self.state.size == 0:
            self.state = np.array(other_state, dtype=np.float64)
        elif np.size(other_state):
            self.state += other_state

    def result(self) -> float:
        if self.state.size == 0:
            return float("nan")
        neg, pos = self.state[0], self.state[1]
        n_neg, n_pos = neg.sum(axis=1), pos.sum(axis=1)
        neg_below = np.cumsum(neg, axis=1) - neg
        wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
        valid = (n_neg > 0) & (n_pos > 0)
        if not valid.any():
            return float("nan")
        return float(np.mean(wins[valid] / (n_pos[valid] * n_neg[valid])))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "num_bins": self.num_bins}


_REGISTRY = {cls.name: cls for cls in (Accuracy, TopKAccuracy, MeanSquaredError, MeanAbsoluteError,
                                       LogLoss, AUC)}
_ALIASES = {"acc": "accuracy", "mean_squared_error": "mse", "mean_absolute_error": "mae", "log_loss": "logloss",
            "top_k_categorical_accuracy": "top_k_accuracy",
            "sparse_top_k_categorical_accuracy": "top_k_accuracy"}


def names() -> list[str]:
    """The names of the built-in metrics, sorted."""
    return sorted(_REGISTRY)


def get(identifier: str | dict[str, Any] | Metric) -> Metric:
    """A Metric from itself, a name or a config; names are looked up in the custom objects
    (scopes, then the registry: ``sparkdl.saving``) before the built-ins."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, (str, dict)):
        user = custom_objects.resolve(identifier, "metric", Metric)
        if user is not None:
            return user
    if isinstance(identifier, dict):
        config = dict(identifier)
        cls = _REGISTRY.get(config.pop("name", None))
        if cls is None:
            raise ValueError(f"unknown metric config {identifier!r}; expected one of {names()}")
        return cls(**config)
    if isinstance(identifier, str):
        key = _ALIASES.get(identifier.lower(), identifier.lower())
        if key not in _REGISTRY:
            raise ValueError(f"unknown metric {identifier!r}; expected one of {names()}")
        return _REGISTRY[key]()
    raise TypeError(f"expected a metric name (one of {names()}) or a Metric, "
                    f"received {type(identifier).__name__}: {identifier!r}")
