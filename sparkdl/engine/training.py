"""What every training loop shares: the batch plan of a pass, and the loop over epochs.

``BatchPlan`` is the one place where a pass's shuffle order and the per-batch seeds of the
stochastic layers come from a seed key, so the single-process ``fit``, a Spark worker's
round and a worker's gradient sums visit the same batches with the same dropout masks, and
any slice of a pass draws what the whole pass would have drawn there.

``FitLoop`` is the loop around the steps: callbacks, history, progress bar, the epoch's
loss and metric sums, validation and ``stop_training``. ``Model.fit`` runs it over batches,
``SparkModel.fit`` over rounds.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from sparkdl.engine import metrics as metrics_mod
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

    def iterate(self, model, xs: list[np.ndarray], y: np.ndarray):
        """``(batch index in the pass, xb, yb)`` per batch, with ``model``'s stochastic layers
        reseeded for that batch."""
        if self.rows is not None:
            xs, y = [a[self.rows] for a in xs], y[self.rows]
        stochastic = any(layer.stochastic for layer in model._all_layers())
        for step, (a, b) in enumerate(self.bounds):
            if stochastic:
                model.reseed_batch(self.layer_seq, self.start + step)
            yield self.start + step, [x[a:b] for x in xs], y[a:b]
