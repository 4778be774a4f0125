"""How a fit's rounds reach the executors, behind one small protocol.

A transport offers ``sync_round(spec, what)`` → ``(result, mean weights or mean gradient)``,
``elastic_round(spec, what)`` → ``(result, new center)`` (synchronous EASGD),
``async_epoch(spec, what)`` → ``(result, epoch_counts)``,
``worker_states()`` → each partition's worker state (async modes, EASGD; for checkpoints),
``evaluate_validation()`` → metrics of a validation DataFrame (or None when the fit loop
evaluates it itself), and ``close(failed)``. The fit loop (``SparkModel``) owns the model,
callbacks, history and checkpoints; a transport owns its Spark jobs, sockets and checks.

- ``InJob``: the whole fit is one barrier job; its tasks keep block and model and carry out
  the driver's orders (``sparkdl.distributed.coordinator``). Sync rounds push to the round
  exchange, async epochs run against the parameter server, validation rows held by the tasks
  are evaluated by them.
- ``allreduce.RingInJob`` (``transport="allreduce"``): an ``InJob`` whose tasks keep the
  training state and average among themselves; the driver receives the state only on the
  rounds that need it.
- ``RoundJobs``: the fallback, one Spark job per round (per epoch in the async modes),
  with weights by broadcast and results by ``treeReduce`` (``transport="spark"``) or over the
  driver's socket.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any

import numpy as np

from sparkdl.distributed import exchange, fit_task, protocol, session, worker
from sparkdl.distributed.compression import get_codec
from sparkdl.distributed.coordinator import Coordinator
from sparkdl.distributed.server import FrameServer
from sparkdl.errors import SparkTrainingDivergedError
from sparkdl.spark import executor

logger = logging.getLogger(__name__)


#: Spark settings under which Spark encrypts its own traffic; the data plane then encrypts too
SPARK_ENCRYPTION = ("spark.network.crypto.enabled", "spark.ssl.enabled")
INTEGRITY = "spark.sparkdl.dataPlane.integrity"
ENCRYPTION = "spark.sparkdl.dataPlane.encryption"


def _flag(conf, key: str, default: bool) -> bool:
    raw = conf.get(key, None)
    if raw is None:
        return default
    value = str(raw).strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"expected {key} to be true or false, received {raw!r}")
    return value == "true"


def data_plane_security(conf) -> str:
    """The data plane's protection mode (``session.MODES``) under a Spark conf: "encrypted"
    when Spark encrypts its own traffic or ``spark.sparkdl.dataPlane.encryption=true``, else
    "integrity" unless ``spark.sparkdl.dataPlane.integrity=false`` ("plain"). ValueError for a
    setting that is not true/false, or that asks for no encryption while Spark encrypts;
    ImportError naming the extra when encryption is due and the ``cryptography`` package is
    absent. ``fit`` calls this before any work starts."""
    integrity = _flag(conf, INTEGRITY, True)
    spark_on = [key for key in SPARK_ENCRYPTION if _flag(conf, key, False)]
    asked = _flag(conf, ENCRYPTION, bool(spark_on))
    if spark_on and not asked:
        raise ValueError(f"expected {ENCRYPTION} to be true (or unset) while Spark encrypts its own "
                         f"traffic ({spark_on[0]}=true), received {conf.get(ENCRYPTION, None)!r}")
    if asked:
        why = f"{spark_on[0]}=true" if spark_on else f"{ENCRYPTION}=true"
        session.require_cipher(f"encrypted frames, which {why} asks for")
        return "encrypted"
    return "integrity" if integrity else "plain"


def serve(site, service, name: str, port, timeout: float):
    """``(server, advertised address, token)``: ``service`` on the driver (the client of a
    Spark Connect session) for one fit, at ``site.data_plane_address()``, its frames protected
    as ``data_plane_security`` says (``server.security``)."""
    conf = site.conf
    host, bind = site.data_plane_address()
    port = port if port is not None else _conf_number(conf, "spark.sparkdl.server.port", 0, int, 0, 65535)
    max_connections = _conf_number(conf, "spark.sparkdl.server.maxConnections", 256, int, 1)
    handshake = _conf_number(conf, "spark.sparkdl.server.handshakeTimeout", None, float, 0.001)
    memory = _conf_number(conf, "spark.sparkdl.server.memory", None, int, 1)
    token = protocol.new_token()
    server = FrameServer(service, token, host=bind, port=port, timeout=timeout, name=name,
                         max_connections=max_connections, handshake_timeout=handshake, memory=memory,
                         security=data_plane_security(conf))
    return server, (host, server.address[1]), token


def _conf_number(conf, key: str, default, kind, low, high=None):
    """The number ``conf[key]`` (``kind``: int or float, in ``[low, high]``), or ``default``
    when it is not set; ValueError naming the key and what it holds otherwise."""
    raw = conf.get(key, None)
    if raw is None:
        return default
    expected = f"{'an int' if kind is int else 'a number'} >= {low}" + (f" and <= {high}" if high is not None else "")
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"expected {key} to be {expected}, received {raw!r}") from None
    if value != value or value < low or (high is not None and value > high):
        raise ValueError(f"expected {key} to be {expected}, received {raw!r}")
    return value


def parameter_server(spark_model, blocks):
    """The parameter server of the async modes, holding the model's weights and state. A
    delta of several local steps (frequency "epoch" or tau > 1) is divided by the number of
    partitions that train, so that deltas from the same weights average as in sync; a delta
    of one step is an optimizer step, added as it is (as DOWNPOUR and Hogwild do). EASGD's
    elastic differences are added as they are."""
    from sparkdl.distributed.parameter_server import ParameterServer
    model = spark_model.model
    vector = worker.model_vector(model)
    rows = training_rows(blocks)
    one_step = spark_model.frequency in ("batch", 1) or spark_model.strategy.elastic
    return ParameterServer(vector, mode=spark_model.mode, staleness=spark_model.strategy.staleness,
                           optimizer=model.optimizer if spark_model.aggregate == "gradients" else None,
                           weights_size=model.flat_weights.size, timeout=spark_model.timeout,
                           workers=1 if one_step else max(1, len(rows)), rows=rows,
                           compression=spark_model.compression)


def epoch_counts(ps, before: dict) -> dict:
    """What the parameter server did in an epoch, from its ``stats`` before it: pushes applied,
    duplicates dropped, pulls, the bytes of vectors received (pushes, duplicates included) and
    sent (pulls), and the widest ssp staleness seen."""
    return {"pushes": ps.stats["pushes"] - before["pushes"],
            "duplicate_pushes": ps.stats["duplicates"] - before["duplicates"],
            "pulls": ps.stats["pulls"] - before["pulls"],
            "bytes_pushed": ps.stats["bytes_pushed"] - before["bytes_pushed"],
            "bytes_pulled": ps.stats["bytes_pulled"] - before["bytes_pulled"],
            "staleness": ps.stats["epoch_max_staleness"]}


def training_rows(blocks) -> dict[int, int]:
    """``{partition: rows}`` of the partitions that train (the ones holding rows)."""
    return {p: int(rows) for p, rows in enumerate(blocks.rows) if rows}


def round_samples(spec, rows: dict[int, int]) -> dict[int, int]:
    """What each training partition's push of a sync round must carry: the rows it trains."""
    return {p: worker.round_samples(spec, n) for p, n in rows.items()}


def initial_worker_states(spark_model, partitions, resumed: dict | None) -> dict:
    """Each training partition's worker state at the start of the fit: the resumed
    checkpoint's, or the model's (its optimizer as compiled, and in EASGD its weights)."""
    if not spark_model.strategy.keeps_worker_state:
        return {}
    start = worker.worker_state(spark_model.model, with_weights=spark_model.strategy.elastic)
    return {p: (resumed or {}).get(p, start) for p in partitions}


def round_payload(model, layout, out=None) -> np.ndarray:
    """A sync round's pull vector: weights, moving statistics and optimizer slots."""
    parts = {"weights": model.flat_weights, "state": model.flat_state}
    parts.update({f"slot:{k}": v for k, v in model.optimizer.slots.items()})
    return layout.pack(parts, out=out)


def mean_of_pushes(result, total, received, layout, what, out=None):
    """The exchange's float64 sum as the round's mean vector (in ``out`` when given); ``result``
    takes the mean state and slots. Checks that every partition that trained pushed."""
    trained = result.partitions - len(result.empty_partitions)
    if len(received) != trained or sum(received.values()) != result.samples:
        raise RuntimeError(f"SparkModel.fit: {what}: {trained} partitions trained on {result.samples} "
                           f"rows, but the driver received pushes from {len(received)} partitions "
                           f"with {sum(received.values())} rows")
    out = np.empty(total.size, np.float32) if out is None else out
    # Divided in float64 and rounded once to float32, as (total / samples).astype(float32).
    mean = layout.split(np.divide(total, result.samples, out=out, casting="unsafe"))
    result.state = mean.get("state")
    result.slots = {name[5:]: v for name, v in mean.items() if name.startswith("slot:")}
    return mean[layout.names[0]]


def check_result(result, where: str, unit: str, kept: str | None = None) -> None:
    """The divergence guard, and at least one row trained: a partition whose loss, weights or
    update became NaN or infinite stops the fit before anything of the round or epoch reaches
    the driver's model. ``kept``: what the driver's model then holds (default: the weights
    before that round or epoch)."""
    if result.diverged:
        parts = "; ".join(f"partition {p}: {what}" for p, what in sorted(result.diverged))
        kept = kept or f"the model keeps the weights it had before that {unit}"
        raise SparkTrainingDivergedError(
            f"SparkModel.fit: training diverged in {where} ({parts}); {kept}. Lower the learning rate, "
            f"clip gradients or check the data for extreme values")
    if result.samples == 0:
        raise ValueError("SparkModel.fit: no partition holds any rows")


def combine_all(results, aggregate):
    return functools.reduce(lambda a, b: worker.combine(a, b, aggregate), results)


class InJob:
    """The fit as one barrier job (see the module docstring)."""

    def __init__(self, spark_model, blocks, model_bc, val_blocks, group: str, description: str,
                 worker_states: dict | None = None):
        model = spark_model.model
        self._take_settings(spark_model, blocks)
        self.codec = None           # sync: the round's vectors travel compressed with it
        self.bytes_moved = 0        # sync: bytes of the last round's pulls and pushes
        order_size = 0
        if spark_model.strategy.asynchronous:
            self.ps, self.exchange = parameter_server(spark_model, blocks), None
            inner, pull, push = self.ps, None, None
            order_size = self.ps.vector.size
        elif spark_model.strategy.elastic:         # synchronous EASGD: the center rides in the order
            self.ps, self.exchange, inner, pull, push = None, None, None, None, None
            order_size = model.flat_weights.size + model.flat_state.size
        else:
            pull, push = exchange.round_layouts(model, spark_model.aggregate,
                                                streamed=spark_model.overlap and spark_model.compression is None)
            self.codec = get_codec(spark_model.compression)
            self.ps, self.exchange = None, exchange.RoundExchange(push, timeout=spark_model.timeout,
                                                                  codec=self.codec)
            inner = self.exchange
            self._payloads = [np.empty(pull.size, np.float32) for _ in range(2)]
            if self.codec is not None:
                self._encoded = [np.empty(self.codec.nbytes(pull.size), np.uint8) for _ in range(2)]
            self._mean = np.empty(push.size, np.float32)
        self.coordinator = Coordinator(inner, partitions=range(len(blocks.rows)),
                                       poll=min(10.0, spark_model.timeout / 2),
                                       state_sizes=(model.flat_weights.size, model.flat_state.size))
        # Each partition's worker starts from the checkpoint's state for it, or from the model;
        # a retried task starts from its last completed order's.
        self.coordinator.worker_states = initial_worker_states(spark_model, self.training, worker_states)
        self.server, address, token = serve(blocks.site, self.coordinator,
                                            f"sparkdl-{spark_model.mode}", spark_model.port, self.timeout)
        self.end = fit_task.FitEndpoint(address, token, self.timeout, pull, push, server_size=order_size,
                                        security=self.server.security,
                                        compression=None if push is None else spark_model.compression)
        self._start_job(blocks, model_bc, val_blocks, group, description)

    def _take_settings(self, spark_model, blocks) -> None:
        """What every one-job fit keeps of its settings and blocks: the model, the timeouts
        and the partitions that train."""
        self.model, self.aggregate = spark_model.model, spark_model.aggregate
        self.timeout, self.round_timeout = spark_model.timeout, spark_model.round_timeout
        self.rows = training_rows(blocks)
        self.training = sorted(self.rows)
        self.workers = len(self.training)

    def _start_job(self, blocks, model_bc, val_blocks, group: str, description: str) -> None:
        """The fit's barrier job over the blocks (zipped with the validation blocks), its tasks
        reaching ``self.end``; the server is closed if the job cannot start."""
        self.val_blocks = val_blocks
        task = executor.persistent_task(model_bc, self.end, with_validation=val_blocks is not None)
        try:
            self.job = blocks.site.start_job(blocks, val_blocks, task, group, description, end=self.end)
        except BaseException:
            self.server.close()
            raise

    # ---- the protocol -------------------------------------------------------------------------
    def sync_round(self, spec, what: str):
        assert self.exchange is not None, "the sync modes have a round exchange"
        model = self.model
        # Two payload buffers in turn: a late reader of the last round's never sees this one's.
        self._payloads.reverse()
        payload = round_payload(model, self.end.pull, out=self._payloads[0])
        iterations = int(model.optimizer.iterations)
        order = {"spec": vars(spec), "iterations": iterations, "label": f"sparkdl {what}"}
        sent = payload
        if self.codec is not None:          # the weights go out compressed, encoded afresh each round
            self._encoded.reverse()
            sent = self.codec.encode(payload, out=self._encoded[0])
            order["codec"] = self.codec.name
        self.exchange.open_round(spec.round, payload, {"iterations": iterations},
                                 partitions=round_samples(spec, self.rows))
        pushed = self.exchange.bytes_received
        try:
            self.coordinator.order("train", order, sent, self.training)
            result = self._results(self._wait(what))
        finally:
            total, received = self.exchange.close_round()
        self.bytes_moved = len(self.training) * sent.nbytes + self.exchange.bytes_received - pushed
        check_result(result, what.split("/")[0], "round")
        layout = self.end.push
        assert layout is not None, "a sync fit's endpoint carries the push layout"
        mean = mean_of_pushes(result, total, received, layout, what.split("/")[0], out=self._mean)
        if self.codec is not None:          # the tasks pushed changes from what they pulled
            for _, a, b, weighted in layout.bounds():
                if weighted:
                    self._mean[a:b] += payload[a:b]
        return result, mean

    def async_epoch(self, spec, what: str):
        ps = self.ps
        ps.begin_epoch(spec.round)
        before = dict(ps.stats)
        self.coordinator.order("train", {"spec": vars(spec), "label": f"sparkdl {what}"},
                               expected=self.training)
        reports = self._wait(what)
        result = self._results(reports)
        check_result(result, f"epoch {spec.round + 1}", "epoch")
        self.coordinator.worker_states.update(
            {p: fit_task.reported_worker_state(*reports[p]) for p in sorted(reports)})
        set_from_server(self.model, ps)
        return result, epoch_counts(ps, before)

    def elastic_round(self, spec, what: str):
        """Synchronous EASGD: the center goes out with the order; each task trains from its own
        weights and reports them; the driver applies the exchange (``worker.elastic_center``)."""
        center = worker.model_vector(self.model)
        self.coordinator.order("elastic", {"spec": vars(spec), "label": f"sparkdl {what}"}, center,
                               self.training)
        reports = self._wait(what)
        result = self._results(reports)
        check_result(result, what.split("/")[0], "round")
        states = {p: fit_task.reported_worker_state(*reports[p]) for p in sorted(reports)}
        new_center, after = worker.elastic_center(center, states, spec.alpha)
        self.coordinator.worker_states.update(after)
        return result, new_center

    def worker_states(self) -> dict:
        """Async modes and EASGD: ``{partition: (meta, vector)}``, each worker's state after the
        last completed round or epoch (what a checkpoint keeps); empty in sync mode."""
        return dict(self.coordinator.worker_states)

    def evaluate_validation(self) -> dict | None:
        """Loss and metrics of the validation rows the tasks hold, at the driver's weights."""
        if self.val_blocks is None:
            return None
        self.coordinator.order("evaluate", {"batch_size": 256}, worker.model_vector(self.model))
        return self._validation_result(self._wait("validation"))

    def _validation_result(self, reports: dict) -> dict:
        """Loss and metrics of the validation rows from every task's report of them."""
        model = self.model
        metrics = [m.fresh() for m in model.metrics]
        loss_sum, count = 0.0, 0
        for partition in sorted(reports):
            meta, array = reports[partition]
            loss_sum += meta["loss_sum"]
            count += meta["samples"]
            for m, state in zip(metrics, fit_task.metric_states(meta, array)):
                m.merge_state(state)
        result = {"loss": loss_sum / count if count else float("nan")}
        result.update({m.name: m.result() for m in metrics})
        return result

    def close(self, failed: bool) -> None:
        """Stop the tasks (cancel the job when the fit failed or they do not stop), free the port."""
        self.coordinator.stop()
        try:
            if failed or not self.job.join(self.timeout):
                self.job.cancel()
                self.job.join(self.timeout)
        finally:
            self.server.close()

    # ---- waiting for the tasks ------------------------------------------------------------------
    def _results(self, reports: dict):
        """The reports of a training order combined into one result, in partition order."""
        results = [fit_task.report_result(*reports[p]) for p in sorted(reports)]
        return combine_all(results, self.aggregate)

    def _wait(self, what: str) -> dict:
        """Every expected report of the open order; the job's failure or ``round_timeout``
        ends the wait. Every ``timeout`` seconds in which the job's tasks cannot all run
        (executors lost, none replaced), a warning says so."""
        start = said = time.monotonic()
        while True:
            reports = self.coordinator.wait_reports(0.2)
            if reports is not None:
                return reports
            self.job.check()
            now = time.monotonic()
            if self.round_timeout is not None and now - start > self.round_timeout:
                waited_for = self._waited_for(self.job.short_of_slots(self.workers))
                self.job.cancel()
                raise TimeoutError(f"SparkModel.fit: {what} did not finish within round_timeout="
                                   f"{self.round_timeout} s{waited_for}; the fit's Spark job was cancelled")
            if now - said > self.timeout:
                said = now
                short = self.job.short_of_slots(self.workers)
                if short:
                    bound = (f", for round_timeout={self.round_timeout} s at most" if self.round_timeout
                             else " (set round_timeout to bound the wait)")
                    logger.warning("SparkModel.fit: %s has waited %.0f s%s; it waits until executors come back%s",
                                   what, now - start, self._waited_for(short), bound)

    def _waited_for(self, short: str | None) -> str:
        """What a wait is missing — the partitions that did not report — and why they cannot,
        when the job is ``short`` of task slots."""
        missing = self.coordinator.missing()
        plural = "s" * (len(missing) > 1)
        details = [f"no report from partition{plural} {', '.join(map(str, missing))}"] if missing else []
        details += [short] if short else []
        return f" ({'; '.join(details)})" if details else ""


def set_from_server(model, ps) -> None:
    """The driver's model takes the parameter server's weights and moving statistics."""
    worker.set_model_vector(model, ps.snapshot())


class RoundJobs:
    """The fallback: one Spark job per sync round or async epoch."""

    def __init__(self, spark_model, blocks, model_bc, group: str, worker_states: dict | None = None):
        self.spark_model, self.model = spark_model, spark_model.model
        self.aggregate, self.round_timeout = spark_model.aggregate, spark_model.round_timeout
        self.blocks, self.model_bc, self.group = blocks, model_bc, group
        self.sc = blocks.rdd.context
        training = sorted(training_rows(blocks))
        self.workers = len(training)
        # Each partition's worker state, kept here and sent to every round's or epoch's tasks:
        # a partition may run in a different Python worker each time.
        self._worker_states = initial_worker_states(spark_model, training, worker_states)
        self.server: FrameServer | None = None
        # The parameter server (async modes) or the round exchange (sync over sockets), and
        # the endpoint through which tasks reach it; None with transport="spark".
        self.service: Any = None
        self.end: Any = None
        sm = spark_model
        if sm.strategy.asynchronous:
            self.service = parameter_server(sm, blocks)
            self.server, address, token = serve(blocks.site, self.service, f"sparkdl-{sm.mode}", sm.port, sm.timeout)
            self.end = executor.PSEndpoint(address, token, sm.timeout, self.service.vector.size,
                                           self.server.security)
        elif sm.transport == "socket" and not sm.strategy.elastic:
            pull, push = exchange.round_layouts(self.model, sm.aggregate)
            self.service = exchange.RoundExchange(push, timeout=sm.timeout)
            self.server, address, token = serve(blocks.site, self.service, "sparkdl-sync", sm.port, sm.timeout)
            self.end = exchange.Endpoint(address, token, sm.timeout, pull, push, self.server.security)

    def evaluate_validation(self):
        return None

    def worker_states(self) -> dict:
        return dict(self._worker_states)

    def close(self, failed: bool) -> None:
        if self.server is not None:
            self.server.close()
        self.sc.setLocalProperty("spark.jobGroup.id", None)
        self.sc.setLocalProperty("spark.job.description", None)

    def _job(self, run, what: str):
        """Run one round's Spark job; with ``round_timeout``, cancel it (its tasks are
        interrupted) once that many seconds have passed and raise TimeoutError."""
        self.sc.setJobGroup(self.group, f"sparkdl {what}", True)
        if self.round_timeout is None:
            return run()
        timer = threading.Timer(self.round_timeout, self.sc.cancelJobGroup, args=(self.group,))
        timer.daemon = True
        timer.start()
        try:
            return run()
        except Exception as error:
            if not timer.is_alive():        # it fired: the failure is the cancellation
                raise TimeoutError(f"SparkModel.fit: {what} did not finish within round_timeout="
                                   f"{self.round_timeout} s; its Spark job was cancelled") from error
            raise
        finally:
            timer.cancel()

    def sync_round(self, spec, what: str):
        if self.server is None:
            return self._round_via_spark(spec, what)
        return self._round_via_socket(spec, what)

    def async_epoch(self, spec, what: str):
        """One job: every partition trains an epoch against the parameter server."""
        ps = self.service
        ps.begin_epoch(spec.round)
        before = dict(ps.stats)
        states_bc = self.sc.broadcast(self._worker_states)
        try:
            task = executor.async_epoch_task(self.model_bc, self.end, spec, states_bc)
            results = self._job(lambda: self.blocks.rdd.mapPartitionsWithIndex(task).collect(), what)
        finally:
            states_bc.destroy()
        result = combine_all(results, self.aggregate)
        check_result(result, f"epoch {spec.round + 1}", "epoch")
        self._worker_states.update(result.worker_states)
        set_from_server(self.model, ps)
        return result, epoch_counts(ps, before)

    def elastic_round(self, spec, what: str):
        """Synchronous EASGD: every partition's worker state by broadcast; each task returns
        its worker's state before the exchange, which the driver applies."""
        center = worker.model_vector(self.model)
        states_bc = self.sc.broadcast(self._worker_states)
        try:
            task = executor.elastic_round_task(self.model_bc, states_bc, spec)
            results = self._job(lambda: self.blocks.rdd.mapPartitionsWithIndex(task).collect(), what)
        finally:
            states_bc.destroy()
        result = combine_all(results, self.aggregate)
        check_result(result, what.split("/")[0], "round")
        new_center, after = worker.elastic_center(center, result.worker_states, spec.alpha)
        self._worker_states.update(after)
        return result, new_center

    def _round_via_spark(self, spec, what):
        """Broadcast the weights, tree-reduce the results."""
        model, opt = self.model, self.model.optimizer
        payload = {"weights": model.get_flat_weights(), "state": model.flat_state.copy(),
                   "slots": {k: v.copy() for k, v in opt.slots.items()} if self.aggregate == "weights" else {},
                   "iterations": opt.iterations}
        weights_bc = self.sc.broadcast(payload)
        aggregate = self.aggregate
        try:
            task = executor.round_task(self.model_bc, weights_bc, spec)
            result = self._job(lambda: self.blocks.rdd.mapPartitionsWithIndex(task).treeReduce(
                lambda a, b: worker.combine(a, b, aggregate), depth=2), what)
        finally:
            weights_bc.destroy()
        check_result(result, what.split("/")[0], "round")
        if aggregate == "gradients":
            return result, result.vector / np.float32(result.samples)
        return result, result.vector

    def _round_via_socket(self, spec, what):
        """Publish the weights on the driver's exchange, run the tasks, read the summed pushes."""
        rounds, opt = self.service, self.model.optimizer
        payload = round_payload(self.model, self.end.pull)
        rounds.open_round(spec.round, payload, {"iterations": int(opt.iterations)},
                          partitions=round_samples(spec, training_rows(self.blocks)))
        try:
            task = executor.socket_round_task(self.model_bc, self.end, spec)
            results = self._job(lambda: self.blocks.rdd.mapPartitionsWithIndex(task).collect(), what)
        finally:
            total, received = rounds.close_round()
        result = combine_all(results, self.aggregate)
        check_result(result, what.split("/")[0], "round")
        return result, mean_of_pushes(result, total, received, self.end.push, what.split("/")[0])
