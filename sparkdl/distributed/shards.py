"""The sharded parameter server of the async modes: K ``ShardServer`` services, each holding
part of a model's vector (``shard_layout``) in a ``shard_store.ShardStore``, whose
arithmetic is the engine's own on the same elements as the whole-vector server's.

Requests (frames of ``protocol``, one array each):

- ``PULL`` meta ``{epoch, partition, clock, counts}``, array: the ids wanted, table after
  table (``counts[t]`` of table ``t``, sorted, all owned by the shard; int32 or int64 as
  ``ParamMap.id_dtype``). Answer: float32 ``[dense range | rows of table 0 | ...]``.
- ``PUSH`` meta ``{epoch, partition, attempt, sequence, samples, counts}``, array: uint8
  bytes of float32 ``[dense range | rows of table 0 | ...]`` followed by the ids. In weights
  mode the values are added (divided by ``workers``, as ``ParameterServer`` does); in
  gradients mode they are divided by ``samples`` and the optimizer steps the dense weights
  and *only the pushed rows* (a lazy row-sparse step, as ``Optimizer.apply`` with a
  ``sparse_index`` does in single-process training; slots live beside their rows in the
  shard). The whole-vector ``ParameterServer`` steps every row: the two agree exactly for
  SGD without momentum; with momentum, Adam, RMSprop, Adagrad or FTRL they agree on the
  pushed rows' values and slots up to the steps in which other rows were pushed, where the
  dense server also moves and decays untouched rows and a shard leaves them as they are.
- ``CLOCK`` meta ``{epoch, partition, attempt, event}``: a worker starts or ends its epoch.

Each push is tagged ``(partition, sequence)`` and applied at most once per epoch; a client
sends every push and every clock to every shard, so each shard's clocks are those a single
server would keep (ssp waits on them alike). Checks before anything changes are those of the
parameter server (``admission``), plus: ids owned by the shard, sorted and unique, counts
matching the data.
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
from sparkdl.distributed.strategies import get_strategy
from sparkdl.engine import checks

MODES = ("async", "hogwild", "ssp")


class Ledger:
    """A server's record of an epoch (not thread-safe: its owner holds the lock): the running
    epoch, each partition's newest attempt, the pushes applied, and ssp's clocks."""

    def __init__(self, rows: Mapping[int, int], who: str):
        self.rows = admission.partition_rows(rows, who)
        self.attempts = admission.Attempts()
        self.epoch = 0
        self.applied: set[tuple[int, int]] = set()
        self.clocks: dict[int, int] = {}

    def begin_epoch(self, epoch: int) -> None:
        self.epoch, self.applied, self.clocks = int(epoch), set(), {}
        self.attempts.forget_seen()

    def admit(self, meta: dict) -> int:
        """The request's partition, once its epoch and partition are checked."""
        epoch, partition = int_field(meta, "epoch"), int_field(meta, "partition")
        if epoch != self.epoch:
            raise Refused(f"epoch {epoch} is not running (running: {self.epoch})")
        admission.known_partition(partition, self.rows)
        return partition

    def attempt(self, partition: int, attempt: int) -> None:
        self.attempts.check(partition, attempt)
        self.attempts.note(partition, attempt)

    def advance(self, partition: int, sequence: int) -> None:
        if partition in self.clocks:
            self.clocks[partition] = max(self.clocks[partition], sequence + 1)


class ShardServer(ShardStore):
    """Shard ``shard`` of a ``ShardLayout``, served by a ``FrameServer`` (see the module
    docstring). ``values``: its local vector (``layout.shard_values``). ``optimizer``: None
    for weight deltas, else the optimizer of gradients mode (the shard steps a copy).
    ``rows``: ``{partition: rows}`` of the partitions that train. ``workers``: what weight
    deltas are divided by, as ``ParameterServer``'s."""

    def __init__(self, layout: ShardLayout, shard: int, values: np.ndarray, *, rows: Mapping[int, int],
                 mode: str = "async", optimizer=None, staleness: int | None = None,
                 timeout: float = 120.0, workers: int = 1):
        if mode not in MODES:
            raise ValueError(f"ShardServer: expected mode in {MODES}, received {mode!r}")
        strategy = get_strategy(mode, **({"staleness": staleness} if mode == "ssp" else {}))
        strategy.check_aggregate("weights" if optimizer is None else "gradients", "ShardServer")
        self.mode, self.staleness = mode, strategy.staleness
        self.workers = checks.integer(workers, "workers", "ShardServer", at_least=1)
        self.timeout = float(timeout)
        super().__init__(layout, shard, values, optimizer)
        self.ledger = Ledger(rows, "ShardServer")
        self._changed = threading.Condition(self._lock)

    # ---- driver side ------------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        with self._lock:
            self.ledger.begin_epoch(epoch)
            self.stats["epoch_max_staleness"] = 0

    def register(self, partition: int, attempt: int) -> None:
        with self._lock:
            self.ledger.attempts.register(int(partition), int(attempt))

    # ---- served requests --------------------------------------------------------------------------
    def handle(self, frame: Frame) -> Frame:
        with self._lock:
            partition = self.ledger.admit(frame.meta)
        if frame.op == Op.PULL:
            return self._pull(frame, partition)
        if frame.op == Op.PUSH:
            return self._push(frame, partition)
        if frame.op == Op.CLOCK:
            return self._clock(frame.meta, partition)
        raise Refused(f"op {frame.op} is not served here")

    def _clock(self, meta: dict, partition: int) -> Frame:
        event = meta.get("event")
        if event not in ("start", "done"):
            raise Refused(f"expected event 'start' or 'done', received {admission.shown(event)}")
        with self._changed:
            self.ledger.attempt(partition, int_field(meta, "attempt"))
            if event == "start":
                self.ledger.clocks[partition] = 0
            else:
                self.ledger.clocks.pop(partition, None)
            self._changed.notify_all()
        return Frame(Op.OK, {})

    def _pull(self, frame: Frame, partition: int) -> Frame:
        counts, index = self._pull_index(frame)
        clock = int_field(frame.meta, "clock")
        if self.mode == "hogwild":          # reads the live values, as hogwild's pulls do
            answer = self._gather(index)
        else:
            with self._changed:
                if self.mode == "ssp":
                    self._wait_for_slowest(partition, clock)
                    clocks = self.ledger.clocks
                    if clocks:          # (as the whole-vector server measures it)
                        gap = max(clock - min(clocks.values()), 0)
                        self.stats["epoch_max_staleness"] = max(self.stats["epoch_max_staleness"], gap)
                answer = self._gather(index)
        with self._lock:
            self.stats["pulls"] += 1
            self.stats["rows_pulled"] += sum(counts)
            self.stats["bytes_pulled"] += answer.nbytes
        return Frame(Op.OK, {"counts": counts}, answer)

    def _wait_for_slowest(self, partition: int, clock: int) -> None:
        clocks, staleness = self.ledger.clocks, self.staleness
        assert staleness is not None, "mode ssp has a staleness"
        if clocks and clock - min(clocks.values()) > staleness:
            self.stats["waits"] += 1
        if self._changed.wait_for(lambda: not clocks or clock - min(clocks.values()) <= staleness,
                                  timeout=self.timeout):
            return
        slowest = min(clocks, key=clocks.__getitem__)
        raise Refused(f"ssp: partition {partition} at clock {clock} waited {self.timeout} s for "
                      f"partition {slowest} (clock {clocks[slowest]}) to come within staleness {staleness}")

    def _push(self, frame: Frame, partition: int) -> Frame:
        meta = frame.meta
        values, index = self._push_parts(frame)
        rows = self.ledger.rows[partition]
        sequence = admission.count(meta, "sequence", 0, rows - 1, f"partition {partition} holds {rows} rows")
        samples = admission.count(meta, "samples", 1, rows, f"partition {partition} holds {rows} rows")
        admission.finite(values, f"the push of partition {partition}")
        with self._changed:
            self.ledger.attempt(partition, int_field(meta, "attempt"))
            self.stats["bytes_pushed"] += frame.array.nbytes   # type: ignore[union-attr]  # checked
            tag = (partition, sequence)
            if tag in self.ledger.applied:
                self.stats["duplicates"] += 1
                self.ledger.advance(partition, sequence)
                self._changed.notify_all()
                return Frame(Op.OK, {"applied": False})
            self.ledger.applied.add(tag)
            self.stats["pushes"] += 1
            self.stats["rows_pushed"] += sum(p.size for p in index)
            if self.mode != "hogwild":
                self._apply(values, index, samples)
            self.ledger.advance(partition, sequence)
            self._changed.notify_all()
        if self.mode == "hogwild":
            self._apply(values, index, samples)
        return Frame(Op.OK, {"applied": True})

    def _apply(self, update: np.ndarray, index: list[np.ndarray], samples: int) -> None:
        """Apply a push's values ``[dense weights | rows ... | statistics]`` at the local rows
        ``index``, as ``ParameterServer._apply`` does on the whole vector."""
        dw, ds = self.dw, self.ds
        state = update[update.size - ds:]
        if self.workers > 1:
            np.divide(state if self.optimizer is not None else update, np.float32(self.workers),
                      out=state if self.optimizer is not None else update)
        np.add(self.values[self.values.size - ds:], state, out=self.values[self.values.size - ds:])
        spans = self._spans(update, index)
        if self.optimizer is None:
            self.values[:dw] += update[:dw]
            for t, pos, rows in spans:
                lo, hi = int(self.row_offsets[t]), int(self.row_offsets[t + 1])
                self.values[lo:hi].reshape(-1, rows.shape[1])[pos] += rows
            return
        divisor = np.float32(samples)
        self._step(update[:dw] / divisor, [(t, pos, rows / divisor) for t, pos, rows in spans])
