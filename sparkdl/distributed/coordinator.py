"""The driver's side of a fit that runs as one Spark job: orders out, reports in.

The fit's tasks live as long as the fit. Each keeps its partition's block and its model, and
loops: ask for the next order (``NEXT``), carry it out, report (``REPORT``). An order is a
training round (sync: the round's weights come with it; the task pushes its result to the
round exchange), an epoch against the parameter server (async modes), an evaluation of the
task's validation rows, or stop. Orders are numbered; a task asks for the first order after
the last one it carried out, and the driver answers as soon as there is one (a long poll:
after ``poll`` seconds without news it answers ``wait`` and the task asks again).

Spark retries the whole barrier stage when a task fails. The new tasks register again and
continue with the open order, so the driver never goes back: a partition that already
reported the open order waits for the next one, the others redo it (seeded by ``(seed,
round, partition)``, they recompute what the failed attempt would have), and the exchange
or parameter server drops what was already applied. With ``transport="allreduce"``
(``redo=True``) every registering task carries out the open order again, since its peers
need it in the ring. ``attempt`` counts a partition's registrations, so a task knows it is
a retry.

Everything else (``PULL``, ``PUSH``, ``CLOCK``) goes to the wrapped service: the sync round
exchange or the parameter server, served on the same connections. The coordinator tells that
service each registration, so requests of a replaced attempt are refused there too. A report
is checked before it is kept, and a push that carries its report before the push reaches the
service (``sparkdl.distributed.admission``): the open order, a partition it expects, the
partition's newest attempt, counts within bounds, and finite values with a worker state
where the partition keeps one.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from sparkdl.distributed import admission, worker
from sparkdl.distributed.fit_task import reported_worker_state
from sparkdl.distributed.protocol import Frame, Op
from sparkdl.distributed.server import Refused, int_field
from sparkdl.engine import checks

#: bytes of metric states a report may carry (AUC histograms are the largest)
MAX_REPORT = 1 << 26
#: the most samples or steps a report may count (far above any partition, far below overflow)
MAX_COUNT = 1 << 53


@dataclass
class Order:
    seq: int
    kind: str                    # "train", "evaluate" or "stop"
    meta: dict = field(default_factory=dict)
    payload: np.ndarray | None = None
    expected: frozenset = frozenset()


class Coordinator:
    """A ``FrameServer`` service: the fit's orders and the tasks' reports."""

    def __init__(self, inner=None, partitions=(), poll: float = 10.0,
                 state_sizes: tuple[int, int] | None = None, redo: bool = False):
        """``state_sizes``: the model's ``(weights, moving statistics)`` sizes, which fix the
        size of a reported worker state (unchecked when None). ``redo``: a registering task
        carries out the open order even if its partition already reported it (allreduce: the
        order needs every partition's task at once)."""
        self.inner = inner
        self.redo = redo
        self.state_sizes = state_sizes
        self.max_data = max(getattr(inner, "max_data", 0), MAX_REPORT)
        if state_sizes is not None:     # a worker's state in float64: weights and statistics, up to
            w, s = state_sizes          # three optimizer slots, a residual, after the metric states
            self.max_data = max(self.max_data, MAX_REPORT + 8 * (5 * w + 2 * s))
        # What each op may carry (the server bounds the others small): pushes of the inner
        # service's vector, reports of metric states or of a worker's state.
        self.data_limits = {Op.PUSH: getattr(inner, "max_data", 0), Op.REPORT: self.max_data}
        self.poll = float(poll)
        self._cond = threading.Condition()
        self._order: Order | None = None
        self._seq = -1
        self._reports: dict[int, tuple[dict, np.ndarray | None]] = {}
        self._registrations: dict[int, int] = {}
        # Async modes and EASGD: each partition's worker state ``(meta, vector)`` as of the last
        # completed order; a (re)starting task takes it on REGISTER.
        self.worker_states: dict[int, tuple[dict, np.ndarray]] = {}
        self.partitions = sorted(int(p) for p in partitions)
        if inner is not None and hasattr(inner, "receive_buffer"):
            self.receive_buffer = inner.receive_buffer
        if inner is not None and hasattr(inner, "release"):
            self.release = inner.release

    # ---- driver side ----------------------------------------------------------------------------
    def order(self, kind: str, meta: dict | None = None, payload: np.ndarray | None = None,
              expected=None) -> int:
        """Publish the next order; ``expected``: the partitions that must report it (all by
        default). Returns its number."""
        with self._cond:
            self._seq += 1
            parts = self.partitions if expected is None else expected
            self._order = Order(self._seq, kind, dict(meta or {}, seq=self._seq, kind=kind), payload,
                                frozenset(int(p) for p in parts))
            self._reports = {}
            self._cond.notify_all()
            return self._seq

    def stop(self) -> None:
        """Tell every task to end (their next ``NEXT`` answers stop)."""
        self.order("stop", expected=())

    def wait_reports(self, timeout: float) -> dict | None:
        """The open order's reports ``{partition: (meta, array)}`` once every expected partition
        has reported, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                order = self._order
                if order is not None and order.expected <= set(self._reports):
                    return dict(self._reports)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def missing(self) -> list[int]:
        """The partitions the open order still waits for."""
        with self._cond:
            order = self._order
            return [] if order is None else sorted(order.expected - set(self._reports))

    # ---- served requests ------------------------------------------------------------------------
    def handle(self, frame: Frame) -> Frame:
        if frame.op == Op.NEXT:
            return self._next(frame.meta)
        if frame.op == Op.REPORT:
            return self._report(frame)
        if frame.op == Op.REGISTER:
            return self._register(frame.meta)
        if self.inner is None:
            raise Refused(f"op {frame.op} is not served here")
        report = frame.meta.get("report") if frame.op == Op.PUSH else None
        if report is None:
            return self.inner.handle(frame)
        # A push that carries its report: both are checked before the push is applied.
        values = report.get("metric_values") if isinstance(report, dict) else None
        if not isinstance(values, list) or not all(checks.is_number(v) for v in values):
            raise Refused("expected the report's metric_values as a list of numbers")
        if report.get("partition") != frame.meta.get("partition"):
            raise Refused(f"expected a report of the pushing partition {admission.shown(frame.meta.get('partition'))}, "
                          f"received one of partition {admission.shown(report.get('partition'))}")
        array = np.array(values, np.float64)
        self._check_report(report, array)
        reply = self.inner.handle(frame)
        if reply.op == Op.OK:
            self._record(report, array)
        return reply

    def _register(self, meta: dict) -> Frame:
        partition = int_field(meta, "partition")
        if partition not in self.partitions:
            raise Refused(f"this fit trains partitions {self.partitions}, not {partition}")
        with self._cond:
            attempt = self._registrations.get(partition, -1) + 1
            self._registrations[partition] = attempt
            if self.redo:
                self._reports.pop(partition, None)
            state = self._worker_state(partition)
            register = getattr(self.inner, "register", None)
            if register is not None:          # the service refuses the older attempts too
                register(partition, attempt)
        if state is None:
            return Frame(Op.OK, {"attempt": attempt})
        return Frame(Op.OK, {"attempt": attempt, "worker_state": state[0]}, state[1])

    def _worker_state(self, partition: int):
        """The state a registering task takes: after the open order if its partition reported
        it (the task will not carry it out again), else as of the last completed order."""
        report, order = self._reports.get(partition), self._order
        if order is not None and report is not None and "worker_state" in report[0]:
            return state_after(order, report)
        return self.worker_states.get(partition)

    def _next(self, meta: dict) -> Frame:
        partition, after = int_field(meta, "partition"), int_field(meta, "after")

        def ready():
            order = self._order
            return order is not None and order.seq > after and (
                order.kind == "stop" or (partition in order.expected and partition not in self._reports))

        with self._cond:
            if not self._cond.wait_for(ready, timeout=self.poll):
                return Frame(Op.OK, {"kind": "wait"})
            order = self._order
        assert order is not None, "ready() saw it"
        return Frame(Op.OK, order.meta, order.payload)

    def _report(self, frame: Frame) -> Frame:
        self._check_report(frame.meta, frame.array)
        self._record(frame.meta, None if frame.array is None else frame.array.copy())
        return Frame(Op.OK, {})

    def _check_report(self, meta: dict, array: np.ndarray | None) -> None:
        """Refuse a report that is not of the open order, from a partition it expects, by that
        partition's newest attempt, with sane counts and (unless it reports a divergence, which
        ends the fit) finite values with a worker state where the partition keeps one. Changes
        nothing."""
        partition, attempt = int_field(meta, "partition"), int_field(meta, "attempt")
        seq = int_field(meta, "seq")
        admission.known_partition(partition, self.partitions)
        for key in ("samples", "steps"):
            if key in meta:
                admission.count(meta, key, 0, MAX_COUNT, "a sane bound")
        with self._cond:
            order, registered = self._order, self._registrations.get(partition)
            state = self.worker_states.get(partition)
        if order is None or seq != order.seq or partition not in order.expected:
            raise Refused(f"order {seq} from partition {partition} is not open")
        if attempt != registered:
            raise Refused(f"expected a report of attempt {registered} of partition {partition} "
                          f"(its newest registration), received attempt {attempt}")
        self._check_arrays(meta, array, partition, state)

    def _check_arrays(self, meta: dict, array: np.ndarray | None, partition: int, state) -> None:
        """What ``report_result``, ``metric_states`` and ``reported_worker_state`` will read
        fits: numbers, metric shapes within the array, a worker state after them."""
        for key in ("loss_sum", "compute_seconds"):
            if key in meta and not checks.is_number(meta[key]):
                raise Refused(f"expected {key} as a number, received {admission.shown(meta[key])}")
        shapes = meta.get("metric_shapes", [])
        if not isinstance(shapes, list) or not all(
                isinstance(s, list) and all(checks.is_integer(d) and 0 <= d < MAX_COUNT for d in s)
                for s in shapes):
            raise Refused(f"expected metric_shapes as a list of shapes, received {admission.shown(shapes)}")
        values = sum(int(np.prod(s, dtype=np.float64)) for s in shapes)
        got = "no array" if array is None else f"{array.size} values"
        if values and (array is None or array.size < values):
            raise Refused(f"expected {values} metric values in the report of partition {partition}, "
                          f"received {got}")
        if "worker_state" not in meta:
            return
        if state is None or not isinstance(meta["worker_state"], dict) or array is None:
            raise Refused(f"expected a worker state after {values} metric values for partition "
                          f"{partition}{'' if state else ' (which keeps none)'}, received {got}")
        self._check_state_size(meta["worker_state"], array.size - values, partition)
        if not meta.get("diverged"):
            admission.finite(array, f"the report of partition {partition}")

    def _check_state_size(self, state_meta: dict, size: int, partition: int) -> None:
        """A worker state holds its weights and statistics (EASGD) and one weights-sized
        vector per optimizer slot (``worker.worker_state``)."""
        slots, weights = state_meta.get("slots"), state_meta.get("weights")
        if (not isinstance(slots, list) or not all(isinstance(n, str) for n in slots)
                or not isinstance(weights, bool) or not checks.is_integer(state_meta.get("iterations"))):
            raise Refused(f"expected a worker state naming its slots, weights and iterations, "
                          f"received {admission.shown(state_meta)}")
        if self.state_sizes is None:
            return
        w, s = self.state_sizes
        residual = state_meta.get("residual", 0)
        if residual not in (0, w + s):
            raise Refused(f"expected a residual of compressed pushes of {w + s} values (or none) for "
                          f"partition {partition}, received {admission.shown(residual)}")
        expected = (w + s if weights else 0) + len(slots) * w + residual
        if size != expected:
            raise Refused(f"expected a worker state of {expected} values for partition {partition} "
                          f"({len(slots)} slots{', with weights' if weights else ''}"
                          f"{', a residual' if residual else ''}), received {size}")

    def _record(self, meta: dict, array: np.ndarray | None) -> None:
        """Keep a partition's first report of the open order."""
        partition, seq = int_field(meta, "partition"), int_field(meta, "seq")
        with self._cond:
            order = self._order
            if order is None or seq != order.seq or partition not in order.expected:
                raise Refused(f"order {seq} from partition {partition} is not open")
            if partition not in self._reports:
                self._reports[partition] = (meta, array)
                self._cond.notify_all()


def state_after(order: Order, report: tuple[dict, np.ndarray | None]) -> tuple[dict, np.ndarray]:
    """A worker's state after a training order, from its report: as reported, or for a
    synchronous EASGD round (which reports the state before the exchange) with the exchange
    against the order's center applied, as the task applied it."""
    assert report[1] is not None, "a report with a worker state carries it"
    state = reported_worker_state(report[0], report[1])
    if order.kind != "elastic":
        return state
    assert order.payload is not None, "an elastic round carries the center"
    return worker.exchanged(state, order.payload, order.meta["spec"]["alpha"])[0]
