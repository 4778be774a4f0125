"""Sync rounds of gradients on a sharded parameter server: shard k's ``ShardRounds`` service.

The row-sparse counterpart of the driver's ``exchange.RoundExchange`` with
``aggregate="gradients"``. Whoever runs the rounds opens round r on every shard with the
partitions that train in it and their sample counts (``open_round``); each partition pulls
the dense part and the rows its steps read, and pushes its gradient sum on them and its
moving statistics; ``close_round`` then adds the pushes in ascending partition order in
float64 (gradients as they are, statistics weighted by samples, as the exchange adds them),
divides by the round's samples, rounds once to float32 and applies the mean: one optimizer
step on the dense weights and on the rows some partition pushed (slots beside their rows;
the other rows and their slots stay as they are), the statistics replaced by their mean.

The whole-vector path steps every row with the driver's optimizer: the two agree exactly for
SGD without momentum. With one partition and power-of-two batches the row-sparse round is
exactly single-process training's step with any optimizer (which steps the touched rows
only, as a shard does).

A pull of a round that is not open yet waits up to ``wait`` seconds for it to open (the
host of a one-job fit opens round r while the other tasks already ask for its weights);
with ``wait=0`` it is refused at once.

Requests: ``PULL`` meta ``{round, partition, counts}`` with the ids (as ``shards``; round
-1: between rounds, the values as the last closed round left them, for validation);
``PUSH`` meta ``{round, partition, attempt, samples, counts}`` with the bytes of
``shard_store``. A round that is not open, a partition it does not expect, a replaced
attempt, a sample count other than the one opened, or a second push of a partition are
refused or dropped before anything changes.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np

from sparkdl.distributed import admission
from sparkdl.distributed.protocol import Frame, Op
from sparkdl.distributed.server import Refused, int_field
from sparkdl.distributed.shard_layout import ShardLayout
from sparkdl.distributed.shard_store import ShardStore
from sparkdl.engine import checks


class ShardRounds(ShardStore):
    """Shard ``shard`` of ``layout`` for sync gradient rounds, stepping a copy of ``optimizer``;
    a pull waits up to ``wait`` seconds for its round to open."""

    def __init__(self, layout: ShardLayout, shard: int, values: np.ndarray, optimizer, wait: float = 0.0):
        if optimizer is None:
            raise ValueError("ShardRounds: expected the optimizer that steps the rounds' mean gradient, "
                             "received None")
        super().__init__(layout, shard, values, optimizer)
        self.wait = checks.number(wait, "wait", "ShardRounds", at_least=0)
        self._opened = threading.Condition(self._lock)
        self._round: int | None = None
        self._expected: dict[int, int] = {}
        self._pushes: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}
        self._attempts = admission.Attempts()

    # ---- the rounds' driver ------------------------------------------------------------------------
    def open_round(self, round_index: int, partitions: Mapping[int, int]) -> None:
        """Serve round ``round_index`` and expect one push from each of ``partitions``
        (``{partition: samples}``: the rows it trains in the round)."""
        expected = {checks.integer(p, "partition", "open_round", at_least=0):
                    checks.integer(n, "samples", "open_round", at_least=1) for p, n in partitions.items()}
        with self._opened:
            self._round, self._expected, self._pushes = int(round_index), expected, {}
            self._attempts.forget_seen()
            self._opened.notify_all()

    @property
    def open(self) -> int | None:
        """The round open, or None."""
        with self._lock:
            return self._round

    def register(self, partition: int, attempt: int) -> None:
        with self._lock:
            self._attempts.register(int(partition), int(attempt))

    def close_round(self) -> dict[int, int]:
        """Apply the round's mean gradient and statistics (see the module docstring) and
        close it; returns ``{partition: samples}`` of the pushes. RuntimeError, and nothing
        applied, when an expected partition has not pushed."""
        with self._lock:
            missing = sorted(set(self._expected) - set(self._pushes))
            if missing:
                raise RuntimeError(f"shard {self.shard}: round {self._round} closed without the pushes "
                                   f"of partitions {admission.described(missing)}")
            order = sorted(self._pushes)
            if order:
                self._apply_mean([self._pushes[p] for p in order], [self._expected[p] for p in order])
            received = {p: self._expected[p] for p in order}
            self._round, self._expected, self._pushes = None, {}, {}
            return received

    def discard_round(self) -> None:
        """Close the open round without applying it (its shard is about to take other values)."""
        with self._lock:
            self._round, self._expected, self._pushes = None, {}, {}

    def _apply_mean(self, pushes: list[tuple[np.ndarray, list[np.ndarray]]], samples: list[int]) -> None:
        dw, ds = self.dw, self.ds
        total = float(sum(samples))
        dense = np.zeros(dw + ds, np.float64)
        touched = [np.unique(np.concatenate([index[t] for _, index in pushes]))
                   for t in range(len(self.owned))]
        sums = [np.zeros((len(u), tab.dim), np.float64) for u, tab in zip(touched, self.layout.map.tables)]
        for (update, index), n in zip(pushes, samples):
            dense[:dw] += update[:dw]
            dense[dw:] += np.multiply(update[update.size - ds:], float(n), dtype=np.float64)
            for t, pos, rows in self._spans(update, index):
                sums[t][np.searchsorted(touched[t], pos)] += rows
        # Divided in float64 and rounded once to float32, as the exchange's mean is.
        mean = np.divide(dense, total).astype(np.float32)
        self._step(mean[:dw], [(t, pos, np.divide(s, total).astype(np.float32))
                               for t, (pos, s) in enumerate(zip(touched, sums))])
        self.values[self.values.size - ds:] = mean[dw:]

    # ---- served requests ---------------------------------------------------------------------------
    def handle(self, frame: Frame) -> Frame:
        round_index, partition = int_field(frame.meta, "round"), int_field(frame.meta, "partition")
        if frame.op == Op.PULL:
            counts, index = self._pull_index(frame)
            if round_index < 0:     # between rounds (validation): the values as the last round left them
                with self._lock:
                    if self._round is not None:
                        raise Refused(f"round {self._round} is open: expected a pull of it, received a pull "
                                      f"between rounds")
                    return Frame(Op.OK, {"counts": counts}, self._gather(index))
            with self._opened:
                if self.wait and (self._round is None or self._round < round_index):
                    self._opened.wait_for(lambda: self._round is not None and self._round >= round_index,
                                          timeout=self.wait)
                self._check_round(round_index, partition)
                answer = self._gather(index)
                self.stats["pulls"] += 1
                self.stats["rows_pulled"] += sum(counts)
                self.stats["bytes_pulled"] += answer.nbytes
            return Frame(Op.OK, {"counts": counts}, answer)
        if frame.op == Op.PUSH:
            return self._push(frame, round_index, partition)
        raise Refused(f"op {frame.op} is not served here")

    def _check_round(self, round_index: int, partition: int) -> None:
        if round_index != self._round:
            raise Refused(f"round {round_index} is not open (open: {self._round})")
        if partition not in self._expected:
            raise Refused(f"round {round_index} expects no partition {partition} "
                          f"(expected: {admission.described(self._expected)})")

    def _push(self, frame: Frame, round_index: int, partition: int) -> Frame:
        update, index = self._push_parts(frame)
        admission.finite(update, f"the push of partition {partition}")
        with self._lock:
            self._check_round(round_index, partition)
            self._attempts.check(partition, int_field(frame.meta, "attempt"))
            samples = frame.meta.get("samples")
            if not checks.is_integer(samples) or samples != self._expected[partition]:
                raise Refused(f"expected samples={self._expected[partition]} from partition {partition} "
                              f"(the rows it trains in round {round_index}), received {admission.shown(samples)}")
            self._attempts.note(partition, int_field(frame.meta, "attempt"))
            self.stats["bytes_pushed"] += frame.array.nbytes   # type: ignore[union-attr]  # checked
            if partition in self._pushes:
                self.stats["duplicates"] += 1
                return Frame(Op.OK, {"applied": False})
            self._pushes[partition] = (update.copy(), index)
            self.stats["pushes"] += 1
            self.stats["rows_pushed"] += sum(p.size for p in index)
        return Frame(Op.OK, {"applied": True})
