"""Synchronous rounds over sparkdl's own data plane instead of Spark's broadcast and reduce.

Each round the driver publishes one float32 vector (weights, moving statistics and, when
models are averaged, optimizer slots, back to back). Every task pulls it over an
authenticated socket, trains, and pushes one vector back; the driver adds the pushes into a
single float64 buffer in partition order, whatever order they arrive in, so the sum — and
the model — is the same bit for bit however tasks are scheduled, retried or killed. A push
that arrives before those of lower partitions is held (a float32 copy) until they are in;
Spark starts tasks in partition order, so few wait, and the driver never holds a copy per
worker. At most ``max_inflight`` pushes are being received at once. A push is tagged
``(round, partition, attempt)``; the first push of a partition in a round is applied, later
ones (a retried or speculative task recomputes the same thing) are acknowledged and dropped.
Before anything changes, a push is checked (``sparkdl.distributed.admission``) and refused
whole unless its round is open, its partition is one the round expects, its attempt is the
partition's newest (registered by the coordinator, or else the newest seen this round), its
sample count is the one that partition trains in the round, and its values are finite.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from collections.abc import Mapping

from sparkdl.distributed import admission
from sparkdl.distributed.protocol import Connection, Frame, Op
from sparkdl.distributed.server import PushBuffers, Refused, int_field
from sparkdl.engine import checks

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20   # elements added per step, so the float64 temporaries stay small


@dataclass(frozen=True)
class Layout:
    """Named segments of one flat float32 vector; ``weighted`` segments are multiplied by the
    pushing partition's sample count before they are summed (weights, statistics, slots);
    the others are sums already (gradients). ``wire``: the ``(start, stop)`` blocks of the
    vector in the order a push carries them (``pack``), when not the vector's own order: a
    task that streams its gradients while backward goes on sends the last layer's first."""
    names: tuple
    sizes: tuple
    weighted: tuple
    wire: tuple = ()

    @property
    def size(self) -> int:
        return int(sum(self.sizes))

    def bounds(self):
        start = 0
        for name, size, weighted in zip(self.names, self.sizes, self.weighted):
            yield name, start, start + size, weighted
            start += size

    def split(self, vector: np.ndarray) -> dict:
        return {name: vector[a:b] for name, a, b, _ in self.bounds()}

    def pack(self, parts: dict, out: np.ndarray | None = None) -> np.ndarray:
        """The parts as one vector in the order a push carries it."""
        out = np.empty(self.size, np.float32) if out is None else out
        segments = {name: (a, parts[name].reshape(-1)) for name, a, _, _ in self.bounds()}
        for name, a, b, at, _ in self.blocks():
            start, values = segments[name]
            out[at:at + b - a] = values[a - start:b - start]
        return out

    def blocks(self):
        """``(segment, start, stop, at, weighted)`` in the order a push carries them: the
        push's values from ``at`` are the vector's ``[start, stop)``, in ``segment``."""
        if not self.wire:
            for name, a, b, weighted in self.bounds():
                yield name, a, b, a, weighted
            return
        segments = list(self.bounds())
        at = 0
        for a, b in self.wire:
            name, _, _, weighted = next(seg for seg in segments if seg[1] <= a and b <= seg[2])
            yield name, a, b, at, weighted
            at += b - a

    def streamed(self, order: list[tuple[int, int]]) -> Layout:
        """This layout with its first segment (a round's gradients) carried in the blocks of
        ``order`` (each of its values once), then the other segments."""
        first = self.sizes[0]
        wire = tuple((int(a), int(b)) for a, b in order)
        ends = [0] + [b for _, b in sorted(wire)]
        assert [a for a, _ in sorted(wire)] == ends[:-1] and ends[-1] == first, \
            "the blocks cover the gradients once"
        wire += tuple((a, b) for _, a, b, _ in list(self.bounds())[1:])
        return Layout(self.names, self.sizes, self.weighted, wire)


def round_layouts(model, aggregate: str, streamed: bool = False) -> tuple[Layout, Layout]:
    """``(pull, push)`` layouts of a sync round for a compiled model; with ``streamed``
    (aggregate "gradients"), a push carries the gradients in the order backward finishes
    them (``Model.gradient_ranges``), so a task can send them while backward goes on."""
    opt = model.optimizer
    opt.build(model.flat_weights.size)
    slots = sorted(opt.slots) if aggregate == "weights" else []
    state = model.flat_state.size
    names = ["weights"] + (["state"] if state else []) + [f"slot:{k}" for k in slots]
    sizes = [model.flat_weights.size] + ([state] if state else []) + [opt.slots[k].size for k in slots]
    pull = Layout(tuple(names), tuple(sizes), tuple(True for _ in names))
    if aggregate == "gradients":
        names[0] = "gradients"
        push = Layout(tuple(names), tuple(sizes), (False,) + tuple(True for _ in names[1:]))
        if streamed:
            push = push.streamed(model.gradient_ranges())
    else:
        push = pull
    return pull, push


class RoundExchange(PushBuffers):
    """The driver's side of the data plane for sync rounds (a ``FrameServer`` service)."""

    def __init__(self, push: Layout, max_inflight: int = 2, timeout: float = 120.0, codec=None):
        """``codec``: pushes arrive compressed with it (``sparkdl.distributed.compression``)
        and are decoded before they are checked and added."""
        self.push = push
        self.max_data = push.size * 4 if codec is None else codec.nbytes(push.size)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._round: int | None = None
        self._payload: np.ndarray | None = None
        self._payload_meta: dict = {}
        self._sum = np.zeros(push.size, np.float64)
        self._chunk = np.empty(min(push.size, _CHUNK), np.float64)
        self._received: dict[int, int] = {}
        self._samples: dict[int, int] = {}   # what each expected partition's push carries
        self._order: list[int] = []        # the partitions expected to push, ascending
        self._attempts = admission.Attempts()
        self._next = 0                     # index into _order of the next one to add
        self._waiting: dict[int, tuple[np.ndarray, int]] = {}
        self.duplicates = 0
        self.bytes_received = 0               # of every push that arrived, as it travelled
        self.waiting_most = 0                 # the most pushes held at once (memory check)
        self._setup_push_buffers(push.size, max_inflight, timeout, codec)

    # ---- driver side ----------------------------------------------------------------------------
    def open_round(self, round_index: int, payload: np.ndarray, meta: dict,
                   partitions: Mapping[int, int]) -> None:
        """Serve ``payload`` for ``round_index`` and expect one push from each of ``partitions``
        (``{partition: samples}``: the rows it trains in the round, what its push must carry)."""
        samples = {int(p): int(n) for p, n in partitions.items()}
        with self._lock:
            self._round = int(round_index)
            self._payload = payload
            self._payload_meta = dict(meta, round=int(round_index))
            self._received = {}
            self._samples = samples
            self._order = sorted(samples)
            self._next = 0
            self._waiting = {}
            self._attempts.forget_seen()

    def register(self, partition: int, attempt: int) -> None:
        """The coordinator registered ``attempt`` of ``partition``: older attempts are refused."""
        with self._lock:
            self._attempts.register(int(partition), int(attempt))

    def close_round(self) -> tuple[np.ndarray, dict[int, int]]:
        """The summed pushes (float64) and the samples each partition reported (a partition
        whose push still waits for a lower one's is not in the sum, nor in the counts)."""
        with self._lock:
            self._round = None
            self._payload = None
            self._waiting = {}
            return self._sum, dict(self._received)

    # ---- served requests ------------------------------------------------------------------------
    def handle(self, frame: Frame) -> Frame:
        meta = frame.meta
        round_index = int_field(meta, "round")
        if frame.op == Op.PULL:
            with self._lock:
                if round_index != self._round:
                    raise Refused(f"round {round_index} is not open (open: {self._round})")
                return Frame(Op.OK, self._payload_meta, self._payload)
        if frame.op == Op.PUSH:
            return self._push(frame, round_index)
        raise Refused(f"op {frame.op} is not served here")

    def _push(self, frame: Frame, round_index: int) -> Frame:
        partition, attempt = int_field(frame.meta, "partition"), int_field(frame.meta, "attempt")
        with self._lock:
            self.bytes_received += 0 if frame.array is None else frame.array.nbytes
        vector = self.push_values(frame)
        admission.finite(vector, f"the push of partition {partition}")
        with self._lock:
            if round_index != self._round:
                raise Refused(f"round {round_index} is not open (open: {self._round})")
            samples = self._check(round_index, partition, attempt, frame.meta.get("samples"))
            if partition in self._received or partition in self._waiting:
                self.duplicates += 1
                logger.debug("round %d: dropped a second push of partition %d (attempt %d)",
                             round_index, partition, attempt)
                return Frame(Op.OK, {"applied": False})
            if partition != self._order[self._next]:
                self._waiting[partition] = (vector.copy(), samples)   # the frame's buffer is reused
                self.waiting_most = max(self.waiting_most, len(self._waiting))
                return Frame(Op.OK, {"applied": True})
            self._add(vector, samples)
            self._received[partition] = samples
            self._next += 1
            while self._next < len(self._order) and self._order[self._next] in self._waiting:
                ready = self._order[self._next]
                held, held_samples = self._waiting.pop(ready)
                self._add(held, held_samples)
                self._received[ready] = held_samples
                self._next += 1
        return Frame(Op.OK, {"applied": True})

    def _check(self, round_index: int, partition: int, attempt: int, samples) -> int:
        """Refuse a push the round does not expect, from a replaced attempt, or whose sample
        count is not the one its partition trains; returns that count (called with the lock held;
        changes nothing but the newest attempt seen)."""
        if partition not in self._samples:
            raise Refused(f"round {round_index} expects no push from partition {partition} "
                          f"(expected: {admission.described(self._samples)})")
        self._attempts.check(partition, attempt)
        if not checks.is_integer(samples) or samples != self._samples[partition]:
            raise Refused(f"expected samples={self._samples[partition]} from partition {partition} "
                          f"(the rows it trains in round {round_index}), received "
                          f"{admission.shown(samples)}")
        self._attempts.note(partition, attempt)
        return int(samples)

    def _add(self, vector: np.ndarray, samples: int) -> None:
        """``sum += vector * samples`` (weighted segments) in float64, a chunk at a time (called
        with the lock held, so one chunk buffer serves every push). The round's first push is
        written, not added: no zeroing of the sum each round."""
        first = self._next == 0
        for _, a, b, at, weighted in self.push.blocks():     # the push's [at, ...) is the sum's [a, b)
            if first:            # rounded as vector.astype(float64) * samples
                if weighted:
                    np.multiply(vector[at:at + b - a], float(samples), out=self._sum[a:b], dtype=np.float64)
                else:
                    self._sum[a:b] = vector[at:at + b - a]
                continue
            for lo in range(a, b, _CHUNK):
                hi = min(lo + _CHUNK, b)
                part = self._chunk[:hi - lo]
                pushed = vector[at + lo - a:at + hi - a]
                if weighted:
                    np.multiply(pushed, float(samples), out=part, dtype=np.float64)
                else:
                    part[...] = pushed
                np.add(self._sum[lo:hi], part, out=self._sum[lo:hi])


@dataclass(frozen=True)
class Endpoint:
    """What a task needs to reach the driver's exchange (shipped in the task closure)."""
    address: tuple
    token: bytes
    timeout: float
    pull: Layout
    push: Layout
    security: str = "integrity"       # the server's protection mode (session.MODES)


# ---- task side ------------------------------------------------------------------------------------
_local = threading.local()


def _buffer(name: str, size: int) -> np.ndarray:
    """A float32 buffer reused across rounds by this thread of a Python worker."""
    buffers = _local.__dict__.setdefault("buffers", {})
    buf = buffers.get(name)
    if buf is None or buf.size != size:
        buf = buffers[name] = np.empty(size, np.float32)
    return buf


def pull(end: Endpoint, round_index: int) -> tuple[dict, dict]:
    """The round's payload as ``(segments, meta)``; the segments are views of a buffer this
    worker reuses, valid until its next pull."""
    layout = end.pull
    with Connection(end.address, end.token, end.timeout, security=end.security) as conn:
        frame = conn.request(Op.PULL, {"round": round_index}, out=_buffer("pull", layout.size),
                             what=f"the weights of round {round_index}")
    if frame.array is None or frame.array.shape != (layout.size,):
        got = None if frame.array is None else frame.array.shape
        raise ValueError(f"round {round_index}: the driver sent {got}, expected {layout.size} values")
    return layout.split(frame.array), frame.meta


def push(end: Endpoint, round_index: int, partition: int, attempt: int, samples: int,
         parts: dict) -> bool:
    """Send this partition's result; True when the driver applied it (False: a duplicate)."""
    vector = end.push.pack(parts, out=_buffer("push", end.push.size))
    meta = {"round": round_index, "partition": partition, "attempt": attempt, "samples": samples}
    with Connection(end.address, end.token, end.timeout, security=end.security) as conn:
        reply = conn.request(Op.PUSH, meta, vector, what=f"the driver's receipt for round {round_index}")
    return bool(reply.meta.get("applied"))
