"""All-reduce between the tasks of a fit, with nothing going through the driver.

Each of N ranks runs a small ``FrameServer`` (its ``RingPeer``) and knows the others'
addresses. The float32 vector is cut into N segments (sizes differ by at most one; rank j
owns segment j), and a round's all-reduce has two phases:

1. **Reduce-scatter by direct send.** Every rank sends segment j of its vector to rank j.
   The owner adds the N contributions of its segment into a float64 buffer **in rank
   order** (each weighted by its rank's sample count where the layout says so), exactly as
   the driver's round exchange (``sparkdl.distributed.exchange.RoundExchange``) adds pushes
   in partition order, and divides by the total samples once, rounding to float32 as
   ``transports.mean_of_pushes`` does. The order of additions is fixed by construction,
   whatever order frames arrive in, so the mean is bit-identical run to run, across a
   retry, and to the hub's mean. (A plain ring reduce-scatter starts each segment's chain
   at a different rank, so its summation order depends on the segment: it cannot equal the
   hub's partition-order sum.)
2. **All-gather around the ring.** In step s, rank r sends the mean segment (r - s) mod N
   to its right neighbour r + 1, which keeps it and forwards it in the next step.

Each rank sends 2·M·(N−1)/N bytes per round (M: the vector's bytes), as in a plain ring.

The reduce-scatter frames also carry every rank's small ``info`` (samples, steps, whether
it diverged), so every rank ends the round knowing all of them; when a rank diverged, the
all-gather is skipped by all and no rank applies anything.

With a ``codec`` (``sparkdl.distributed.compression``) both phases send encoded segments:
a rank sends ``Q(x_j + r_j)`` of each segment j it contributes and keeps the rest ``r_j``
(error feedback; its own segment it adds exactly), and the owner sends ``Q(m + g)`` of the
mean segment, keeping ``g``, and every rank — the owner too — takes its decoding, so all
ranks hold the same bits. Segments are forwarded in the all-gather as they arrived, not
encoded again. ``reset_residuals`` zeroes what error feedback holds (a task does it where the
driver keeps the state, so a replay from there reproduces the same bits).

Frames are ``RING_SEGMENT`` requests (op code 32) over authenticated ``Connection``s with
the fit's token and protection mode (``security``: integrity tags or encryption, as the
driver's data plane), tagged ``(round, rank, attempt, phase, segment)``; a peer refuses a frame
of another attempt, of a round it has left behind, from a rank that should not send it,
of the wrong size, or a second copy. Every wait is bounded by ``timeout``: a peer that does
not deliver ends the round with a ``TimeoutError`` naming the peer rank, the phase and the
round; a peer that cannot be reached, with a ``ConnectionError`` naming it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import numpy as np

from sparkdl.distributed.compression import ErrorFeedback
from sparkdl.distributed.protocol import Connection, Frame, Op
from sparkdl.distributed.server import FrameServer, Refused, int_field
from sparkdl.errors import AuthenticationError, RemoteError

logger = logging.getLogger(__name__)

#: The op code of a ring segment frame (services define ops >= 16; 32 and up are the ring's).
RING_SEGMENT = 32

_CHUNK = 1 << 20          # elements added per step, so the float64 temporary stays small
_PHASES = ("reduce", "gather")


def segment_bounds(size: int, n: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of ``n`` consecutive segments covering ``size`` values; the first
    ``size % n`` segments hold one value more."""
    if n < 1 or size < 0:
        raise ValueError(f"segment_bounds: expected n >= 1 and size >= 0, received n={n}, size={size}")
    base, extra = divmod(size, n)
    out, start = [], 0
    for j in range(n):
        stop = start + base + (1 if j < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def weighted_mean_into(out: np.ndarray, contributions: Sequence[tuple[np.ndarray, int]],
                       ranges: Sequence[tuple[int, int, bool]], acc: np.ndarray,
                       chunk: np.ndarray) -> None:
    """``out = float32(sum_r w_r x_r / sum_r n_r)``: the contributions ``(x_r, n_r)`` added in
    the order given into the float64 ``acc``, each ``x_r`` multiplied by its ``n_r`` inside the
    ``ranges`` ``(start, stop, weighted)`` that are weighted, the first written rather than
    added (so its rounding is the hub's). ``chunk``: a float64 scratch buffer."""
    total = sum(int(n) for _, n in contributions)
    for i, (x, n) in enumerate(contributions):
        for a, b, weighted in ranges:
            if i == 0:
                if weighted:
                    np.multiply(x[a:b], float(n), out=acc[a:b], dtype=np.float64)
                else:
                    acc[a:b] = x[a:b]
                continue
            for lo in range(a, b, chunk.size):
                hi = min(lo + chunk.size, b)
                part = chunk[:hi - lo]
                if weighted:
                    np.multiply(x[lo:hi], float(n), out=part, dtype=np.float64)
                else:
                    part[...] = x[lo:hi]
                np.add(acc[lo:hi], part, out=acc[lo:hi])
    np.divide(acc[:out.size], total, out=out, casting="unsafe")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _clip(ranges, a: int, b: int) -> list[tuple[int, int, bool]]:
    """The layout ``ranges`` inside segment ``[a, b)``, relative to ``a``."""
    out = []
    for lo, hi, weighted in ranges:
        lo, hi = max(lo, a), min(hi, b)
        if lo < hi:
            out.append((lo - a, hi - a, weighted))
    return out


class _Mailbox:
    """The service of a rank's FrameServer: segment frames land in pooled buffers and wait,
    keyed by ``(round, phase, segment, sender)``, until the rank's own thread takes them."""

    def __init__(self, rank: int, ranks: int, attempt: int | None, bounds: list[tuple[int, int]],
                 timeout: float, codec=None):
        self.rank, self.ranks, self.bounds, self.timeout = rank, ranks, bounds, timeout
        self.codec = codec
        self.attempt = attempt
        self.connected = threading.Event()      # the attempt is known
        if attempt is not None:
            self.connected.set()
        self.max_data = 0
        longest = max((b - a for a, b in bounds), default=0)
        self.data_limits = {RING_SEGMENT: max(4 * longest, 0 if codec is None else codec.nbytes(longest))}
        self.round: int | None = None           # the round this rank is in (None before the first)
        self._cond = threading.Condition()
        self._frames: dict[tuple, tuple[dict, np.ndarray]] = {}
        self._landing: set[tuple] = set()
        self._pool: dict[tuple, list[np.ndarray]] = {}

    def wire(self, segment: int, diverged: bool = False) -> tuple[type, int]:
        """``(dtype, size)`` of segment ``segment`` as it travels (a diverged rank sends none)."""
        a, b = self.bounds[segment]
        if diverged:
            return np.float32, 0
        return (np.float32, b - a) if self.codec is None else (np.uint8, self.codec.nbytes(b - a))

    def _key(self, meta: dict, shape, dtype) -> tuple:
        """The frame's key, or Refused saying why this rank does not expect it."""
        round_index, sender = int_field(meta, "round"), int_field(meta, "rank")
        attempt, segment = int_field(meta, "attempt"), int_field(meta, "segment")
        phase = meta.get("phase")
        if not self.connected.wait(self.timeout):      # a peer that connected first sends early
            raise Refused(f"rank {self.rank} did not learn its peers within {self.timeout} s")
        if attempt != self.attempt:
            raise Refused(f"rank {self.rank} is in attempt {self.attempt}, received a frame of attempt {attempt}")
        if phase not in _PHASES:
            raise Refused(f"expected phase 'reduce' or 'gather', received {str(phase)[:40]!r}")
        if not 0 <= sender < self.ranks or sender == self.rank:
            raise Refused(f"rank {self.rank} of {self.ranks} takes no frame from rank {sender}")
        if phase == "reduce" and segment != self.rank:
            raise Refused(f"rank {self.rank} owns segment {self.rank}, received segment {segment} to reduce")
        if phase == "gather" and (sender != (self.rank - 1) % self.ranks or not 0 <= segment < self.ranks
                                  or segment == self.rank):
            raise Refused(f"rank {self.rank} takes gathered segments other than its own from rank "
                          f"{(self.rank - 1) % self.ranks}, received segment {segment} from rank {sender}")
        if self.round is not None and not self.round <= round_index <= self.round + 1:
            raise Refused(f"rank {self.rank} is in round {self.round}, received a frame of round {round_index}")
        kind, size = self.wire(segment, bool(meta.get("diverged")))
        if tuple(shape) != (size,) or dtype != kind:
            raise Refused(f"expected {size} {np.dtype(kind).name} values of segment {segment}, received "
                          f"shape {tuple(shape)} of {np.dtype(dtype).name}")
        return (round_index, phase, segment, sender)

    # ---- served requests ------------------------------------------------------------------------
    def receive_buffer(self, op, meta, shape, dtype):
        if op != RING_SEGMENT:
            return None
        try:
            key = self._key(meta, shape, dtype)
        except Refused:
            return None          # the server allocates; handle() refuses the frame
        with self._cond:
            if key in self._frames or key in self._landing:
                return None
            self._landing.add(key)
            return self._take(int(shape[0]), dtype)

    def handle(self, frame: Frame) -> Frame:
        if frame.op != RING_SEGMENT:
            raise Refused(f"op {frame.op} is not served here")
        array = frame.array
        if array is None:
            raise Refused("expected a segment")
        key = self._key(frame.meta, array.shape, array.dtype)
        info = frame.meta.get("info")
        if key[1] == "reduce" and not (isinstance(info, dict) and all(
                _count(info.get(k)) for k in ("samples", "steps") if k in info or k == "samples")):
            with self._cond:        # the place it landed in is free for a good copy
                self._landing.discard(key)
            raise Refused(f"expected the sender's info with counts samples (and steps) >= 0, received "
                          f"{str(info)[:200]}")
        with self._cond:
            if key not in self._landing or key in self._frames:
                raise Refused(f"a second copy of segment {key[2]} ({key[1]}) of round {key[0]} "
                              f"from rank {key[3]}, or one that found no place")
            self._landing.discard(key)
            self._frames[key] = (dict(frame.meta), array)
            self._cond.notify_all()
        return Frame(Op.OK, {})

    # ---- the rank's own thread --------------------------------------------------------------------
    def _take(self, size: int, dtype) -> np.ndarray:
        free = self._pool.get((size, np.dtype(dtype)))
        return free.pop() if free else np.empty(size, dtype)

    def give_back(self, array: np.ndarray) -> None:
        with self._cond:
            self._pool.setdefault((array.size, array.dtype), []).append(array)

    def begin(self, round_index: int) -> None:
        """This rank enters ``round_index``: frames of older rounds are dropped and refused."""
        with self._cond:
            self.round = round_index
            for key in [k for k in self._frames if k[0] < round_index]:
                array = self._frames.pop(key)[1]
                self._pool.setdefault((array.size, array.dtype), []).append(array)

    def wait(self, key: tuple, deadline: float, timeout: float) -> tuple[dict, np.ndarray]:
        """The frame ``key`` once it is in, or TimeoutError naming the sender, phase and round."""
        with self._cond:
            while key not in self._frames:
                left = deadline - time.monotonic()
                if left <= 0:
                    round_index, phase, segment, sender = key
                    before = ", or a rank before it in the ring" if phase == "gather" else ""
                    raise TimeoutError(f"ring: rank {self.rank} waited {timeout} s for segment {segment} "
                                       f"({phase}) of round {round_index} from rank {sender}, which "
                                       f"did not send it (the peer died or is stuck{before})")
                self._cond.wait(left)
            return self._frames.pop(key)


class RingPeer:
    """Rank ``rank`` of ``ranks`` in an all-reduce of float32 vectors of ``size`` values
    (see the module docstring). ``connect(addresses)`` once every rank's ``address`` is known,
    then ``allreduce`` each round; ``close()`` at the end."""

    def __init__(self, rank: int, ranks: int, size: int, token: bytes, timeout: float,
                 attempt: int | None = 0, host: str = "127.0.0.1", port: int = 0,
                 security: str = "integrity", codec=None):
        if not 0 <= rank < ranks:
            raise ValueError(f"RingPeer: expected 0 <= rank < ranks, received rank={rank}, ranks={ranks}")
        self.rank, self.ranks, self.size = int(rank), int(ranks), int(size)
        self.attempt = None if attempt is None else int(attempt)
        self.timeout = float(timeout)
        self.token, self.security = token, security
        self.bounds = segment_bounds(self.size, self.ranks)
        self.codec = codec
        self.mailbox = _Mailbox(self.rank, self.ranks, self.attempt, self.bounds, self.timeout, codec)
        # error feedback: per segment this rank contributes to another, and for its mean segment
        self._feedback: dict[int, ErrorFeedback] = {}
        if codec is not None:
            self._feedback = {j: ErrorFeedback(codec, b - a) for j, (a, b) in enumerate(self.bounds)}
            self._decoded = {r: np.empty(self.bounds[self.rank][1] - self.bounds[self.rank][0], np.float32)
                             for r in range(self.ranks) if r != self.rank}
        self.server = FrameServer(self.mailbox, token, host=host, port=port, timeout=self.timeout,
                                  name=f"sparkdl-ring-{rank}", max_connections=max(4, 2 * ranks),
                                  security=security)
        self.address: tuple = self.server.address
        self.peers: list[tuple] = []
        self._conns: dict[int, Connection] = {}
        longest = max((b - a for a, b in self.bounds), default=0)
        self._acc = np.empty(longest, np.float64)
        self._chunk = np.empty(min(max(longest, 1), _CHUNK), np.float64)
        self.bytes_sent = 0

    def reset_residuals(self) -> None:
        """Forget what error feedback holds back (every rank at the same round)."""
        for feedback in self._feedback.values():
            feedback.residual[...] = 0.0

    def connect(self, addresses: Sequence[tuple], attempt: int | None = None) -> None:
        """Every rank's address, in rank order (connections open on first use), and the
        ``attempt`` frames must carry when the constructor left it open (None)."""
        if len(addresses) != self.ranks:
            raise ValueError(f"RingPeer.connect: expected {self.ranks} addresses, received {len(addresses)}")
        self.peers = [tuple(a) for a in addresses]
        if attempt is not None:
            self.attempt = self.mailbox.attempt = int(attempt)
        if self.attempt is None:
            raise ValueError("RingPeer.connect: expected the attempt (the constructor received attempt=None)")
        self.mailbox.connected.set()

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        self.server.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- one round --------------------------------------------------------------------------------
    def allreduce(self, vector: np.ndarray | None, round_index: int, info: dict,
                  ranges: Sequence[tuple[int, int, bool]] | None = None,
                  out: np.ndarray | None = None) -> tuple[np.ndarray | None, list[dict]]:
        """The samples-weighted mean of every rank's ``vector`` (float32, into ``out`` when
        given) and every rank's ``info`` in rank order. ``info["samples"]`` weighs this rank
        inside the weighted ``ranges`` ``(start, stop, weighted)`` (default: all weighted);
        a rank with 0 samples adds nothing. ``vector=None``: this rank diverged; no rank gets
        a mean (None), and every rank learns who diverged from the infos."""
        if vector is not None and vector.shape != (self.size,):
            raise ValueError(f"RingPeer.allreduce: expected a vector of {self.size} values, "
                             f"received shape {vector.shape}")
        ranges = [(0, self.size, True)] if ranges is None else list(ranges)
        info = dict(info, diverged=vector is None or bool(info.get("diverged")))
        self.mailbox.begin(round_index)
        received = self._reduce_scatter(vector, round_index, info)
        infos = [info if r == self.rank else received[r][0] for r in range(self.ranks)]
        if any(i.get("diverged") for i in infos):
            for _, array in received.values():
                self.mailbox.give_back(array)
            return None, infos
        assert vector is not None, "a rank that diverged has returned"
        out = np.empty(self.size, np.float32) if out is None else out
        a, b = self.bounds[self.rank]
        contributions = [(vector[a:b] if r == self.rank else self._values(r, received[r][1]),
                          int(infos[r]["samples"]))
                         for r in range(self.ranks) if int(infos[r]["samples"]) > 0]
        if contributions:
            weighted_mean_into(out[a:b], contributions, _clip(ranges, a, b), self._acc, self._chunk)
        else:
            out[a:b] = 0.0
        for _, array in received.values():
            self.mailbox.give_back(array)
        self._all_gather(out, round_index)
        return out, infos

    def _values(self, sender: int, array: np.ndarray) -> np.ndarray:
        """A received contribution to this rank's segment as float32 values."""
        if self.codec is None:
            return array
        return self.codec.decode(array, self._decoded[sender].size, out=self._decoded[sender])

    def _meta(self, round_index: int, phase: str, segment: int, **extra) -> dict:
        return {"round": round_index, "rank": self.rank, "attempt": self.attempt, "phase": phase,
                "segment": segment, **extra}

    def _reduce_scatter(self, vector, round_index: int, info: dict) -> dict[int, tuple[dict, np.ndarray]]:
        """Send segment j to rank j (starting with the right neighbour, so no rank is everyone's
        first), then wait for every other rank's contribution to this rank's segment. A peer
        that cannot be reached does not stop the sends to the others (whose errors then name
        that peer, not this rank); its error is raised after them."""
        targets = [(self.rank + k) % self.ranks for k in range(1, self.ranks)]
        empty = np.empty(0, np.float32)
        sent, failed = [], []
        for j in targets:
            a, b = self.bounds[j]
            part = empty if vector is None else vector[a:b]
            if self.codec is not None and vector is not None:
                part = self._feedback[j].encode(part)
            try:
                conn = self._send(j, self._meta(round_index, "reduce", j, info=info, diverged=info["diverged"]),
                                  part, round_index, "reduce")
                sent.append((j, conn))
            except OSError as exc:
                failed.append(exc)
        for j, conn in sent:
            try:
                self._ack(j, conn, round_index, "reduce")
            except OSError as exc:
                failed.append(exc)
        if failed:
            raise failed[0]
        deadline = time.monotonic() + self.timeout
        received = {}
        for r in range(self.ranks):
            if r != self.rank:
                meta, array = self.mailbox.wait((round_index, "reduce", self.rank, r), deadline, self.timeout)
                info_r = meta.get("info")
                received[r] = (info_r if isinstance(info_r, dict) else {}, array)
        return received

    def _all_gather(self, out: np.ndarray, round_index: int) -> None:
        right, left = (self.rank + 1) % self.ranks, (self.rank - 1) % self.ranks
        a, b = self.bounds[self.rank]
        forward = out[a:b]
        if self.codec is not None:        # every rank, this one too, takes the decoded mean
            forward = self._feedback[self.rank].encode(out[a:b])
            self.codec.decode(forward, b - a, out=out[a:b])
        for step in range(self.ranks - 1):
            j = (self.rank - step) % self.ranks
            conn = self._send(right, self._meta(round_index, "gather", j), forward, round_index, "gather")
            self._ack(right, conn, round_index, "gather")
            if step:
                self.mailbox.give_back(forward)
            k = (self.rank - step - 1) % self.ranks
            _, array = self.mailbox.wait((round_index, "gather", k, left), time.monotonic() + self.timeout,
                                         self.timeout)
            a, b = self.bounds[k]
            if self.codec is None:
                out[a:b] = array
            else:
                self.codec.decode(array, b - a, out=out[a:b])
            forward = array             # sent on as it arrived
        if self.ranks > 1:
            self.mailbox.give_back(forward)

    def _send(self, peer: int, meta: dict, array: np.ndarray, round_index: int, phase: str) -> Connection:
        try:
            conn = self._conns.get(peer)
            if conn is None:
                conn = self._conns[peer] = Connection(self.peers[peer], self.token, self.timeout,
                                                           security=self.security)
            conn.send(RING_SEGMENT, meta, array)
        except AuthenticationError as exc:
            raise AuthenticationError(f"ring: rank {peer} refused rank {self.rank}'s connection in round "
                                      f"{round_index}: {exc} (a peer of another fit, or a wrong token)") from exc
        except OSError as exc:          # TimeoutError and ConnectionError included
            self._drop(peer)
            kind = TimeoutError if isinstance(exc, TimeoutError) else ConnectionError
            raise kind(f"ring: rank {self.rank} could not send its {phase} segment of round "
                                  f"{round_index} to rank {peer} at {self.peers[peer][0]}:{self.peers[peer][1]}: "
                                  f"{exc}") from exc
        self.bytes_sent += array.nbytes
        return conn

    def _ack(self, peer: int, conn: Connection, round_index: int, phase: str) -> None:
        try:
            conn.receive(what=f"rank {peer}'s receipt of the {phase} segment of round {round_index}")
        except RemoteError as exc:
            raise ConnectionError(f"ring: rank {peer} refused the {phase} segment of round {round_index} "
                                  f"from rank {self.rank}: {exc}") from exc
        except OSError as exc:
            self._drop(peer)
            kind = TimeoutError if isinstance(exc, TimeoutError) else ConnectionError
            raise kind(f"ring: rank {self.rank} got no receipt from rank {peer} for the {phase} "
                       f"segment of round {round_index}: {exc}") from exc

    def _drop(self, peer: int) -> None:
        conn = self._conns.pop(peer, None)
        if conn is not None:
            conn.close()
