"""SparkModel: train a compiled sparkdl model on a DataFrame or RDD, predict and evaluate on
the executors.

Synchronous training (SparkNet): one Spark job per round. The driver broadcasts the flat
weights (raw float32 buffers), every partition trains its cached block for ``frequency``
steps (``worker.run_round``), and ``treeReduce`` combines the results on the executors so the
driver receives one vector per round.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np

from sparkdl.distributed import exchange, protocol, worker
from sparkdl.distributed.server import FrameServer
from sparkdl.distributed.strategies import get_strategy
from sparkdl.engine import metrics as metrics_mod
from sparkdl.engine.callbacks import CallbackList, History
from sparkdl.engine.model import NotCompiledError
from sparkdl.engine.progress import ProgressBar, format_logs
from sparkdl.spark import executor, frames

logger = logging.getLogger(__name__)


def _check_frequency(frequency):
    if frequency in ("epoch", "batch"):
        return frequency
    if isinstance(frequency, (int, np.integer)) and not isinstance(frequency, bool) and frequency > 0:
        return int(frequency)
    raise ValueError(f"SparkModel: expected frequency 'epoch', 'batch' or an int tau > 0, "
                     f"received frequency={frequency!r}")


class SparkModel:
    """Distributed training of a compiled sparkdl model (Elephas' names).

    ``mode``: ``"sync"`` (alias ``"synchronous"``): rounds, one Spark job each. ``"async"``
    (alias ``"asynchronous"``), ``"hogwild"`` and ``"ssp"`` (with ``staleness=s``): a
    parameter server on the driver, one Spark job per epoch; each worker pulls the weights,
    trains ``frequency`` steps and pushes its change (see
    ``sparkdl.distributed.parameter_server``). ``frequency``: ``"epoch"`` (one pass over each
    partition per round or push), ``"batch"`` (one step) or an int tau. ``aggregate``:
    ``"weights"`` (average the models, weighted by samples; optimizer slots are averaged with
    them) or ``"gradients"`` (average the gradients at the broadcast weights; the driver's
    optimizer steps; in the async modes the server's optimizer steps on each pushed
    gradient). ``num_workers``: partitions that train (default: Spark's default parallelism).

    ``transport`` (sync): how weights and results travel each round. ``"socket"`` (default): tasks
    pull the weights from, and push their results to, a server on the driver that lives for
    one ``fit`` (bound to ``spark.driver.host``, on ``port`` or an ephemeral one; HMAC-checked
    binary frames), and the driver sums the pushes into one buffer as they arrive.
    ``"spark"``: Spark's broadcast and ``treeReduce`` (for clusters whose executors cannot
    open connections to the driver). ``timeout``: seconds any socket wait may take (a task
    waiting for the weights or a receipt, the driver waiting for a request, an ssp worker
    waiting for the slowest). ``round_timeout``: seconds one round's (or, in the async modes,
    one epoch's) Spark job may take before it is cancelled and ``fit`` raises TimeoutError
    (default None: no limit, as a round's length grows with the data).
    """

    def __init__(self, model, mode="sync", frequency="epoch", num_workers=None,
                 aggregate="weights", seed=0, transport="socket", port=None, timeout=120.0,
                 round_timeout=None, **mode_options):
        if getattr(model, "loss", None) is None or getattr(model, "optimizer", None) is None:
            raise NotCompiledError("SparkModel: expected a compiled model; call "
                                   "model.compile(optimizer=..., loss=...) first")
        self.model = model
        self.strategy = get_strategy(mode, **mode_options)
        self.mode = self.strategy.name
        self.frequency = _check_frequency(frequency)
        if aggregate not in ("weights", "gradients"):
            raise ValueError(f"SparkModel: expected aggregate 'weights' or 'gradients', "
                             f"received aggregate={aggregate!r}")
        self.aggregate = aggregate
        if self.mode == "hogwild" and aggregate == "gradients":
            raise ValueError("SparkModel: hogwild adds weight deltas without a lock; a server-side "
                             "optimizer (aggregate='gradients') needs mode 'async' or 'ssp'")
        if num_workers is not None and (isinstance(num_workers, bool) or
                                        not isinstance(num_workers, (int, np.integer)) or num_workers < 1):
            raise ValueError(f"SparkModel: expected num_workers >= 1 (an int) or None, "
                             f"received num_workers={num_workers!r}")
        self.num_workers = num_workers
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"SparkModel: expected seed >= 0 (an int), received seed={seed!r}")
        self.seed = int(seed)
        if transport not in ("socket", "spark"):
            raise ValueError(f"SparkModel: expected transport 'socket' or 'spark', "
                             f"received transport={transport!r}")
        self.transport = transport
        if port is not None and (isinstance(port, bool) or not isinstance(port, (int, np.integer))
                                 or not 0 <= port <= 65535):
            raise ValueError(f"SparkModel: expected port None or an int in [0, 65535], "
                             f"received port={port!r}")
        self.port = port
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"SparkModel: expected timeout > 0 (seconds), received timeout={timeout!r}")
        self.timeout = float(timeout)
        if round_timeout is not None and (isinstance(round_timeout, bool) or
                                          not isinstance(round_timeout, (int, float)) or not round_timeout > 0):
            raise ValueError(f"SparkModel: expected round_timeout None or > 0 (seconds), "
                             f"received round_timeout={round_timeout!r}")
        self.round_timeout = None if round_timeout is None else float(round_timeout)
        self.history: History | None = None

    # ---- data --------------------------------------------------------------------------------
    def _blocks(self, data, features_col, label_col, who):
        from pyspark import RDD
        from pyspark.sql import DataFrame

        if isinstance(data, DataFrame):
            return frames.dataframe_blocks(data, self.model, features_col, label_col,
                                           self.num_workers, who)
        if isinstance(data, RDD):
            return frames.rdd_blocks(data, self.model, self.num_workers, who)
        raise TypeError(f"{who}: expected a DataFrame or an RDD of (x, y) pairs, "
                        f"received {type(data).__name__}")

    # ---- fit ---------------------------------------------------------------------------------
    def fit(self, data, epochs=10, batch_size=64, features_col="features", label_col="label",
            validation_data=None, callbacks=None, verbose=1, checkpoint_dir=None,
            checkpoint_every=1, resume=False, checkpoint_keep=3) -> History:
        """Train for ``epochs`` on ``data``; returns the History (``history.rounds`` per round).

        ``checkpoint_dir``: a local directory (or ``file:`` URI) where every
        ``checkpoint_every``-th round (epoch, in the async modes) leaves a checkpoint — weights,
        optimizer state, the round counter, the seed and the history so far — written
        atomically; the newest ``checkpoint_keep`` are kept. ``resume=True`` continues from the
        newest readable one (a truncated or corrupted newest file is skipped with a warning),
        reproducing the weights an uninterrupted fit would reach; with none there, the fit
        starts afresh. The checkpoint must come from the same model, data partitioning and
        settings; ``epochs`` may be larger than the interrupted fit's.
        """
        who = "SparkModel.fit"
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"{who}: expected epochs >= 0 (an int), received epochs={epochs!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"{who}: expected batch_size >= 1 (an int), received batch_size={batch_size!r}")
        store = _checkpoint_store(checkpoint_dir, checkpoint_every, resume, checkpoint_keep, who)
        prep_start = time.perf_counter()
        blocks = self._blocks(data, features_col, label_col, who)
        blocks.note_batch_size(int(batch_size))
        val = None
        if validation_data is not None:
            val = self._validation(validation_data, features_col, label_col)
        prep_seconds = time.perf_counter() - prep_start
        try:
            return self._fit_rounds(blocks, epochs, int(batch_size), val, callbacks, verbose,
                                    prep_seconds, store, int(checkpoint_every), resume)
        finally:
            blocks.release()

    def _validation(self, validation_data, features_col, label_col):
        from pyspark.sql import DataFrame
        if isinstance(validation_data, DataFrame):
            return ("frame", validation_data, features_col, label_col)
        if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
            xs, y = self.model._prepare(*validation_data, "SparkModel.fit(validation_data)")
            return ("arrays", xs, y)
        raise TypeError("SparkModel.fit: expected validation_data as a DataFrame or (x_val, y_val)")

    def _evaluate_validation(self, val) -> dict:
        if val[0] == "arrays":
            return self.model._evaluate_lists(val[1], val[2], batch_size=256)
        return self.evaluate(val[1], features_col=val[2], label_col=val[3])

    def _fit_rounds(self, blocks, epochs, batch_size, val, callbacks, verbose, prep_seconds,
                    store=None, checkpoint_every=1, resume=False):
        model = self.model
        sc = blocks.rdd.context
        steps_per_epoch = -(-blocks.max_rows // batch_size)
        if self.frequency == "epoch" or self.strategy.asynchronous:
            rounds_per_epoch = 1
        else:
            tau = 1 if self.frequency == "batch" else self.frequency
            rounds_per_epoch = -(-steps_per_epoch // tau)
        total_rounds = epochs * rounds_per_epoch
        fit_id = uuid.uuid4().hex[:12]
        self.history = History()
        cbs = CallbackList(list(callbacks or []) + [self.history], model,
                           {"epochs": epochs, "steps": rounds_per_epoch, "batch_size": batch_size,
                            "verbose": verbose, "rounds": total_rounds})
        model.stop_training = False
        group = f"sparkdl-{fit_id}"
        self.history.rounds = []
        self.history.settings = {"mode": self.mode, "staleness": getattr(self.strategy, "staleness", None),
                                 "frequency": self.frequency, "aggregate": self.aggregate,
                                 "partitions": len(blocks.rows), "seed": self.seed,
                                 "transport": "parameter server" if self.strategy.asynchronous
                                 else self.transport, "batch_size": batch_size, "epochs": epochs}
        self.history.data_seconds = prep_seconds
        self.history.rows_per_partition = list(blocks.rows)
        self.history.short_partitions = list(blocks.short_partitions)
        self.history.empty_partitions = list(blocks.empty_partitions)
        if blocks.short_partitions or blocks.empty_partitions:
            logger.warning("SparkModel.fit: %d partition(s) hold fewer rows than batch_size=%d "
                           "and train on what they have: %s; empty partitions: %s",
                           len(blocks.short_partitions), batch_size, blocks.short_partitions,
                           blocks.empty_partitions)
        round_index = 0
        plane = None
        # What a checkpoint must match to be resumed: the same rounds over the same partitions.
        settings = {k: self.history.settings[k] for k in ("mode", "staleness", "aggregate", "seed",
                                                          "batch_size")}
        settings.update(frequency=str(self.frequency), rows_per_partition=list(blocks.rows))
        partial = None
        self.history.resumed_from = None
        model_bc = None
        try:
            cbs.on_train_begin()
            if store is not None and resume:
                round_index, partial = self._resume(store, settings, rounds_per_epoch)
            start_epoch, start_round = divmod(round_index, rounds_per_epoch)
            model_bc = executor.ModelBroadcast(sc, model)
            if self.strategy.asynchronous:
                plane = self._parameter_server(sc)
            elif self.transport == "socket":
                plane = self._data_plane(sc)
            for epoch in range(start_epoch, epochs):
                cbs.on_epoch_begin(epoch)
                bar = ProgressBar(rounds_per_epoch, verbose, unit="round")
                if verbose == 1:
                    bar.stream.write(f"Epoch {epoch + 1}/{epochs}\n")
                loss_sum, samples = 0.0, 0
                metric_objs = [metrics_mod.get(m.get_config()) for m in model.metrics]
                first = 0
                if epoch == start_epoch and partial is not None:
                    first, (loss_sum, samples, states) = start_round, partial
                    for m, state in zip(metric_objs, states):
                        m.state = np.array(state, copy=True)
                for r in range(first, rounds_per_epoch):
                    what = f"{self.mode} epoch {epoch + 1}/{epochs}" if self.strategy.asynchronous \
                        else f"round {round_index + 1}/{total_rounds}"
                    sc.setJobGroup(group, f"sparkdl {what}", True)
                    self._running = (sc, group, what)
                    info = self._run_round(blocks, model_bc, round_index, batch_size, plane)
                    loss_sum += info["loss_sum"]
                    samples += info["samples"]
                    for m, state in zip(metric_objs, info["metric_states"]):
                        m.merge_state(state)
                    self.history.rounds.append({k: v for k, v in info.items()
                                                if k not in ("loss_sum", "metric_states")})
                    round_index += 1
                    bar.update(r + 1, {"loss": loss_sum / max(samples, 1)})
                    if store is not None and r + 1 < rounds_per_epoch and round_index % checkpoint_every == 0:
                        self._checkpoint(store, round_index, settings, epoch, (loss_sum, samples, metric_objs))
                logs = {"loss": loss_sum / max(samples, 1)}
                logs.update({m.name: m.result() for m in metric_objs})
                if val is not None:
                    logs.update({f"val_{k}": v for k, v in self._evaluate_validation(val).items()})
                cbs.on_epoch_end(epoch, logs)
                bar.finish(logs, prefix=f"Epoch {epoch + 1}/{epochs} - ")
                logger.info("epoch %d/%d: %s", epoch + 1, epochs, format_logs(logs))
                if store is not None and (round_index % checkpoint_every == 0 or epoch + 1 == epochs
                                          or model.stop_training):
                    self._checkpoint(store, round_index, settings, epoch + 1)
                if model.stop_training:
                    break
        finally:
            if plane is not None:
                plane.server.close()
            sc.setLocalProperty("spark.jobGroup.id", None)
            sc.setLocalProperty("spark.job.description", None)
            if model_bc is not None:
                model_bc.destroy()
        cbs.on_train_end()
        return self.history

    # ---- checkpoints ----------------------------------------------------------------------------
    def _resume(self, store, settings, rounds_per_epoch):
        """Restore the newest readable checkpoint into the model and the history. Returns
        ``(rounds done, (loss sum, samples, metric states) of the unfinished epoch or None)``."""
        restored = store.restore_latest(self.model, check=functools.partial(
            _check_resumable, settings=settings, store=store))
        if restored is None:
            return 0, None
        meta = restored.meta
        done = int(meta["round"])
        epoch, in_epoch = divmod(done, rounds_per_epoch)
        partial = None
        if in_epoch:
            partial = (meta["loss_sum"], meta["samples"],
                       [restored.arrays[f"metric_{i}"] for i in range(len(self.model.metrics))])
        self.history.history = {k: list(v) for k, v in meta["history"].items()}
        self.history.epoch = list(meta["epochs_done"])
        self.history.rounds = list(meta["rounds"])
        self.history.resumed_from = done
        logger.info("SparkModel.fit: resuming from %s after round %d (epoch %d, round %d of %d in it)",
                    restored.path, done, epoch + 1, in_epoch, rounds_per_epoch)
        return done, partial

    def _checkpoint(self, store, round_index, settings, epoch, sums=None):
        """Save the state after ``round_index`` rounds; ``sums`` — ``(loss sum, samples, metric
        objects)`` — when the checkpoint falls inside ``epoch``, None at an epoch's end."""
        loss_sum, samples, metric_objs = sums or (0.0, 0, [])
        meta = _plain({"round": round_index, "epoch": epoch, "settings": settings,
                       "loss_sum": loss_sum, "samples": samples, "history": self.history.history,
                       "epochs_done": self.history.epoch, "rounds": self.history.rounds})
        store.save(self.model, round_index, meta,
                   {f"metric_{i}": m.state for i, m in enumerate(metric_objs)})

    def _serve(self, sc, service, name):
        """``(server, advertised address, token)``: ``service`` on the driver for this fit."""
        conf = sc.getConf()
        host = conf.get("spark.driver.host", "127.0.0.1")
        bind = conf.get("spark.driver.bindAddress", host)
        port = self.port if self.port is not None else int(conf.get("spark.sparkdl.server.port", "0"))
        token = protocol.new_token()
        server = FrameServer(service, token, host=bind, port=port, timeout=self.timeout, name=name)
        return server, (host, server.address[1]), token

    def _data_plane(self, sc):
        """The driver's exchange for this fit, served on a socket until the fit ends."""
        pull, push = exchange.round_layouts(self.model, self.aggregate)
        rounds = exchange.RoundExchange(push, timeout=self.timeout)
        server, address, token = self._serve(sc, rounds, "sparkdl-sync")
        return _Plane(server, rounds, exchange.Endpoint(address, token, self.timeout, pull, push))

    def _parameter_server(self, sc):
        """The parameter server of the async modes, holding the model's weights and state."""
        from sparkdl.distributed.parameter_server import ParameterServer
        model = self.model
        vector = np.concatenate([model.flat_weights, model.flat_state])
        service = ParameterServer(vector, mode=self.mode, staleness=self.strategy.staleness,
                                  optimizer=model.optimizer if self.aggregate == "gradients" else None,
                                  weights_size=model.flat_weights.size, timeout=self.timeout)
        server, address, token = self._serve(sc, service, f"sparkdl-{self.mode}")
        return _Plane(server, service, _PSEndpoint(address, token, self.timeout, vector.size))

    def _run_round(self, blocks, model_bc, round_index, batch_size, plane) -> dict:
        model = self.model
        start = time.perf_counter()
        opt = model.optimizer
        spec = worker.RoundSpec(round=round_index, seed=self.seed, batch_size=batch_size,
                                frequency=self.frequency, aggregate=self.aggregate,
                                optimizer=opt.get_config())
        opt.build(model.flat_weights.size)
        if self.strategy.asynchronous:
            result, pushes, duplicates = self._epoch_via_ps(blocks, model_bc, spec, plane)
            info = self._round_info(round_index, start, result)
            info.update(pushes=pushes, duplicate_pushes=duplicates)
            return info
        if plane is None:
            result, vector = self._round_via_spark(blocks, model_bc, spec)
        else:
            result, vector = self._round_via_socket(blocks, model_bc, spec, plane)
        if self.aggregate == "gradients":
            before = (model.get_flat_weights(), {k: v.copy() for k, v in opt.slots.items()}, opt.iterations)
            opt.apply(model.flat_weights, vector)
            what = worker.non_finite(0.0, {"weights": model.flat_weights})
            if what is not None:
                model.set_flat_weights(before[0])
                for k, v in before[1].items():
                    opt.slots[k][...] = v
                opt.iterations = before[2]
                raise FloatingPointError(
                    f"SparkModel.fit: in round {round_index + 1}, {what} after the driver's optimizer "
                    f"step on the mean gradient (finite in every partition); the model keeps the "
                    f"weights it had before that round")
        else:
            model.set_flat_weights(vector)
            for k, v in result.slots.items():
                opt.slots[k][...] = v
            opt.iterations += result.steps
        if result.state is not None:
            model.flat_state[...] = result.state
        return self._round_info(round_index, start, result)

    def _job(self, run):
        """Run the round's Spark job; with ``round_timeout``, cancel it (its tasks are
        interrupted) once that many seconds have passed and raise TimeoutError."""
        if self.round_timeout is None:
            return run()
        sc, group, what = self._running
        timer = threading.Timer(self.round_timeout, sc.cancelJobGroup, args=(group,))
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

    @staticmethod
    def _round_info(round_index, start, result) -> dict:
        seconds = time.perf_counter() - start
        return {"round": round_index + 1, "samples": result.samples, "steps": result.steps,
                "loss_sum": result.loss_sum, "metric_states": result.metric_states,
                "seconds": seconds, "compute_seconds": result.compute_seconds,
                "overhead_seconds": max(seconds - result.compute_seconds, 0.0),
                "samples_per_second": result.samples / seconds if seconds > 0 else float("nan"),
                "partitions": result.partitions}

    def _epoch_via_ps(self, blocks, model_bc, spec, plane):
        """One job: every partition trains an epoch against the parameter server; the driver's
        model then takes the server's weights. Returns ``(result, pushes applied, duplicate
        pushes dropped)``."""
        model, ps = self.model, plane.rounds
        ps.begin_epoch(spec.round)
        pushes, duplicates = ps.stats["pushes"], ps.stats["duplicates"]
        task = executor.async_epoch_task(model_bc, plane.end, spec)
        results = self._job(lambda: blocks.rdd.mapPartitionsWithIndex(task).collect())
        aggregate = self.aggregate
        result = functools.reduce(lambda a, b: worker.combine(a, b, aggregate), results)
        _check_diverged(result, f"epoch {spec.round + 1}", "epoch")
        _check_samples(result)
        vector = ps.snapshot()
        w = model.flat_weights.size
        model.set_flat_weights(vector[:w])
        if model.flat_state.size:
            model.flat_state[...] = vector[w:]
        pushes, duplicates = ps.stats["pushes"] - pushes, ps.stats["duplicates"] - duplicates
        logger.debug("epoch %d: %d pushes applied, %d duplicates dropped", spec.round + 1,
                     pushes, duplicates)
        return result, pushes, duplicates

    def _round_via_spark(self, blocks, model_bc, spec):
        """Broadcast the weights, tree-reduce the results: ``(result, mean weights or mean
        gradient)``."""
        model, opt = self.model, self.model.optimizer
        payload = {"weights": model.get_flat_weights(), "state": model.flat_state.copy(),
                   "slots": {k: v.copy() for k, v in opt.slots.items()} if self.aggregate == "weights" else {},
                   "iterations": opt.iterations}
        weights_bc = blocks.rdd.context.broadcast(payload)
        aggregate = self.aggregate
        try:
            task = executor.round_task(model_bc, weights_bc, spec)
            result = self._job(lambda: blocks.rdd.mapPartitionsWithIndex(task).treeReduce(
                lambda a, b: worker.combine(a, b, aggregate), depth=2))
        finally:
            weights_bc.destroy()
        _check_diverged(result, f"round {spec.round + 1}", "round")
        _check_samples(result)
        if aggregate == "gradients":
            return result, result.vector / np.float32(result.samples)
        return result, result.vector

    def _round_via_socket(self, blocks, model_bc, spec, plane):
        """Publish the weights on the driver's exchange, run the tasks, read the summed
        pushes: ``(result, mean weights or mean gradient)``."""
        model, opt = self.model, self.model.optimizer
        parts = {"weights": model.flat_weights, "state": model.flat_state}
        parts.update({f"slot:{k}": v for k, v in opt.slots.items()})
        payload = plane.end.pull.pack(parts)
        plane.rounds.open_round(spec.round, payload, {"iterations": int(opt.iterations)},
                                partitions=[p for p, rows in enumerate(blocks.rows) if rows])
        aggregate = self.aggregate
        try:
            task = executor.socket_round_task(model_bc, plane.end, spec)
            results = self._job(lambda: blocks.rdd.mapPartitionsWithIndex(task).collect())
        finally:
            total, received = plane.rounds.close_round()
        result = functools.reduce(lambda a, b: worker.combine(a, b, aggregate), results)
        _check_diverged(result, f"round {spec.round + 1}", "round")
        _check_samples(result)
        trained = result.partitions - len(result.empty_partitions)
        if len(received) != trained or sum(received.values()) != result.samples:
            raise RuntimeError(f"SparkModel.fit: round {spec.round + 1}: {trained} partitions trained "
                               f"on {result.samples} rows, but the driver received pushes from "
                               f"{len(received)} partitions with {sum(received.values())} rows")
        mean = plane.end.push.split((total / result.samples).astype(np.float32))
        result.state = mean.get("state")
        result.slots = {name[5:]: v for name, v in mean.items() if name.startswith("slot:")}
        return result, mean[plane.end.push.names[0]]

    # ---- inference ---------------------------------------------------------------------------
    def predict(self, data, features_col="features", prediction_col="prediction",
                probability_col="probability", batch_size=256):
        """NumPy in, NumPy out (locally); a DataFrame in, the DataFrame plus predictions out
        (computed on the executors)."""
        from pyspark.sql import DataFrame
        if isinstance(data, DataFrame):
            return frames.predict_frame(data, self.model, features_col, prediction_col,
                                        probability_col, batch_size)
        return self.model.predict(data, batch_size=batch_size)

    def evaluate(self, data, features_col="features", label_col="label", batch_size=256) -> dict:
        """Loss and compiled metrics computed on the executors and combined on the driver."""
        from pyspark.sql import DataFrame
        if not isinstance(data, DataFrame):
            raise TypeError(f"SparkModel.evaluate: expected a DataFrame, received {type(data).__name__}")
        return frames.evaluate_frame(data, self.model, features_col, label_col, batch_size)


def _checkpoint_store(directory, every, resume, keep, who):
    """The fit's CheckpointStore (None without ``directory``), options checked first."""
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"{who}: expected checkpoint_every >= 1 (an int, in rounds), "
                         f"received checkpoint_every={every!r}")
    if not isinstance(resume, bool):
        raise TypeError(f"{who}: expected resume as a bool, received {type(resume).__name__}: {resume!r}")
    if directory is None:
        if resume:
            raise ValueError(f"{who}: resume=True needs checkpoint_dir (the directory to resume from)")
        return None
    from sparkdl.distributed.checkpoint import CheckpointStore
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or keep < 1:
        raise ValueError(f"{who}: expected checkpoint_keep >= 1 (an int), received checkpoint_keep={keep!r}")
    if not isinstance(directory, (str, bytes)) and not hasattr(directory, "__fspath__"):
        raise TypeError(f"{who}: expected checkpoint_dir as a path, received "
                        f"{type(directory).__name__}: {directory!r}")
    return CheckpointStore(directory, keep=int(keep))


def _plain(value):
    """``value`` with NumPy scalars and arrays as Python numbers and lists (JSON-able)."""
    import json
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _check_resumable(meta: dict, settings: dict, store) -> None:
    """A checkpoint resumes this fit only if it trained the same rounds on the same partitions."""
    saved = meta.get("settings", {})
    different = [f"{k}: checkpoint {saved.get(k)!r}, this fit {v!r}" for k, v in settings.items()
                 if saved.get(k) != v]
    if different:
        raise ValueError(f"SparkModel.fit: the checkpoints in {store.directory!r} come from another "
                         f"run and cannot be resumed here ({'; '.join(different)}); use another "
                         f"checkpoint_dir or resume=False")


def _check_diverged(result, where: str, unit: str) -> None:
    """The divergence guard: a partition whose loss, weights or update became NaN or infinite
    stops the fit before anything of the round or epoch reaches the driver's model."""
    if result.diverged:
        parts = "; ".join(f"partition {p}: {what}" for p, what in sorted(result.diverged))
        raise FloatingPointError(f"SparkModel.fit: training diverged in {where} ({parts}); the model "
                                 f"keeps the weights it had before that {unit}. Lower the learning "
                                 f"rate, clip gradients or check the data for extreme values")


def _check_samples(result) -> None:
    if result.samples == 0:
        raise ValueError("SparkModel.fit: no partition holds any rows")


@dataclass
class _Plane:
    """The data plane of one fit: server, its service (the sync exchange or the parameter
    server) and the endpoint tasks connect to."""
    server: FrameServer
    rounds: object
    end: object


@dataclass(frozen=True)
class _PSEndpoint:
    """What a task needs to reach the parameter server (shipped in the task closure)."""
    address: tuple
    token: bytes
    timeout: float
    size: int
