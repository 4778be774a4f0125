"""The parameter server of the asynchronous modes (a ``FrameServer`` service on the driver).

The server holds the model as one float32 vector (weights, then moving statistics). Workers
``PULL`` it, train ``frequency`` steps on their own copy and ``PUSH`` back either the change
they made (``aggregate="weights"``: the server adds the delta) or the summed gradient of those
steps (``aggregate="gradients"``: the server's optimizer steps, as in DOWNPOUR).

A delta (weights, and moving statistics in both aggregations; only the moving statistics in
ADAG, whose workers normalize their weight change themselves) is divided by ``workers``
before it is added. The Spark layer sets it to the number of training partitions when a push
holds several local steps: N workers that pulled the same weights and each trained a pass
would otherwise move the model N passes' worth (an N-fold step that overshoots, most with
momentum); divided, their deltas add up to their mean, as sync averaging would. A push of one
step is added as it is (``workers=1``), as DOWNPOUR and Hogwild add gradient steps.

- ``async``: pushes are applied one at a time under a lock and pulls read a consistent copy.
- ``hogwild``: deltas are added without a lock and pulls read the live vector.
- ``ssp`` (stale synchronous parallel, bound ``staleness``): as ``async``, and a worker whose
  clock (pushes made this epoch) is more than ``staleness`` ahead of the slowest running
  worker waits, on a condition variable, before its next pull.
- ``adag`` and ``easgd`` (its async variant): as ``async``; a push is a normalized weight
  change (ADAG) or an elastic difference (EASGD, added as it is: ``workers=1``).

Every push is tagged ``(epoch, partition, attempt, sequence)`` and applied at most once: a
retried task recomputes the same sequence of pushes, and those already applied are
acknowledged and dropped. Before anything changes, a push is checked
(``sparkdl.distributed.admission``): a partition the fit trains (``rows``), its newest attempt
(registered by the coordinator, or else the newest seen this epoch: a replaced task is
refused), a sequence and a sample count that partition's rows can produce, and finite values.
Clocks are checked the same way, so no phantom or replaced task can hold back ssp pulls.
Waits end after ``timeout`` seconds with an error that says what was waited for.
"""
from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from sparkdl.distributed import admission
from sparkdl.distributed.compression import ErrorFeedback, get_codec
from sparkdl.distributed.protocol import Frame, Op
from sparkdl.distributed.server import PushBuffers, Refused, int_field
from sparkdl.distributed.strategies import get_strategy
from sparkdl.engine import checks

if TYPE_CHECKING:
    from sparkdl.distributed.protocol import Connection

logger = logging.getLogger(__name__)

MODES = ("async", "hogwild", "ssp", "adag", "easgd")


class ParameterServer(PushBuffers):
    def __init__(self, vector: np.ndarray, mode: str = "async", staleness: int | None = None,
                 optimizer=None, weights_size: int | None = None, timeout: float = 120.0,
                 max_inflight: int = 2, workers: int = 1, *, rows: Mapping[int, int],
                 compression: str | None = None):
        """``rows``: ``{partition: rows}`` of the partitions that train (what pushes may claim).
        ``compression``: None, ``"fp16"`` or ``"int8"``: what pushes and pulls carry."""
        self.codec = get_codec(compression)
        if mode not in MODES:
            raise ValueError(f"ParameterServer: expected mode in {MODES}, received {mode!r}")
        options = {"staleness": staleness} if mode == "ssp" else {"variant": "async"} if mode == "easgd" else {}
        strategy = get_strategy(mode, **options)
        strategy.check_aggregate("weights" if optimizer is None else "gradients", "ParameterServer")
        self.vector = np.array(vector, dtype=np.float32).reshape(-1)
        self.mode = mode
        self.staleness = strategy.staleness
        self.optimizer = optimizer
        self.weights_size = self.vector.size if weights_size is None else int(weights_size)
        if optimizer is not None:
            optimizer.build(self.weights_size)
        self.timeout = float(timeout)
        self.workers = checks.integer(workers, "workers", "ParameterServer", at_least=1)
        self.rows = admission.partition_rows(rows, "ParameterServer")
        self._attempts = admission.Attempts()
        self.max_data = self.vector.nbytes if self.codec is None else self.codec.nbytes(self.vector.size)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._epoch = 0
        self._applied: set[tuple[int, int]] = set()       # (partition, sequence) this epoch
        self._clocks: dict[int, int] = {}                  # running partitions -> pushes made
        # Counters over the server's life; "epoch_max_staleness" (ssp) is the widest gap between
        # a pulling partition's clock and the slowest running one's seen this epoch.
        self.stats = {"pushes": 0, "duplicates": 0, "pulls": 0, "apply_seconds": 0.0,
                      "waits": 0, "wait_seconds": 0.0, "epoch_max_staleness": 0,
                      "bytes_pushed": 0, "bytes_pulled": 0}
        self._setup_push_buffers(self.vector.size, max_inflight, timeout, self.codec)

    # ---- driver side ----------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        """A new job: forget the previous epoch's tags and clocks."""
        with self._lock:
            self._epoch = int(epoch)
            self._applied = set()
            self._clocks = {}
            self._attempts.forget_seen()
            self.stats["epoch_max_staleness"] = 0

    def register(self, partition: int, attempt: int) -> None:
        """The coordinator registered ``attempt`` of ``partition``: older attempts are refused."""
        with self._lock:
            self._attempts.register(int(partition), int(attempt))

    def snapshot(self) -> np.ndarray:
        with self._lock:
            return self.vector.copy()

    # ---- served requests ------------------------------------------------------------------------
    def handle(self, frame: Frame) -> Frame:
        meta = frame.meta
        epoch, partition = int_field(meta, "epoch"), int_field(meta, "partition")
        if epoch != self._epoch:
            raise Refused(f"epoch {epoch} is not running (running: {self._epoch})")
        admission.known_partition(partition, self.rows)
        if frame.op == Op.PULL:
            return self._pull(partition, int_field(meta, "clock"))
        if frame.op == Op.PUSH:
            return self._push(frame, partition)
        if frame.op == Op.CLOCK:
            return self._clock(partition, int_field(meta, "attempt"), meta.get("event"))
        raise Refused(f"op {frame.op} is not served here")

    def _clock(self, partition: int, attempt: int, event) -> Frame:
        if event not in ("start", "done"):
            raise Refused(f"expected event 'start' or 'done', received {admission.shown(event)}")
        with self._changed:
            self._attempts.check(partition, attempt)
            self._attempts.note(partition, attempt)
            if event == "start":
                self._clocks[partition] = 0
            else:
                self._clocks.pop(partition, None)
            self._changed.notify_all()
        # how this server applies a push, so that a client that pulls ahead (``overlap``) can
        # add its own push to weights pulled before the push arrived, as the server does
        return Frame(Op.OK, {"mode": self.mode, "workers": self.workers, "weights_size": self.weights_size,
                             "optimizer": self.optimizer is not None})

    def _pull(self, partition: int, clock: int) -> Frame:
        if self.mode == "hogwild":
            self.stats["pulls"] += 1
            return self._weights(self.vector)
        with self._changed:
            if self.mode == "ssp":
                self._wait_for_slowest(partition, clock)
                if self._clocks:
                    gap = max(clock - min(self._clocks.values()), 0)
                    self.stats["epoch_max_staleness"] = max(self.stats["epoch_max_staleness"], gap)
            self.stats["pulls"] += 1
            consistent = self.vector.copy()
        return self._weights(consistent)

    def _weights(self, vector: np.ndarray) -> Frame:
        """A pull's answer. Compressed pulls are encoded afresh from the exact weights each time
        (no feedback needed: rounding errors do not build up on the server)."""
        if self.codec is None:
            frame = Frame(Op.OK, {}, vector)
        else:
            frame = Frame(Op.OK, {"codec": self.codec.name}, self.codec.encode(vector))
        self.stats["bytes_pulled"] += frame.array.nbytes       # type: ignore[union-attr]  # set above
        return frame

    def _wait_for_slowest(self, partition: int, clock: int) -> None:
        staleness = self.staleness
        assert staleness is not None, "mode ssp has a staleness"

        def near():
            return not self._clocks or clock - min(self._clocks.values()) <= staleness
        if near():
            return
        start = time.perf_counter()
        self.stats["waits"] += 1
        if not self._changed.wait_for(near, timeout=self.timeout):
            slowest = min(self._clocks, key=self._clocks.__getitem__)
            raise Refused(f"ssp: partition {partition} at clock {clock} waited {self.timeout} s for "
                          f"partition {slowest} (clock {self._clocks[slowest]}) to come within "
                          f"staleness {self.staleness}")
        self.stats["wait_seconds"] += time.perf_counter() - start

    def _push(self, frame: Frame, partition: int) -> Frame:
        meta = frame.meta
        attempt = int_field(meta, "attempt")
        update = self.push_values(frame)
        rows = self.rows[partition]
        # An epoch of a partition makes at most one push per batch, each of at most its rows.
        sequence = admission.count(meta, "sequence", 0, rows - 1, f"partition {partition} holds {rows} rows")
        samples = admission.count(meta, "samples", 1, rows, f"partition {partition} holds {rows} rows")
        admission.finite(update, f"the push of partition {partition}")
        tag = (partition, sequence)
        with self._changed:
            self._attempts.check(partition, attempt)
            self._attempts.note(partition, attempt)
            self.stats["bytes_pushed"] += frame.array.nbytes   # type: ignore[union-attr]  # checked
            if tag in self._applied:
                self.stats["duplicates"] += 1
                self._advance_clock(partition, sequence)   # a retry replaying its pushes
                return Frame(Op.OK, {"applied": False})
            self._applied.add(tag)
            self.stats["pushes"] += 1
            if self.mode != "hogwild":
                self._apply(update, samples)
            self._advance_clock(partition, sequence)
        if self.mode == "hogwild":
            self._apply(update, samples)
        return Frame(Op.OK, {"applied": True})

    def _advance_clock(self, partition: int, sequence: int) -> None:
        """Push ``sequence`` of ``partition`` is in (call with the lock held)."""
        if partition in self._clocks:
            self._clocks[partition] = max(self._clocks[partition], sequence + 1)
            self._changed.notify_all()

    def _apply(self, update: np.ndarray, samples: int) -> None:
        start = time.perf_counter()
        w = self.weights_size
        # the push's buffer is the server's own until it answers
        share(update, self.mode, self.optimizer is not None, self.workers, w)
        if self.optimizer is None:
            np.add(self.vector, update, out=self.vector)
        else:
            grads = update[:w]
            np.divide(grads, np.float32(samples), out=grads)
            self.optimizer.apply(self.vector[:w], grads)
            np.add(self.vector[w:], update[w:], out=self.vector[w:])
        self.stats["apply_seconds"] += time.perf_counter() - start   # approximate in hogwild


def share(update: np.ndarray, mode: str, optimizer: bool, workers: int, weights_size: int) -> None:
    """Divide in place the part of a push that a server of ``workers`` workers divides among
    them: all of a change, but not ADAG's weight change (its workers normalize it) nor a
    gradient (a server with an ``optimizer`` divides it by its samples). The server and a
    client that pulls ahead both go through here, so they hold the same bits."""
    if workers > 1:
        deltas = update if not optimizer and mode != "adag" else update[weights_size:]
        np.divide(deltas, np.float32(workers), out=deltas)


class Client:
    """A worker's connection to the parameter server for one epoch of one partition.

    The connection is kept between requests; one that broke (the server's idle timeout during
    a long stretch of training, a network blip) is reopened once and the request sent again,
    which is safe: pulls change nothing and pushes are applied at most once.

    Requests go out in the caller's thread (``pull``, ``push``) or, to overlap them with
    training, in a background thread that carries them one at a time in the order they were
    made (``pull_request`` / ``pull_wait``, ``push_request``); a pull requested after a push
    sees that push applied. The two kinds do not mix: ``done`` and ``close`` wait for (or
    drop) what is still in flight.
    """

    def __init__(self, address, token: bytes, timeout: float, epoch: int, partition: int,
                 attempt: int, size: int, security: str = "integrity", compression: str | None = None,
                 residual: np.ndarray | None = None):
        """``security``: the server's frame protection (``sparkdl.distributed.session``).
        ``compression``: as the server's; pushes then go through error feedback, starting
        from ``residual`` (what this partition's earlier pushes have not delivered yet), which
        ``residual`` holds again after the epoch."""
        self.address, self.token, self.timeout = tuple(address), token, timeout
        self.security = security
        self.epoch, self.partition, self.attempt = epoch, partition, attempt
        self.size = size
        self._conn: Connection | None = None
        self._pull_buffer = np.empty(size, np.float32)
        self.codec = get_codec(compression)
        self._feedback = None if self.codec is None else ErrorFeedback(self.codec, size, residual)
        self._payload = None if self.codec is None else np.empty(self.codec.nbytes(size), np.uint8)
        self._push_payload = None if self.codec is None else np.empty(self.codec.nbytes(size), np.uint8)
        self._applies: dict | None = None      # how the server applies a push (its start reply)
        self._courier: ThreadPoolExecutor | None = None
        self._pulling: Future | None = None
        self._pushing: Future | None = None
        self._stopping = False

    @property
    def residual(self) -> np.ndarray | None:
        """What compressed pushes have not delivered yet (None without compression)."""
        return None if self._feedback is None else self._feedback.residual

    def _request(self, op, meta, array=None, out=None, what="the parameter server"):
        from sparkdl.distributed.protocol import Connection, RemoteError
        meta = dict(meta, epoch=self.epoch, partition=self.partition)
        for attempt in (0, 1):
            try:
                if self._conn is None:
                    # A margin over the server's own waits (ssp), so its explanation arrives
                    # before this side gives up.
                    self._conn = Connection(self.address, self.token, self.timeout + 5,
                                            security=self.security)
                return self._conn.request(op, meta, array, out=out, what=what)
            except RemoteError:
                raise
            except (ConnectionError, BrokenPipeError) as exc:
                self._disconnect()
                if attempt or self._stopping:
                    raise ConnectionError(f"lost the parameter server at {self.address[0]}:"
                                          f"{self.address[1]} twice: {exc}") from exc
            except BaseException:
                self._disconnect()          # a late reply must not be read as the next one's
                raise

    def start(self) -> None:
        reply = self._request(Op.CLOCK, {"event": "start", "attempt": self.attempt})
        self._applies = reply.meta

    def done(self) -> None:
        self.wait_pushed()
        if self._pulling is not None:
            self.pull_wait()
        self._request(Op.CLOCK, {"event": "done", "attempt": self.attempt})

    def pull(self, clock: int) -> np.ndarray:
        codec = self.codec
        frame = self._request(Op.PULL, {"clock": clock},
                              out=self._pull_buffer if codec is None else self._payload,
                              what=f"the weights (partition {self.partition}, clock {clock})")
        expected = (self.size,) if codec is None else (codec.nbytes(self.size),)
        if frame.array is None or frame.array.shape != expected or \
                frame.meta.get("codec") != (None if codec is None else codec.name):
            raise ValueError(f"the parameter server sent {None if frame.array is None else frame.array.shape} "
                             f"({frame.meta.get('codec') or 'float32'}), expected {expected} "
                             f"({'float32' if codec is None else codec.name})")
        if codec is None:
            return frame.array
        return codec.decode(frame.array, self.size, out=self._pull_buffer)

    def push(self, sequence: int, samples: int, update: np.ndarray) -> bool:
        meta, data = self._push_frame(sequence, samples, update)
        return self._send_push(sequence, meta, data)

    def _push_frame(self, sequence: int, samples: int, update: np.ndarray) -> tuple[dict, np.ndarray]:
        meta: dict[str, object] = {"attempt": self.attempt, "sequence": sequence, "samples": samples}
        if self._feedback is None:
            return meta, update
        meta["codec"] = self._feedback.codec.name
        return meta, self._feedback.encode(update, out=self._push_payload)

    def _send_push(self, sequence: int, meta: dict, data: np.ndarray) -> bool:
        reply = self._request(Op.PUSH, meta, data,
                              what=f"the receipt of push {sequence} (partition {self.partition})")
        return bool(reply.meta.get("applied"))

    # ---- requests carried in the background -------------------------------------------------------
    def _background(self) -> ThreadPoolExecutor:
        if self._courier is None:        # one thread: requests leave in the order they were made
            self._courier = ThreadPoolExecutor(1, thread_name_prefix=f"sparkdl-ps-{self.partition}")
        return self._courier

    def pull_request(self, clock: int) -> None:
        """Ask for the weights in the background (after any push requested before);
        ``pull_wait`` returns them. ``clock``: the pushes this partition has requested."""
        assert self._pulling is None, "one pull at a time"
        self._pulling = self._background().submit(self.pull, clock)

    def pull_wait(self) -> np.ndarray:
        """The weights ``pull_request`` asked for (a buffer the next pull reuses), or the
        error that request met."""
        assert self._pulling is not None, "pull_wait follows pull_request"
        pulling, self._pulling = self._pulling, None
        return pulling.result()

    def push_request(self, sequence: int, samples: int, update: np.ndarray) -> None:
        """Send a push in the background, once the previous one is in. ``update`` must stay
        unchanged until then: it is sent from where it is (unless compressed)."""
        self.wait_pushed()
        meta, data = self._push_frame(sequence, samples, update)
        self._pushing = self._background().submit(self._send_push, sequence, meta, data)

    def wait_pushed(self) -> None:
        """Wait for the push in the background, if any (its error, if it met one)."""
        if self._pushing is not None:
            pushing, self._pushing = self._pushing, None
            pushing.result()

    def added(self, update: np.ndarray, out: np.ndarray) -> np.ndarray | None:
        """The change the server makes to its vector when it applies the last push of
        ``update``: what arrives of it, shared among the workers as the server shares it. That
        is ``update`` itself, the decoded push (valid until the next push) or, when shared,
        ``out``; None where the change is the server's own optimizer's step."""
        applies = self._applies
        assert applies is not None, "start() learnt how the server applies a push"
        if applies.get("optimizer"):
            return None
        arrived = update if self._feedback is None else self._feedback.sent
        if int(applies["workers"]) == 1:
            return arrived
        out[...] = arrived
        share(out, str(applies["mode"]), False, int(applies["workers"]), int(applies["weights_size"]))
        return out

    def close(self) -> None:
        """Close the connection; a request still in the background is cut off (a push cut off
        before it has all arrived is not applied) and those queued behind it are dropped."""
        if self._courier is not None:
            courier, self._courier = self._courier, None
            self._stopping = True
            conn = self._conn
            if conn is not None:        # wakes a background request waiting for its answer
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
            courier.shutdown(wait=True, cancel_futures=True)
            self._stopping = False
            self._pulling = self._pushing = None
        self._disconnect()

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
