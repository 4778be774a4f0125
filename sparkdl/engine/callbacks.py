"""Training callbacks (Keras names and hooks): History, EarlyStopping, ModelCheckpoint,
LearningRateScheduler.

A callback sees ``self.model`` and the per-epoch ``logs`` dict ("loss", metrics, and "val_*"
entries). The same hooks run under the engine's ``fit`` and under ``SparkModel.fit``.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkdl.engine import checks

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sparkdl.engine.model import Model

logger = logging.getLogger(__name__)


class Callback:
    """The hooks, each a no-op here. ``on_batch_begin`` and ``on_batch_end`` run around each
    optimizer step of the engine's ``fit``, and around each round of ``SparkModel.fit`` (whose
    ``batch`` is the round's index in the epoch and ``logs["loss"]`` the round's mean loss):
    the model holds the weights after that step or round. (With ``transport="allreduce"`` the
    driver then takes the tasks' state after every round, as long as a callback defines either
    hook.)"""

    def __init__(self) -> None:
        self.model: Model | None = None
        self.params: dict = {}

    def set_model(self, model: Model) -> None:
        """Give the callback the model being trained (``self.model``); called before training starts."""
        self.model = model

    def set_params(self, params: dict) -> None:
        """Give the callback the fit's settings (``self.params``: epochs, steps, verbose, ...)."""
        self.params = params

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Called once when training starts."""

    def on_train_end(self, logs: dict | None = None) -> None:
        """Called once when training ends."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the start of every epoch (counted from 0)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the end of every epoch with its logs (loss, metrics, ``val_`` values)."""

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Called before every training step."""

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Called after every training step with the step's logs."""


class CallbackList:
    """The callbacks of one fit, called in order; it gives each the model and the fit's settings."""
    def __init__(self, callbacks: Iterable[Callback] | None, model: Model, params: dict):
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"expected callbacks to be Callback instances, "
                                f"received {type(cb).__name__}: {cb!r}")
            cb.set_model(model)
            cb.set_params(params)

    def __getattr__(self, hook: str) -> Callable[..., None]:
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args: Any, **kwargs: Any) -> None:
            for cb in self.callbacks:
                getattr(cb, hook)(*args, **kwargs)
        return call


class History(Callback):
    """Records every epoch's logs: ``history.history["loss"]`` is one float per epoch.

    ``SparkModel.fit`` adds what its rounds did: ``rounds`` (one dict per round), the fit's
    ``settings``, ``rows_per_partition`` (the rows that train), ``validation_rows_per_partition``
    (the rows ``validation_split`` holds out, or None), ``short_partitions``,
    ``empty_partitions``, ``resumed_from`` (the round a resumed fit started after, or None)
    and ``data_seconds``."""

    rounds: list[dict[str, Any]]
    settings: dict[str, Any]
    rows_per_partition: list[int]
    validation_rows_per_partition: list[int] | None
    short_partitions: list[int]
    empty_partitions: list[int]
    resumed_from: int | None
    data_seconds: float

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.epoch = []
        self.history = {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def plot(self, path: str | os.PathLike[str] | None = None) -> Figure:
        """Loss and metrics per epoch (training and validation) and, after a
        ``SparkModel.fit``, each round's time split into compute and overhead: a matplotlib
        figure (the ``plot`` extra), also saved as a PNG at ``path`` when given."""
        from sparkdl.engine.plotting import plot_history
        return plot_history(self, path)


def _resolve_mode(mode: str, monitor: str, who: str) -> str:
    if checks.one_of(mode, ("auto", "min", "max"), "mode", who) != "auto":
        return mode
    return "max" if any(k in monitor for k in ("acc", "auc")) else "min"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 mode: str = "auto", restore_best_weights: bool = False, baseline: float | None = None):
        super().__init__()
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.mode = _resolve_mode(mode, monitor, "EarlyStopping")
        self.restore_best_weights = bool(restore_best_weights)
        self.baseline = baseline
        self.stopped_epoch = 0

    def _improved(self, value: float, reference: float) -> bool:
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = self.baseline if self.baseline is not None else \
            (math.inf if self.mode == "min" else -math.inf)
        self.best_weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            logger.warning("EarlyStopping: metric %r is not in the logs (available: %s)",
                           self.monitor, sorted(logs or {}))
            return
        assert self.model is not None, "set_model() runs before any hook"
        if self._improved(value, self.best):
            self.best = value
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            logger.info("EarlyStopping: stopped after epoch %d (%s did not improve on %.6g)",
                        epoch + 1, self.monitor, self.best)


class ModelCheckpoint(Callback):
    """Save the model after each epoch to ``filepath`` (formatted with ``epoch`` and the logs,
    e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.sparkdl"``), or only when ``monitor`` improves."""

    def __init__(self, filepath: str | os.PathLike[str], monitor: str = "val_loss",
                 save_best_only: bool = False, mode: str = "auto", save_weights_only: bool = False):
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.mode = _resolve_mode(mode, monitor, "ModelCheckpoint")
        self.save_weights_only = bool(save_weights_only)
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                logger.warning("ModelCheckpoint: metric %r is not in the logs (available: %s)",
                               self.monitor, sorted(logs))
                return
            better = value < self.best if self.mode == "min" else value > self.best
            if not better:
                return
            self.best = value
        path = self.filepath.format(epoch=epoch + 1, **logs)
        assert self.model is not None, "set_model() runs before any hook"
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        logger.info("ModelCheckpoint: saved %s", path)


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at each epoch start to ``schedule(epoch, lr)``."""

    def __init__(self, schedule: Callable[[int, float], float], verbose: int = 0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: expected a callable schedule(epoch, lr), "
                            f"received {type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        # The hooks run inside fit, which needs a compiled model.
        assert self.model is not None and self.model.optimizer is not None
        optimizer = self.model.optimizer
        lr = self.schedule(epoch, optimizer.learning_rate)
        if not (checks.is_number(lr) and np.isfinite(lr)):
            raise ValueError(f"LearningRateScheduler: expected the schedule to return a finite "
                             f"float, received {lr!r} at epoch {epoch}")
        optimizer.learning_rate = float(lr)
        if self.verbose:
            logger.info("epoch %d: learning rate set to %.6g", epoch + 1, lr)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            assert self.model is not None and self.model.optimizer is not None
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)
