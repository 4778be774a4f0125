"""What a task of a one-job fit does: keep its block and model, and carry out the driver's
orders until it says stop (see ``sparkdl.distributed.coordinator``).

A training order runs exactly the code of the per-round path (``worker.run_round`` for sync,
``worker.run_elastic_round`` for synchronous EASGD, ``worker.run_async_epoch`` against the
parameter server for the async modes), so a fit gives the same numbers whichever way it is
executed. Results travel in two parts: the big vector as a ``PUSH`` to the round exchange
(sync), and the small rest — counts, loss, timings, metric states — as the order's
``REPORT``. Where a worker carries state between orders (its optimizer in the async modes,
its weights too in EASGD), the task keeps it, reports it after each training order (the
driver keeps it per partition) and, when it is a retry, takes it back on ``REGISTER``.
With ``transport="allreduce"`` the task keeps the whole training state and a ``"ring"``
order is carried out by ``sparkdl.distributed.ring_task`` (no vector to or from the driver,
except the state on the rounds that ask for it); with ``num_servers >= 1`` the epochs run
against shards hosted by the tasks (``sparkdl.distributed.shard_task``; sync rounds of
gradients: ``sparkdl.distributed.shard_round_task``). With ``compression`` (sync, hub) a round's
weights arrive encoded; the task trains from their decoding and pushes the encoded change
from it through error feedback it keeps for its whole life (``compressed_pushes``).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparkdl.distributed import worker
from sparkdl.distributed.compression import ErrorFeedback, get_codec
from sparkdl.distributed.exchange import Layout
from sparkdl.distributed.protocol import Connection, Op, RemoteError
from sparkdl.distributed.push_stream import PushStream

_current = threading.local()

#: metric-state values a push carries in its JSON metadata (larger states go in a REPORT frame)
INLINE_METRICS = 2048


def current_order() -> dict | None:
    """The order this thread is carrying out (its ``label`` reads like the per-round path's
    job description, e.g. ``"sparkdl round 3/15"``), or None outside a fit's task."""
    return getattr(_current, "order", None)


@dataclass(frozen=True)
class FitEndpoint:
    """What a task needs to reach the driver's coordinator (shipped in the task closure)."""
    address: tuple
    token: bytes
    timeout: float
    pull: Layout | None = None        # sync: the layout of a round's weights
    push: Layout | None = None        # sync: the layout of a partition's result
    server_size: int = 0              # async: the parameter server's vector size; EASGD: the center's
    security: str = "integrity"       # the server's protection mode (session.MODES)
    ring: tuple | None = None         # allreduce: the partitions that train, in rank order
    compression: str | None = None    # sync: the codec of the round's vectors (None: float32)
    shards: Any = None                # num_servers >= 1: the shards' ``shard_task.ShardSettings``


def run_fit_task(model, block, val_block, partition: int, end: FitEndpoint, ring=None) -> dict:
    """Serve the fit's orders for ``partition`` until the driver says stop; returns counts.
    ``ring``: the task's ``ring_task.RingTask`` (``transport="allreduce"``) or
    ``shard_task.ShardTask`` (``num_servers >= 1``), which carries out the orders it names.

    A carried-out order's push, its report and the request for the next order leave back to
    back, and their answers are read afterwards: one round trip per round, not three."""
    conn = Connection(end.address, end.token, end.timeout, security=end.security)
    done = 0
    try:
        registered = conn.request(Op.REGISTER, {"partition": partition})
        attempt = registered.meta["attempt"]
        local = None        # the worker's own state between orders (async modes, EASGD)
        if "worker_state" in registered.meta:
            local = (registered.meta["worker_state"],
                     None if registered.array is None else registered.array.copy())
        buffer = np.empty(max(end.pull.size if end.pull else 0, end.server_size), np.float32)
        feedback = compressed_pushes(end)
        landing = buffer if feedback is None else np.empty(feedback.codec.nbytes(buffer.size), np.uint8)
        after: int | None = -1
        conn.send(Op.NEXT, {"partition": partition, "after": after})
        while True:
            frame = conn.receive(out=landing, what="the driver's next order")
            kind, seq = frame.meta.get("kind"), frame.meta.get("seq")
            if kind == "stop":
                return {"partition": partition, "attempt": attempt, "orders": done}
            if kind == "wait":
                conn.send(Op.NEXT, {"partition": partition, "after": after})
                continue
            _current.order = dict(frame.meta, partition=partition, attempt=attempt)
            try:
                if ring is not None and frame.meta.get("kind") in ring.orders:
                    (meta, array), push = ring.carry_out(model, block, partition, attempt, frame.meta)
                else:
                    (meta, array), push, local = _carry_out(model, block, val_block, partition, attempt,
                                                            frame, end, local, conn, feedback)
            finally:
                _current.order = None
            meta = dict(meta, partition=partition, attempt=attempt, seq=seq)
            streamed = isinstance(push, PushStream)       # sent already, while the round ran
            inline = push is not None and not streamed and (array is None or array.size <= INLINE_METRICS)
            if inline:      # the report rides in the push's metadata: one frame less per round
                meta["metric_values"] = [] if array is None else array.tolist()
                conn.send(Op.PUSH, dict(push[0], report=meta), push[1])
            else:
                if push is not None and not streamed:
                    conn.send(Op.PUSH, *push)
                conn.send(Op.REPORT, meta, array)
            conn.send(Op.NEXT, {"partition": partition, "after": seq})
            for i in range(1 if inline or push is None else 2):
                try:
                    conn.receive(what=f"the driver's receipt of order {seq}")
                except RemoteError:
                    if not (streamed and i == 0 and meta["diverged"]):
                        raise           # else: the driver refused what had left before the round diverged
            after = seq
            done += 1
    finally:
        conn.close()


def compressed_pushes(end: FitEndpoint) -> ErrorFeedback | None:
    """A sync task's error feedback for its compressed pushes (None when they are float32).
    It lives as long as the task: a task of a retried stage starts it again from zero."""
    codec = get_codec(end.compression)
    if codec is None or end.push is None or end.ring is not None:
        return None
    return ErrorFeedback(codec, end.push.size)


def _carry_out(model, block, val_block, partition, attempt, frame, end, local, conn, feedback=None):
    """``(report, push, local)``: what the order's REPORT carries, ``(meta, vector)`` of the
    sync round's PUSH (None for other orders, and for a diverged round: nothing non-finite
    reaches the driver; the ``PushStream`` that sent it on ``conn`` if its layout streams),
    and the worker's own state after the order. ``feedback``: the task's error feedback when
    the round's vectors travel compressed."""
    order = frame.meta
    if order["kind"] == "evaluate":
        return _evaluate(model, val_block, frame.array, order["batch_size"]), None, local
    spec = worker.RoundSpec(**order["spec"])
    xs, y = block
    if order["kind"] == "elastic":          # synchronous EASGD
        center = frame.array
        if local is not None:
            worker.set_worker_state(model, *local)
        else:                                # no state handed out: start from the center
            worker.set_model_vector(model, center)
        result = worker.run_elastic_round(model, xs, y, spec, partition)
        meta, metrics = result_report(result)
        if partition not in result.worker_states:      # diverged, or no rows
            return (meta, metrics), None, local
        before = result.worker_states[partition]
        after, _ = worker.exchanged(before, center, spec.alpha)
        return _with_state(meta, metrics, *before), None, after
    if end.pull is None:
        from sparkdl.distributed import parameter_server
        residual = worker.set_worker_state(model, *local) if local is not None else None
        client = parameter_server.Client(end.address, end.token, end.timeout, spec.round, partition,
                                         attempt, end.server_size, end.security, spec.compression,
                                         residual)
        try:
            result = worker.run_async_epoch(model, xs, y, spec, partition, client)
        finally:
            client.close()
        meta, metrics = result_report(result)
        local = worker.worker_state(model, with_weights=spec.mode == "easgd", residual=client.residual,
                                    with_slots=spec.aggregate != "gradients")
        return _with_state(meta, metrics, *local), None, local
    pulled = frame.array
    if feedback is not None:
        pulled = _decoded_pull(feedback.codec, order, frame.array, end.pull.size)
    parts = end.pull.split(pulled)
    slots = {name[5:]: v for name, v in parts.items() if name.startswith("slot:")}
    meta = {"round": spec.round, "partition": partition, "attempt": attempt,
            "samples": worker.round_samples(spec, len(y))}
    stream = None
    if end.push.wire:         # aggregate "gradients", overlap: the push leaves during backward
        stream = PushStream(conn, meta, end.push, {"gradients": _push_buffer(model.flat_weights.size)})
    try:
        result = worker.run_round(model, xs, y, spec, partition, parts["weights"], parts.get("state"),
                                  slots, int(order["iterations"]), views=True,
                                  gradients=None if stream is None else stream.parts["gradients"],
                                  on_ready=None if stream is None else stream.ready)
    except BaseException:
        if stream is not None:
            stream.abort()
        raise
    if result.diverged and (stream is None or not stream.started):
        return result_report(result), None, local
    if stream is not None:       # (diverged: the driver refuses what is not finite)
        stream.finish({"state": model.flat_state})
        return result_report(result), stream, local
    out = {end.push.names[0]: result.vector, "state": result.state}
    out.update({f"slot:{k}": v for k, v in result.slots.items()})
    vector = end.push.pack(out, out=_push_buffer(end.push.size))
    if feedback is None:
        return result_report(result), (meta, vector), local
    # Compressed: the change from what was pulled (the driver adds it to its exact weights),
    # or the gradients as they are; through error feedback.
    for _, a, b, weighted in end.push.bounds():
        if weighted:
            vector[a:b] -= pulled[a:b]
    meta["codec"] = feedback.codec.name
    return result_report(result), (meta, feedback.encode(vector, out=_push_payload(feedback))), local


def _decoded_pull(codec, order: dict, payload: np.ndarray | None, size: int) -> np.ndarray:
    """The float32 weights of a compressed round's order (decoded into a reused buffer)."""
    if order.get("codec") != codec.name or payload is None or payload.dtype != np.uint8:
        shown = None if payload is None else (order.get("codec"), payload.dtype.name, payload.shape)
        raise ValueError(f"round {order['spec']['round'] + 1}: expected the weights compressed with "
                         f"{codec.name!r} ({codec.nbytes(size)} bytes), received {shown!r:.200}")
    return codec.decode(payload, size, out=_thread_buffer("pulled", size, np.float32))


def _with_state(meta: dict, metrics: np.ndarray | None, state_meta: dict, state: np.ndarray):
    """A report that carries the worker's state after its metric states."""
    meta["worker_state"] = state_meta
    parts = ([] if metrics is None else [metrics]) + [state.astype(np.float64)]
    return meta, np.concatenate(parts)


_buffers = threading.local()


def _thread_buffer(name: str, size: int, dtype) -> np.ndarray:
    """A buffer of this thread's, reused across rounds."""
    held = _buffers.__dict__.setdefault("held", {})
    buf = held.get(name)
    if buf is None or buf.size != size or buf.dtype != dtype:
        buf = held[name] = np.empty(size, dtype)
    return buf


def _push_buffer(size: int) -> np.ndarray:
    """A float32 buffer for this thread's pushes, reused across rounds."""
    return _thread_buffer("push", size, np.float32)


def _push_payload(feedback: ErrorFeedback) -> np.ndarray:
    """A buffer for this thread's compressed pushes."""
    return _thread_buffer("payload", feedback.codec.nbytes(feedback.size), np.uint8)


def _evaluate(model, val_block, payload, batch_size):
    """Loss sum, row count and metric states of this task's validation rows at the payload's
    weights (and moving statistics)."""
    worker.set_model_vector(model, payload)
    return evaluation_report(model, val_block, lambda xs: model.predict_arrays(xs, batch_size), batch_size)


def evaluation_report(model, val_block, predict, batch_size: int) -> tuple[dict, np.ndarray | None]:
    """``(meta, metric states)`` of ``val_block``'s rows: the loss sum, row count and states
    of ``model``'s loss and metrics over the outputs ``predict(xs)`` gives for each
    ``batch_size`` rows."""
    metrics = [m.fresh() for m in model.metrics]
    loss_sum, count = 0.0, 0
    if val_block is not None and len(val_block[1]):
        xs, y = val_block
        for a in range(0, len(y), batch_size):
            out = predict([x[a:a + batch_size] for x in xs])
            loss_sum += float(np.sum(model.loss.per_sample(y[a:a + batch_size], out)))
            for m in metrics:
                m.update(y[a:a + batch_size], out)
        count = len(y)
    states = [m.state for m in metrics]
    meta = {"loss_sum": loss_sum, "samples": count, "metric_shapes": [list(np.shape(s)) for s in states]}
    return meta, _flat(states)


def _flat(states) -> np.ndarray | None:
    if not states:
        return None
    return np.concatenate([np.asarray(s, np.float64).reshape(-1) for s in states])


def result_report(result: worker.RoundResult) -> tuple[dict, np.ndarray | None]:
    """The small part of a round result as ``(meta, metric states)`` for a REPORT frame."""
    meta = {"samples": result.samples, "steps": result.steps, "loss_sum": result.loss_sum,
            "compute_seconds": result.compute_seconds,
            "short": [list(s) for s in result.short_partitions],
            "diverged": [list(d) for d in result.diverged],
            "metric_shapes": [list(np.shape(s)) for s in result.metric_states]}
    return meta, _flat(result.metric_states)


def metric_states(meta: dict, array: np.ndarray | None) -> list[np.ndarray]:
    """The metric states a report carries, in their shapes."""
    states, start = [], 0
    for shape in meta.get("metric_shapes", []):
        size = int(np.prod(shape)) if shape else 1
        assert array is not None, "a report with metric shapes carries their values"
        states.append(array[start:start + size].reshape(shape))
        start += size
    return states


def _metric_values(meta: dict) -> int:
    """How many values of a report's array are its metric states (the rest follows them)."""
    return sum(int(np.prod(shape)) if shape else 1 for shape in meta.get("metric_shapes", []))


def report_result(meta: dict, array: np.ndarray | None) -> worker.RoundResult:
    """A REPORT of a training order back into a (vector-less) RoundResult."""
    return worker.RoundResult(
        samples=int(meta["samples"]), steps=int(meta["steps"]), loss_sum=float(meta["loss_sum"]),
        metric_states=metric_states(meta, array), compute_seconds=float(meta["compute_seconds"]),
        partitions=1, short_partitions=[tuple(s) for s in meta.get("short", [])],
        diverged=[tuple(d) for d in meta.get("diverged", [])])


def reported_worker_state(meta: dict, array: np.ndarray) -> tuple[dict, np.ndarray]:
    """The worker state a training order's report carries after its metric states."""
    return meta["worker_state"], array[_metric_values(meta):].astype(np.float32)
