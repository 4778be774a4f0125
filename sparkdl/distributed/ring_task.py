"""Sync rounds with ``transport="allreduce"``: the tasks keep the model's state and average
among themselves (``sparkdl.distributed.ring``); the driver sends orders and receives reports.

A task of a one-job fit holds the whole training state — weights, moving statistics,
optimizer slots and iterations — between rounds. A ``"ring"`` order names the round; the task
trains it from its own state exactly as ``worker.run_round`` trains from the driver's, packs
the same vector it would push to the driver's round exchange, and all-reduces it with its
peers; every task then applies the mean as the driver applies it with the hub (the mean
weights, statistics and slots, iterations advanced by the longest partition's steps; or, in
gradient aggregation, its own copy of the driver's optimizer steps on the mean gradient), so
every task ends the round with the state the hub's driver would hold, bit for bit.

The driver (``RingState``, served behind the coordinator) holds a *base*: the state after
some round, with the specs of the rounds since. It starts as the driver's model when the fit
starts (or resumes). When an order asks for the weights, the lowest training partition
pushes its state after the round, and that becomes the base. A task with no state (the first
order, or a task of a retried barrier stage) pulls the base and replays the rounds since
(seeded by ``(seed, round, partition)``, all-reducing with its equally fresh peers), then
carries out the order: a retried stage reproduces the same bits.

With ``compression``, what the tasks all-reduce is each round's change from the state they
share (weights, statistics and slots; gradients as they are), compressed with error feedback
(``sparkdl.distributed.ring``); every task adds the decoded mean change to its own copy of
that state. What error feedback holds back is zeroed on every rank after each round whose
state goes to the driver, so a task replaying from the base starts where the others started.
"""
from __future__ import annotations

import threading

import numpy as np

from sparkdl.distributed import admission, worker
from sparkdl.distributed.exchange import Layout
from sparkdl.distributed.protocol import Connection, Frame, Op
from sparkdl.distributed.server import Refused, int_field

#: the most rounds a base may lag behind; the driver then asks for the weights
MAX_REPLAY = 32

ORDER = "ring"              # train a round and all-reduce it


def ranges(layout: Layout) -> list[tuple[int, int, bool]]:
    """The layout's ``(start, stop, weighted)`` ranges, as ``RingPeer.allreduce`` takes them."""
    return [(a, b, weighted) for _, a, b, weighted in layout.bounds()]


def state_parts(model) -> dict:
    """The model's whole training state as a layout's parts (weights, statistics, all slots)."""
    parts = {"weights": model.flat_weights, "state": model.flat_state}
    parts.update({f"slot:{k}": v for k, v in model.optimizer.slots.items()})
    return parts


def set_state(model, layout: Layout, vector: np.ndarray, iterations: int) -> None:
    """Give ``model`` the state ``vector`` holds (laid out by ``layout``) and ``iterations``."""
    parts = layout.split(vector)
    model.set_flat_weights(parts["weights"])
    if "state" in parts:
        model.flat_state[...] = parts["state"]
    opt = model.optimizer
    opt.build(model.flat_weights.size)
    for name, v in parts.items():
        if name.startswith("slot:"):
            opt.slots[name[5:]][...] = v
    opt.iterations = int(iterations)


class RingState:
    """The driver's base state for a fit's allreduce rounds (a ``Coordinator``'s inner service):
    ``PULL {"round": r}`` answers the base with the specs of the rounds from it to ``r``;
    ``PUSH`` from the ``first`` training partition replaces it."""

    def __init__(self, layout: Layout, first: int):
        self.layout, self.first = layout, int(first)
        self.max_data = 4 * layout.size
        self._lock = threading.Lock()
        self.base_round: int | None = None     # the base is the state after this many rounds
        self.base: np.ndarray | None = None
        self.iterations = 0
        self.specs: dict[int, dict] = {}
        self.bytes_pulled = 0
        self.bytes_pushed = 0

    def reset(self, rounds_done: int, vector: np.ndarray, iterations: int) -> None:
        with self._lock:
            self.base_round, self.base, self.iterations = int(rounds_done), vector, int(iterations)
            self.specs = {}

    def open(self, round_index: int, spec: dict) -> None:
        """Remember the spec of ``round_index`` (a task replaying it needs it)."""
        with self._lock:
            self.specs[int(round_index)] = spec

    def lag(self, round_index: int) -> int:
        """Rounds a task starting ``round_index`` from the base would replay."""
        assert self.base_round is not None, "reset() ran first"
        return round_index - self.base_round

    def handle(self, frame: Frame) -> Frame:
        round_index = int_field(frame.meta, "round")
        if frame.op == Op.PULL:
            with self._lock:
                if self.base_round is None or not self.base_round <= round_index <= max(self.specs, default=-1):
                    raise Refused(f"round {round_index} is not open (the base is the state after "
                                  f"{self.base_round} rounds)")
                replay = [self.specs[r] for r in range(self.base_round, round_index)]
                self.bytes_pulled += self.max_data
                return Frame(Op.OK, {"rounds_done": self.base_round, "iterations": self.iterations,
                                     "replay": replay}, self.base)
        if frame.op == Op.PUSH:
            return self._push(frame, round_index)
        raise Refused(f"op {frame.op} is not served here")

    def _push(self, frame: Frame, round_index: int) -> Frame:
        partition = int_field(frame.meta, "partition")
        iterations = int_field(frame.meta, "iterations")
        if partition != self.first:
            raise Refused(f"expected the state from partition {self.first}, received one from {partition}")
        array = frame.array
        if array is None or array.dtype != np.float32 or array.shape != (self.layout.size,):
            got = None if array is None else (array.dtype.name, array.shape)
            raise Refused(f"expected a float32 state of {self.layout.size} values, received {got}")
        admission.finite(array, f"the state of partition {partition}")
        with self._lock:
            if round_index not in self.specs:
                raise Refused(f"round {round_index} was not ordered")
            self.base_round, self.base, self.iterations = round_index + 1, array.copy(), iterations
            self.specs = {r: s for r, s in self.specs.items() if r > round_index}
            self.bytes_pushed += array.nbytes
        return Frame(Op.OK, {"applied": True})


class RingTask:
    """A task's side: its ring peer, the layouts, and how many rounds its model holds."""

    orders = (ORDER,)           # the orders ``fit_task.run_fit_task`` hands to ``carry_out``

    def __init__(self, peer, end):
        self.peer, self.end = peer, end
        self.done: int | None = None           # rounds the model's state reflects; None: no state
        self._push = np.empty(end.push.size, np.float32)
        self._mean = np.empty(end.push.size, np.float32)
        self._state = np.empty(end.pull.size, np.float32)
        self._before = np.empty(end.push.size if peer.codec is not None else 0, np.float32)

    def carry_out(self, model, block, partition: int, attempt: int, order: dict):
        """``(report (meta, metric states), push or None)`` of a ring order: the push carries
        the state after the round when the order asks for it and this is the first partition."""
        from sparkdl.distributed.fit_task import result_report
        spec = worker.RoundSpec(**order["spec"])
        xs, y = block
        sent = self.peer.bytes_sent
        if self.done != spec.round:
            self._restart(model, xs, y, partition, spec.round)
        result = self.run(model, xs, y, spec, partition)
        push = None
        if order.get("weights") and not result.diverged:
            self.peer.reset_residuals()     # the driver's base: a replay starts from here
            if partition == order["first"]:
                push = self._state_push(model, partition, attempt, spec.round, result.samples)
        meta, metrics = result_report(result)
        meta["ring_bytes"] = self.peer.bytes_sent - sent
        return (meta, metrics), push

    def _state_push(self, model, partition, attempt, round_index, samples):
        vector = self.end.pull.pack(state_parts(model), out=self._state)
        return ({"round": round_index, "partition": partition, "attempt": attempt, "samples": samples,
                 "iterations": int(model.optimizer.iterations)}, vector)

    def _restart(self, model, xs, y, partition: int, round_index: int) -> None:
        """Take the driver's base state and replay the rounds since (with the peers)."""
        end = self.end
        with Connection(end.address, end.token, end.timeout, security=end.security) as conn:
            frame = conn.request(Op.PULL, {"round": round_index}, out=self._state,
                                 what=f"the state to start round {round_index + 1} from")
        if frame.array is None or frame.array.shape != (end.pull.size,):
            raise ValueError(f"round {round_index}: the driver sent a state of "
                             f"{None if frame.array is None else frame.array.shape}, expected {end.pull.size} values")
        set_state(model, end.pull, frame.array, frame.meta["iterations"])
        self.peer.reset_residuals()
        self.done = int(frame.meta["rounds_done"])
        for spec in frame.meta["replay"]:
            result = self.run(model, xs, y, worker.RoundSpec(**spec), partition)
            if result.diverged:
                raise RuntimeError(f"replaying round {spec['round'] + 1} diverged: {result.diverged}")

    def run(self, model, xs, y, spec: worker.RoundSpec, partition: int) -> worker.RoundResult:
        """Train the round from the model's own state, all-reduce, apply the mean."""
        opt = model.optimizer
        before = int(opt.iterations)
        push = self.end.push
        compressed = self.peer.codec is not None
        if compressed:          # the state every rank shares before the round
            opt.build(model.flat_weights.size)
            shared = state_parts(model)
            shared[push.names[0]] = model.flat_weights
            push.pack({name: shared[name] for name in push.names}, out=self._before)
        result = worker.run_round(model, xs, y, spec, partition, None, None, {}, 0, views=True)
        info = {"samples": int(result.samples), "steps": int(result.steps)}
        vector = None
        if not result.diverged:
            out = {push.names[0]: result.vector, "state": result.state}
            out.update({f"slot:{k}": v for k, v in result.slots.items()})
            vector = push.pack(out, out=self._push)
            if compressed:      # the change from the shared state (gradients stay as they are)
                for _, a, b, weighted in push.bounds():
                    if weighted:
                        vector[a:b] -= self._before[a:b]
        mean, infos = self.peer.allreduce(vector, spec.round, info, ranges(push), out=self._mean)
        if mean is None:        # this or another partition diverged: its report says so
            return result
        if compressed:
            for _, a, b, weighted in push.bounds():
                if weighted:
                    mean[a:b] += self._before[a:b]
        parts = push.split(mean)
        if spec.aggregate == "gradients":
            opt.apply(model.flat_weights, parts["gradients"])
            what = worker.non_finite(0.0, {"weights": model.flat_weights})
            if what is not None:
                result.diverged = [(partition, f"{what} after the optimizer step on the mean gradient")]
                return result
        else:
            model.set_flat_weights(parts["weights"])
            for name, v in parts.items():
                if name.startswith("slot:"):
                    opt.slots[name[5:]][...] = v
            opt.iterations = before + max(int(i.get("steps", 0)) for i in infos)
        if "state" in parts:
            model.flat_state[...] = parts["state"]
        self.done = spec.round + 1
        result.vector, result.state, result.slots = None, None, {}
        return result
