"""What every training loop shares: the batch plan of a pass, and the loop over epochs.

``BatchPlan`` is the one place where a pass's shuffle order and the per-batch seeds of the
stochastic layers come from a seed key, so the single-process ``fit``, a Spark worker's
round and a worker's gradient sums visit the same batches with the same dropout masks, and
any slice of a pass draws what the whole pass would have drawn there.

``FitLoop`` is the loop around the steps: callbacks, history, progress bar, the epoch's
loss and metric sums, validation and ``stop_training``. ``Model.fit`` runs it over batches,
``SparkModel.fit`` over rounds. ``live_dashboard`` runs a fit's dashboard (``dashboard=True``
or ``"keep"``), whose feed the loop publishes each epoch's logs to.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from sparkdl.engine.callbacks import CallbackList, History
from sparkdl.engine.data_adapter import batches
from sparkdl.engine.progress import ProgressBar, format_logs

logger = logging.getLogger("sparkdl")


class BatchPlan:
    """The batches ``[start, stop)`` of one pass over ``n`` rows, from ``SeedSequence(seed_key)``:
    the pass's order (a permutation, unless ``shuffle=False``) and the seed of each batch's
    stochastic layers (child ``index`` of the layer sequence)."""

    def __init__(self, n: int, batch_size: int, seed_key, start: int = 0, stop: int | None = None,
                 shuffle: bool = True):
        order_seq, self.layer_seq = np.random.SeedSequence(seed_key).spawn(2)
        self.start = start
        self.bounds = list(batches(n, batch_size))[start:stop]
        self.rows = None
        if shuffle and self.bounds:
            # Only the rows this slice of the pass visits are gathered.
            lo, hi = self.bounds[0][0], self.bounds[-1][1]
            self.rows = np.random.default_rng(order_seq).permutation(n)[lo:hi]
            self.bounds = [(a - lo, b - lo) for a, b in self.bounds]

    def __len__(self) -> int:
        return len(self.bounds)

    def gathered(self, xs: list[np.ndarray], y: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, BatchPlan]:
        """The rows this plan visits, in the order it visits them, and a plan over those rows
        that yields the same batches with the same seeds."""
        plan = copy.copy(self)
        if self.rows is not None:
            rows: np.ndarray | slice = self.rows
        else:
            lo, hi = (self.bounds[0][0], self.bounds[-1][1]) if self.bounds else (0, 0)
            rows = slice(lo, hi)
            plan.bounds = [(a - lo, b - lo) for a, b in self.bounds]
        plan.rows = None
        return [a[rows] for a in xs], y[rows], plan

    def iterate(self, model, xs: list[np.ndarray], y: np.ndarray):
        """``(batch index in the pass, xb, yb)`` per batch, with ``model``'s stochastic layers
        reseeded for that batch."""
        if self.rows is not None:
            xs, y = [a[self.rows] for a in xs], y[self.rows]
        stochastic = any(layer.stochastic for layer in model.layers)
        for step, (a, b) in enumerate(self.bounds):
            if stochastic:
                model.reseed_batch(self.layer_seq, self.start + step)
            yield self.start + step, [x[a:b] for x in xs], y[a:b]


class EpochSums:
    """An epoch's loss sum, examples and metric states, merged as batches or rounds come in."""

    def __init__(self, metrics, loss_sum: float = 0.0, samples: int = 0, states=None):
        self.metrics = [m.fresh() for m in metrics]
        self.loss_sum, self.samples = loss_sum, samples
        for m, state in zip(self.metrics, states or []):
            m.state = np.array(state, copy=True)

    def add(self, loss_sum: float, samples: int, states=()) -> None:
        self.loss_sum += loss_sum
        self.samples += samples
        for m, state in zip(self.metrics, states):
            m.merge_state(state)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.samples, 1)

    def logs(self) -> dict:
        logs = {"loss": self.mean_loss}
        logs.update({m.name: m.result() for m in self.metrics})
        return logs


class FitLoop:
    """The loop over epochs that ``Model.fit`` and ``SparkModel.fit`` share: callbacks (with
    the History last, as in Keras, so it records what the others add to the logs), a progress
    bar per epoch over ``steps`` steps (batches, or rounds), one log line per epoch and
    ``model.stop_training``."""

    def __init__(self, model, callbacks, epochs: int, steps: int, batch_size: int, verbose: int,
                 unit: str = "step", log=logger.debug, feed=None, **params):
        self.model, self.epochs, self.steps, self.verbose, self.unit = model, epochs, steps, verbose, unit
        self.feed = feed
        self.history = History()
        self.log = log
        self.callbacks = CallbackList(list(callbacks or []) + [self.history], model,
                                      {"epochs": epochs, "steps": steps, "batch_size": batch_size,
                                       "verbose": verbose, **params})

    def run(self, begin, run_epoch, after_epoch=None) -> History:
        """``begin()`` (after ``on_train_begin``) returns the first epoch; ``run_epoch(epoch,
        bar)`` trains one and returns its logs; ``after_epoch(epoch, logs)`` runs after the
        epoch's callbacks."""
        model, cbs = self.model, self.callbacks
        model.stop_training = False
        cbs.on_train_begin()
        for epoch in range(begin(), self.epochs):
            cbs.on_epoch_begin(epoch)
            start = time.perf_counter()
            bar = ProgressBar(self.steps, self.verbose, unit=self.unit)
            if self.verbose == 1:
                bar.stream.write(f"Epoch {epoch + 1}/{self.epochs}\n")
            logs = run_epoch(epoch, bar)
            cbs.on_epoch_end(epoch, logs)
            if self.feed is not None:
                self.feed.epoch(epoch, logs)
            bar.finish(logs, prefix=f"Epoch {epoch + 1}/{self.epochs} - ")
            self.log("epoch %d/%d (%.2fs): %s", epoch + 1, self.epochs, time.perf_counter() - start,
                     format_logs(logs))
            if after_epoch is not None:
                after_epoch(epoch, logs)
            if model.stop_training:
                break
        cbs.on_train_end()
        return self.history


def check_dashboard(value: object, who: str):
    """``dashboard=`` of a fit: False, True or "keep" (TypeError or ValueError otherwise)."""
    if value is False:           # the default costs no import
        return False
    from sparkdl import dashboard
    return dashboard.check_option(value, who)


@contextlib.contextmanager
def live_dashboard(option, who: str, owner: Any, **where: Any) -> Iterator[Any]:
    """The fit's dashboard feed for the ``with`` block (None when ``option`` is False), its URL
    set as ``owner.dashboard_url`` (None without a dashboard). When the block ends the
    dashboard records how the fit ended and, unless ``option == "keep"``, stops serving.
    ``where``: ``host``, ``port`` and ``advertise`` for ``sparkdl.dashboard.start``."""
    if option is False:
        owner.dashboard_url = None
        yield None
        return
    from sparkdl import dashboard
    board = dashboard.start(option, who, **where)
    assert board is not None, "option is True or 'keep'"
    owner.dashboard_url = board.url
    failed = True
    try:
        yield board.feed
        failed = False
    finally:
        board.finish(failed)
