"""SparkModel: train a compiled sparkdl model on a DataFrame or RDD, predict and evaluate on
the executors.

``fit`` is one loop over epochs and rounds (callbacks, history, progress, checkpoints) that
hands each round to a transport (``sparkdl.spark.transports``): by default the whole fit is
one Spark barrier job whose tasks keep their partition and model and carry out the driver's
rounds (SparkNet's synchronous averaging, or epochs against a parameter server in the async
modes); where that cannot run, one Spark job per round.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import numpy.typing as npt

from sparkdl.distributed import shard_task, shards, worker
from sparkdl.distributed.compression import get_codec
from sparkdl.distributed.sparse import ParamMap
from sparkdl.distributed.strategies import EASGDStrategy, check_frequency, get_strategy, option_names
from sparkdl.engine import checks
from sparkdl.engine import scores as scores_mod
from sparkdl.engine.callbacks import Callback, CallbackList, History
from sparkdl.engine.files import json_plain
from sparkdl.engine.training import EpochSums, FitLoop, check_dashboard, live_dashboard
from sparkdl.errors import NotCompiledError, SparkTrainingDivergedError
from sparkdl.spark import block_cache, connect, frames, inference, job, transports
from sparkdl.spark.allreduce import RingInJob
from sparkdl.spark.blocks import dataframe_blocks, rdd_blocks
from sparkdl.spark.persistence import load_spark_model, save_spark_model
from sparkdl.spark.sharded import ShardedInJob
from sparkdl.spark.sharded_rounds import ShardedRoundsInJob

if TYPE_CHECKING:
    from pyspark import RDD
    from pyspark.sql import DataFrame

    from sparkdl.dashboard import Feed
    from sparkdl.distributed.checkpoint import CheckpointStore
    from sparkdl.engine.model import Model
    from sparkdl.engine.scores import Scores

__all__ = ["SparkModel", "load_spark_model"]

logger = logging.getLogger(__name__)


class SparkModel:
    """Distributed training of a compiled sparkdl model (Elephas' names).

    ``mode``: ``"sync"`` (alias ``"synchronous"``): rounds of model averaging. ``"async"``
    (alias ``"asynchronous"``), ``"hogwild"`` and ``"ssp"`` (with ``staleness=s``): a
    parameter server on the driver; each worker pulls the weights,
    trains ``frequency`` steps and pushes its change (see
    ``sparkdl.distributed.parameter_server``). ``"adag"``: as async, with each change divided
    by its number of steps. ``"easgd"`` (with ``rho=`` and ``variant="sync"`` or ``"async"``):
    elastic averaging; each worker keeps its own weights and every ``frequency`` steps
    exchanges an elastic difference with the center, the driver's model (see
    ``sparkdl.distributed.strategies``). ``frequency``: ``"epoch"`` (one pass over each
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
    open connections to the driver). ``"allreduce"``: the tasks keep the model and average among
    themselves each round (ring all-reduce, ``sparkdl.distributed.ring``), bit-identical to
    ``"socket"``; the driver sends orders and receives each round's metrics, and the model's
    state only at each epoch's end, at checkpoints and at the end of the fit, or after every
    round when a callback has ``on_batch_begin`` or ``on_batch_end`` (mode ``"sync"``,
    one barrier job: for clusters where the driver is far from the executors). ``timeout``:
    seconds any socket wait may take (a task waiting for the weights, a receipt or a peer's
    segment, the driver waiting for a request, an ssp worker
    waiting for the slowest). ``round_timeout``: seconds one round's (or, in the async modes,
    one epoch's) Spark job may take before it is cancelled and ``fit`` raises TimeoutError
    (default None: no limit, as a round's length grows with the data).

    ``execution``: ``"auto"`` (default) runs each fit as one Spark barrier job whose tasks keep
    their partition and model between rounds, unless that cannot run; ``"rounds"`` runs one
    job per round (per epoch in the async modes), as on clusters without barrier scheduling.

    ``compression``: ``None`` (float32), ``"fp16"`` or ``"int8"`` (a scale per 2,048 values):
    how the vectors of a round or push travel (``sparkdl.distributed.compression``). Each
    sender keeps what rounding lost and adds it to its next vector (error feedback). In the
    parameter-server modes pushes and pulls are compressed; in sync mode the round's weights
    going out, and the tasks' changes (or gradients) coming back, or with
    ``transport="allreduce"`` the segments the tasks exchange. Sync mode needs the fit as one
    barrier job; synchronous EASGD and ``transport="spark"`` take no compression.

    ``overlap``: move vectors while the workers compute. Modes async, hogwild, ssp and adag:
    each worker pushes its change and pulls the next weights in the background while it
    trains its next steps, and adds its own last change to those weights itself, as the
    server does (see ``sparkdl.distributed.feeds.PullsAhead``): a lone worker trains exactly
    as without overlap; with several, each sees the others' pushes one push later. Sync with
    ``aggregate="gradients"`` in a one-job fit: each task sends its gradient sum during the
    round's last backward, the output layer's first (``sparkdl.distributed.push_stream``); the
    model is the same bit for bit (with ``compression`` the push is encoded whole after the
    round). No effect in the other modes.

    ``num_servers``: modes async, hogwild and ssp, or mode sync with ``aggregate="gradients"``,
    with a model that has Embedding tables, in a one-job fit: ``K >= 1`` splits the model into
    K shards (the dense part by range, each table's rows by a hash of their id), each hosted
    by the task of one of the first K training partitions, so the driver serves no vector
    during the epoch; workers pull and push only the dense part and the rows their next steps
    read. In the async modes the shards are the parameter server (``sparkdl.spark.sharded``).
    In sync mode each round's gradient sums go to the shards, which apply their mean with the
    model's optimizer in one step on the dense weights and on the rows some partition pushed
    (``sparkdl.spark.sharded_rounds``): with SGD without momentum exactly the whole-vector
    round; optimizers with slots (momentum, Adam, ...) move and decay only the rows pushed,
    as single-process training's row-sparse steps do. At each epoch's end (and at
    checkpoints, or every round when a callback watches rounds) the driver's model takes the
    shards' values and, in gradients mode, its optimizer the shards' slots and steps; while
    the fit runs the model's weights and slots sit in memory-mapped files on the driver
    (``sparkdl.distributed.mapped``), the tasks receive the model without its tables, and
    validation rows are scored in the tasks from rows pulled from the shards. ``0``
    (default): the driver's parameter server or round exchange, with whole vectors. No
    compression with shards, nor ``overlap`` in sync mode.

    ``parameter_server_mode``: Elephas' choice of parameter server, accepted so Elephas code
    runs unchanged and otherwise ignored (``None``, ``"socket"`` or ``"http"``): sparkdl has
    one parameter server, over its own sockets. Any other keyword is a TypeError naming it,
    except the mode's own options (``staleness`` for ssp, ``rho`` and ``variant`` for easgd).
    """

    def __init__(self, model: Model, mode: str = "sync", frequency: str | int = "epoch",
                 num_workers: int | None = None, aggregate: str = "weights", seed: int = 0,
                 transport: str = "socket", port: int | None = None, timeout: float = 120.0,
                 round_timeout: float | None = None, execution: str = "auto",
                 parameter_server_mode: str | None = None, compression: str | None = None,
                 overlap: bool = False, num_servers: int = 0, **mode_options: Any):
        if getattr(model, "loss", None) is None or getattr(model, "optimizer", None) is None:
            raise NotCompiledError("SparkModel: expected a compiled model; call "
                                   "model.compile(optimizer=..., loss=...) first")
        self.model = model
        _check_keywords(mode, mode_options)
        self.strategy = get_strategy(mode, **mode_options)
        self.mode = self.strategy.name
        who = "SparkModel"
        self.frequency = check_frequency(frequency, who)
        self.strategy.check_aggregate(aggregate, who)
        if isinstance(self.strategy, EASGDStrategy) and self.strategy.rho is not None:
            assert model.optimizer is not None, "checked above"
            self.strategy.alpha(model.optimizer.learning_rate, 1)      # 0 < lr * rho < 1, checked now
        self.aggregate = aggregate
        self.num_workers = checks.optional_integer(num_workers, "num_workers", who, at_least=1)
        self.seed = checks.integer(seed, "seed", who, at_least=0)
        self.transport = checks.one_of(transport, ("socket", "spark", "allreduce"), "transport", who)
        self.port = checks.optional_integer(port, "port", who, at_least=0, at_most=65535)
        self.timeout = checks.number(timeout, "timeout", who, above=0)
        self.round_timeout = checks.optional_number(round_timeout, "round_timeout", who, above=0)
        self.execution = checks.one_of(execution, ("auto", "rounds"), "execution", who)
        self.parameter_server_mode = checks.one_of(parameter_server_mode, (None, "socket", "http"),
                                                   "parameter_server_mode", who)
        get_codec(compression)
        self.compression = compression
        self.overlap = bool(checks.one_of(overlap, (False, True), "overlap", who))
        self.num_servers = checks.integer(num_servers, "num_servers", who, at_least=0)
        _check_allreduce(self)
        _check_compression(self)
        _check_shards(self)
        self.history: History | None = None
        #: The URL of the last fit's live dashboard (``fit(..., dashboard=True)``), else None.
        self.dashboard_url: str | None = None

    # ---- Elephas' surface: settings, weights, persistence ----------------------------------------
    @property
    def master_network(self) -> Model:
        """The driver's model (Elephas' name; the same object as ``model``)."""
        return self.model

    def get_weights(self) -> list[np.ndarray]:
        """The model's weights (copies), as ``model.get_weights()``."""
        return self.model.get_weights()

    def set_weights(self, weights: Sequence[npt.ArrayLike]) -> None:
        """Set the model's weights, as ``model.set_weights(weights)``."""
        self.model.set_weights(weights)

    def get_config(self) -> dict[str, Any]:
        """The settings, as keywords: ``SparkModel(model, **spark_model.get_config())`` is an
        equal SparkModel (the mode under its canonical name, with its options)."""
        return {"mode": self.mode, **self.strategy.options(), "frequency": self.frequency,
                "num_workers": self.num_workers, "aggregate": self.aggregate, "seed": self.seed,
                "transport": self.transport, "port": self.port, "timeout": self.timeout,
                "round_timeout": self.round_timeout, "execution": self.execution,
                "parameter_server_mode": self.parameter_server_mode, "compression": self.compression,
                "overlap": self.overlap, "num_servers": self.num_servers}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model (as ``model.save`` does) and these settings to ``path``: a single
        zip file, or a directory when ``path`` is an existing directory; written atomically,
        nothing pickled. ``sparkdl.load_spark_model(path)`` reads it back."""
        save_spark_model(self, path)

    # ---- data ------------------------------------------------------------------------------
    def _workers(self, sc) -> int:
        """The partitions that train: ``num_workers``, or Spark's default parallelism cut to
        the slots the cluster has (so the fit can run as one barrier job)."""
        if self.num_workers is not None:
            return int(self.num_workers)
        slots = job.task_slots(sc)
        return min(sc.defaultParallelism, slots) if slots else sc.defaultParallelism

    def _blocks(self, data, features_col, label_col, who, validation=None):
        """The fit's blocks; in a Spark Connect session with the ``validation`` DataFrame's rows
        after each partition's training rows (``connect.frame_blocks``)."""
        from pyspark import RDD
        from pyspark.sql import DataFrame

        model = self.model
        loss = model.loss
        assert loss is not None, "SparkModel takes a compiled model"

        def key(owner, parts):
            """What the cached blocks of a DataFrame depend on besides the DataFrame."""
            return (id(owner), features_col if isinstance(features_col, str) else tuple(features_col),
                    label_col if isinstance(label_col, (str, type(None))) else tuple(label_col),
                    repr(model.input_specs()), loss.name, tuple(model.output_shape), parts)
        if connect.is_connect(data):
            parts = self.num_workers or connect.default_workers(data.sparkSession)
            build = functools.partial(connect.frame_blocks, data, model, features_col, label_col, parts, who,
                                      validation)
            # with validation rows in its partitions, the conversion is this fit's alone
            return build() if validation is not None else \
                block_cache.blocks_for(data, key(data.sparkSession, parts), build)
        if isinstance(data, DataFrame):
            sc = data.sparkSession.sparkContext
            parts = self._workers(sc)
            return block_cache.blocks_for(data, key(sc, parts), lambda: dataframe_blocks(
                data, model, features_col, label_col, parts, who))
        if isinstance(data, RDD):
            return rdd_blocks(data, self.model, self._workers(data.context), who)
        raise TypeError(f"{who}: expected a DataFrame or an RDD of (x, y) pairs, "
                        f"received {type(data).__name__}")

    # ---- fit ---------------------------------------------------------------------------------
    def fit(self, data: DataFrame | RDD[Any], epochs: int = 10, batch_size: int = 64,
            features_col: str | Sequence[str] = "features", label_col: str | Sequence[str] | None = "label",
            validation_data: DataFrame | tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
            callbacks: Sequence[Callback] | None = None, verbose: int = 1,
            checkpoint_dir: str | os.PathLike[str] | None = None, checkpoint_every: int = 1,
            resume: bool = False, checkpoint_keep: int = 3, validation_split: float = 0.0,
            dashboard: bool | str = False) -> History:
        """Train for ``epochs`` on ``data``; returns the History (``history.rounds`` per round).

        ``callbacks`` run on the driver: the epoch hooks around each epoch, ``on_batch_begin``
        and ``on_batch_end`` around each round (a round is this fit's batch).

        ``validation_data`` (a DataFrame or ``(x_val, y_val)`` arrays) or ``validation_split``
        (``0 <= validation_split < 1``, not both) is evaluated after each epoch as
        ``val_loss`` and ``val_<metric>``. ``validation_split`` holds out the last
        ``rows - int(rows * (1 - validation_split))`` rows of each training partition, as
        Keras holds out the last fraction of its arrays: a DataFrame or RDD of the same
        partitions holds out the same rows in every fit. The held-out rows stay in the training
        tasks, which evaluate them (``history.validation_rows_per_partition`` counts them).

        The whole fit runs as one Spark barrier job whose tasks keep their partition and model
        in memory between rounds; where that cannot run (more partitions than task slots,
        dynamic allocation, ``transport="spark"``) it runs one job per round (per epoch in the
        async modes) and says why in the log and in ``history.settings["execution"]``.

        ``checkpoint_dir``: a local directory (or ``file:`` URI) where every
        ``checkpoint_every``-th round (epoch, in the async modes) leaves a checkpoint — weights,
        optimizer state, the round counter, the seed and the history so far — written
        atomically; the newest ``checkpoint_keep`` are kept. ``resume=True`` continues from the
        newest readable one (a truncated or corrupted newest file is skipped with a warning),
        reproducing the weights an uninterrupted fit would reach; with none there, the fit
        starts afresh. The checkpoint must come from the same model, data partitioning and
        settings; ``epochs`` may be larger than the interrupted fit's.

        A Spark Connect session's DataFrame trains the same way, its one job a barrier
        ``mapInArrow`` and the fit's servers in the client (``sparkdl.spark.connect``); where the
        executors cannot reach the client, a ``transport="allreduce"`` fit runs its loop in a
        task (``sparkdl.spark.task_loop``) and other fits raise one ValueError naming the
        settings. ``transport="spark"`` and ``execution="rounds"`` need a classic session.

        ``dashboard=True``: a live page of the fit (loss and metrics per round and epoch, round
        times, throughput, bytes moved, pushes, staleness, progress and ETA), served by the
        driver for the length of the fit on ``spark.driver.host`` (port
        ``spark.sparkdl.dashboard.port``, default 0: an ephemeral one); ``"keep"``: served until
        the process ends. Its URL, which carries a random token, is logged at INFO and kept in
        ``spark_model.dashboard_url``. The same data is JSON at ``<url>api/state``.
        """
        who = "SparkModel.fit"
        board = check_dashboard(dashboard, who)
        epochs = checks.integer(epochs, "epochs", who, at_least=0)
        batch_size = checks.integer(batch_size, "batch_size", who, at_least=1)
        split = _check_validation_split(validation_split, validation_data, who)
        store = _checkpoint_store(checkpoint_dir, checkpoint_every, resume, checkpoint_keep, who)
        # The data plane's settings (and the extra encryption needs) fail here, before any job.
        conf = _conf_of(data)
        if conf is not None:
            transports.data_plane_security(conf)
            if connect.is_connect(data):
                self._check_connect(who)
        val = self._validation(validation_data, features_col, label_col) if validation_data is not None else None
        with live_dashboard(board, who, self, **(_dashboard_address(data) if board else {})) as feed:
            self.model.dashboard_url = self.dashboard_url
            run = _FitRun(epochs, batch_size, verbose, store, int(checkpoint_every), resume, split, feed)
            return self._fit_data(data, features_col, label_col, val, callbacks, run, who)

    def _check_connect(self, who: str) -> None:
        """What a Spark Connect session cannot run, refused before any job."""
        if self.transport == "spark":
            raise connect.refusal(who, "transport='spark' (Spark's broadcast and treeReduce, a job per round)",
                                  "use transport='socket' (the default) or transport='allreduce'")
        if self.execution == "rounds":
            raise connect.refusal(who, "execution='rounds' (a job per round, its weights by broadcast)",
                                  "use execution='auto': the fit runs as one barrier job")

    def _fit_data(self, data, features_col, label_col, val, callbacks, run, who) -> History:
        """The fit's blocks (and held-out rows), then its rounds; the blocks are released after."""
        split, batch_size = run.validation_split, run.batch_size
        prep_start = time.perf_counter()
        remote = connect.is_connect(data)
        # allreduce needs no client in the loop: where the executors cannot reach it, the loop
        # runs in a task (sparkdl.spark.task_loop)
        in_task = remote and self.transport == "allreduce" and not connect.reaches_client(data.sparkSession)
        if in_task:
            _check_in_task(callbacks, run, who)
        with_frame = remote and val is not None and val[0] == "frame"
        blocks = self._blocks(data, features_col, label_col, who, val[1] if with_frame else None)
        frame_blocks = None          # a validation DataFrame's blocks, released after the fit
        try:
            train = blocks
            if split:
                train, held = blocks.split(split)
                _check_held_out(train, held, split, who)
                val = ("blocks", held)
            elif with_frame:          # its rows came with the training rows
                val = ("blocks", blocks.validation())
            train.note_batch_size(batch_size)
            reason = "execution='rounds' was asked for" if self.execution == "rounds" else \
                train.site.fallback_reason(len(train.rows), self.transport, who)
            if reason is not None and self.transport == "allreduce":
                raise ValueError(f"{who}: transport='allreduce' needs the fit to run as one barrier job, "
                                 f"and it cannot here: {reason}; use transport='socket' (the driver "
                                 f"averages) or transport='spark'")
            if reason is not None and self.compression is not None and not self.strategy.asynchronous:
                raise ValueError(f"{who}: compression={self.compression!r} in mode {self.mode!r} needs the "
                                 f"fit to run as one barrier job, and it cannot here: {reason}; use "
                                 f"compression=None")
            _check_shard_partitions(self, reason, len(transports.training_rows(train)), who)
            if reason is None and val is not None and val[0] == "frame":
                frame_blocks = dataframe_blocks(val[1], self.model, features_col, label_col,
                                                       len(train.rows), f"{who}(validation_data)")
            val_blocks = val[1] if val is not None and val[0] == "blocks" else frame_blocks
            prep_seconds = time.perf_counter() - prep_start
            if in_task:
                return self._fit_in_task(train, val, val_blocks, prep_seconds, run)
            return self._fit_rounds(train, val, val_blocks, callbacks, prep_seconds, run, reason)
        finally:
            blocks.release()
            if frame_blocks is not None:
                frame_blocks.release()

    def _fit_in_task(self, blocks, val, val_blocks, prep_seconds, run) -> History:
        """An allreduce fit of a Spark Connect session whose executors cannot reach the client:
        its loop runs in the lowest training partition's task (``sparkdl.spark.task_loop``),
        and the model takes the state the job returns."""
        import dataclasses

        from sparkdl.spark import task_loop
        site = blocks.site
        lead = sorted(transports.training_rows(blocks))[0]
        conf = {k: site.conf.get(k) for k in task_loop.CONF_KEYS if site.conf.get(k) is not None}
        task = task_loop.leader_task(self, dataclasses.replace(run, verbose=0), val, blocks, lead, conf,
                                     site.ship_model(self.model), val_blocks is not None)
        tag = f"sparkdl-{uuid.uuid4().hex[:12]}"
        logger.info("SparkModel.fit: the executors cannot reach this client; the allreduce fit runs its loop "
                    "in partition %d's task (Spark job tag %s)", lead, tag)
        history = task_loop.take_result(self, task_loop.run_job(site.session, blocks.frame, task, tag), lead)
        history.settings["execution"] = (f"{job.IN_JOB}, its loop in partition {lead}'s task (the executors "
                                         f"cannot reach the client)")
        history.data_seconds = prep_seconds
        for epoch, logs in enumerate(zip(*history.history.values())):
            logger.info("epoch %d/%d: %s", epoch + 1, run.epochs, " - ".join(
                f"{k}: {v:.4f}" for k, v in zip(history.history, logs)))
        self.history = history
        return history

    def _validation(self, validation_data, features_col, label_col):
        from pyspark.sql import DataFrame
        if isinstance(validation_data, DataFrame):
            frames.plan_columns(validation_data, self.model, features_col, label_col,
                                "SparkModel.fit(validation_data)")
            return ("frame", validation_data, features_col, label_col)
        if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
            xs, y = self.model.check_data(validation_data[0], validation_data[1], "SparkModel.fit(validation_data)")
            return ("arrays", xs, y)
        raise TypeError("SparkModel.fit: expected validation_data as a DataFrame or (x_val, y_val)")

    def _evaluate_validation(self, val, transport) -> dict:
        if val[0] == "arrays":
            return self.model.evaluate_arrays(val[1], val[2], batch_size=256)
        held = transport.evaluate_validation()
        if held is not None:
            return held
        if val[0] == "blocks":      # rows held out by validation_split, on the job-per-round path
            return inference.evaluate_blocks(val[1].rdd, self.model, 256, "SparkModel.fit(validation_split)")
        return inference.evaluate_frame(val[1], self.model, val[2], val[3], 256)

    def _start_history(self, history, blocks, run, reason) -> None:
        self.history = history
        history.rounds = []
        execution = job.IN_JOB if reason is None else \
            ("one job per epoch" if self.strategy.asynchronous else "one job per round") + f" ({reason})"
        history.settings = {"mode": self.mode, "staleness": getattr(self.strategy, "staleness", None),
                            "options": self.strategy.options(),
                            "frequency": self.frequency, "aggregate": self.aggregate,
                            "partitions": len(blocks.rows), "seed": self.seed,
                            "transport": "parameter server" if self.strategy.asynchronous
                            else self.transport, "batch_size": run.batch_size, "epochs": run.epochs,
                            "execution": execution, "validation_split": run.validation_split,
                            "compression": self.compression, "overlap": self.overlap,
                            "num_servers": self.num_servers}
        if reason is not None:
            chosen = self.transport == "spark" or self.execution == "rounds"
            (logger.info if chosen else logger.warning)("SparkModel.fit runs %s", execution)
        history.rows_per_partition = list(blocks.rows)
        history.short_partitions = list(blocks.short_partitions)
        history.empty_partitions = list(blocks.empty_partitions)
        history.resumed_from = None
        if blocks.short_partitions or blocks.empty_partitions:
            logger.warning("SparkModel.fit: %d partition(s) hold fewer rows than batch_size=%d "
                           "and train on what they have: %s; empty partitions: %s",
                           len(blocks.short_partitions), run.batch_size, blocks.short_partitions,
                           blocks.empty_partitions)

    def _open_transport(self, blocks, model_bc, val_blocks, reason, run, worker_states=None):
        assert self.history is not None, "_start_history ran first"
        group = self.history.settings["job_group"] = f"sparkdl-{uuid.uuid4().hex[:12]}"
        if reason is not None:
            return transports.RoundJobs(self, blocks, model_bc, group, worker_states)
        description = f"sparkdl fit: {self.mode}, {run.epochs} epochs"
        if self.transport == "allreduce":
            return RingInJob(self, blocks, model_bc, val_blocks, group, description + ", allreduce")
        if self.num_servers:
            sharded = ShardedInJob if self.strategy.asynchronous else ShardedRoundsInJob
            return sharded(self, blocks, model_bc, val_blocks, group,
                           description + f", {self.num_servers} parameter server shards")
        return transports.InJob(self, blocks, model_bc, val_blocks, group, description, worker_states)

    def _fit_rounds(self, blocks, val, val_blocks, callbacks, prep_seconds, run, reason):
        model = self.model
        per_epoch = self._rounds_per_epoch(blocks, run.batch_size)
        loop = FitLoop(model, callbacks, run.epochs, per_epoch, run.batch_size, run.verbose, unit="round",
                       log=logger.info, feed=run.feed, rounds=run.epochs * per_epoch)
        self._start_history(loop.history, blocks, run, reason)
        loop.history.data_seconds = prep_seconds
        loop.history.validation_rows_per_partition = list(val[1].rows) if val and val[0] == "blocks" else None
        # What a checkpoint must match to be resumed: the same rounds over the same partitions.
        settings = {k: loop.history.settings[k]
                    for k in ("mode", "staleness", "options", "aggregate", "seed", "batch_size")}
        settings.update(frequency=str(self.frequency), rows_per_partition=list(blocks.rows))
        fit = _FitState(run, per_epoch, settings, loop.callbacks)
        # A sharded fit's tasks pull the rows they read: they receive the model without its tables.
        model_bc = blocks.site.ship_model(shard_task.skeleton(model) if self.num_servers else model)

        def begin():
            worker_states = None
            if run.store is not None and run.resume:
                fit.round, fit.partial, worker_states = self._resume(run.store, settings, per_epoch)
            fit.transport = self._open_transport(blocks, model_bc, val_blocks, reason, run, worker_states)
            if run.feed is not None:
                chosen = loop.history.settings
                run.feed.begin(who="SparkModel.fit", model=model.name, unit="round", epochs=run.epochs,
                               points_total=run.epochs * per_epoch - fit.round, points_per_epoch=per_epoch,
                               first_round=fit.round + 1, **{k: chosen[k] for k in (
                                   "mode", "execution", "partitions", "batch_size", "frequency", "aggregate")})
            return fit.round // per_epoch

        def after_epoch(epoch, logs):
            if run.store is not None and (fit.round % run.every == 0 or epoch + 1 == run.epochs
                                          or model.stop_training):
                self._checkpoint(run.store, fit.round, settings, epoch + 1, transport=fit.transport)

        failed = True
        try:
            loop.run(begin, lambda epoch, bar: self._epoch(fit, epoch, bar, val), after_epoch)
            failed = False
        finally:
            if fit.transport is not None:
                fit.transport.close(failed)
            model_bc.destroy()
        return self.history

    def _rounds_per_epoch(self, blocks, batch_size) -> int:
        if self.frequency == "epoch" or self.strategy.asynchronous:
            return 1
        tau = 1 if self.frequency == "batch" else self.frequency
        steps_per_epoch = -(-blocks.max_rows // batch_size)
        return -(-steps_per_epoch // tau)

    def _epoch(self, fit, epoch, bar, val) -> dict:
        """One epoch's rounds (and checkpoints inside it) and validation; returns its logs."""
        assert self.history is not None, "_start_history ran first"
        run, per_epoch = fit.run, fit.per_epoch
        partial, fit.partial = fit.partial, None
        sums = EpochSums(self.model.metrics, *partial) if partial else EpochSums(self.model.metrics)
        # allreduce: the driver's model follows the tasks' at each epoch's end and checkpoint,
        # and after every round when a callback looks at the model between rounds
        every_round = watches_rounds(fit.callbacks.callbacks)
        for r in range(fit.round % per_epoch if partial else 0, per_epoch):
            what = f"{self.mode} epoch {epoch + 1}/{run.epochs}" if self.strategy.asynchronous \
                else f"round {fit.round + 1}/{run.epochs * per_epoch}"
            need_weights = every_round or r + 1 == per_epoch or (
                run.store is not None and (fit.round + 1) % run.every == 0)
            fit.callbacks.on_batch_begin(r)
            info = self._run_round(fit.transport, fit.round, run.batch_size, what, need_weights)
            loss_sum = info.pop("loss_sum")
            sums.add(loss_sum, info["samples"], info.pop("metric_states"))
            fit.callbacks.on_batch_end(r, {"loss": loss_sum / max(info["samples"], 1)})
            self.history.rounds.append(info)
            if run.feed is not None:
                run.feed.point(epoch=epoch + 1, loss=loss_sum / max(info["samples"], 1), **info)
            fit.round += 1
            bar.update(r + 1, {"loss": sums.mean_loss})
            if run.store is not None and r + 1 < per_epoch and fit.round % run.every == 0:
                self._checkpoint(run.store, fit.round, fit.settings, epoch, sums, fit.transport)
        logs = sums.logs()
        if val is not None:
            logs.update({f"val_{k}": v for k, v in self._evaluate_validation(val, fit.transport).items()})
        return logs

    def _run_round(self, transport, round_index, batch_size, what, need_weights: bool = True) -> dict:
        model = self.model
        start = time.perf_counter()
        opt = model.optimizer
        assert opt is not None, "SparkModel takes a compiled model"
        strategy = self.strategy
        spec = worker.RoundSpec(round=round_index, seed=self.seed, batch_size=batch_size,
                                frequency=self.frequency, aggregate=self.aggregate,
                                optimizer=opt.get_config(), mode=self.mode, compression=self.compression,
                                overlap=self.overlap,
                                alpha=strategy.alpha(opt.learning_rate, transport.workers)
                                if isinstance(strategy, EASGDStrategy) else 0.0)
        opt.build(model.flat_weights.size)
        if strategy.asynchronous:
            result, counts = transport.async_epoch(spec, what)
            info = self._round_info(round_index, start, result, counts["bytes_pushed"] + counts["bytes_pulled"])
            staleness = counts.pop("staleness")
            info.update(counts)
            if strategy.name == "ssp":
                info["staleness"] = staleness
            return info
        if getattr(transport, "applies_rounds", False):    # allreduce, shards: the tasks applied the mean
            result, moved = transport.sync_round(spec, what, need_weights)
            info = self._round_info(round_index, start, result, moved)
            if getattr(transport, "ring_bytes", None) is not None:
                info["ring_bytes"] = transport.ring_bytes
            return info
        moved = 2 * transport.workers * self._vector_bytes()     # a pull and a push per worker
        if strategy.elastic:
            result, center = transport.elastic_round(spec, what)
            worker.set_model_vector(model, center)
            opt.iterations += result.steps
            return self._round_info(round_index, start, result, moved)
        result, vector = transport.sync_round(spec, what)
        moved = getattr(transport, "bytes_moved", moved)        # measured where the exchange counts
        if self.aggregate == "gradients":
            self._driver_step(vector, round_index)
        else:
            model.set_flat_weights(vector)
            for k, v in result.slots.items():
                opt.slots[k][...] = v
            opt.iterations += result.steps
        if result.state is not None:
            model.flat_state[...] = result.state
        return self._round_info(round_index, start, result, moved)

    def _driver_step(self, mean_gradient, round_index) -> None:
        """The driver's optimizer steps on the round's mean gradient; a step that makes the
        weights non-finite is undone."""
        model, opt = self.model, self.model.optimizer
        assert opt is not None, "SparkModel takes a compiled model"
        before = (model.get_flat_weights(), {k: v.copy() for k, v in opt.slots.items()}, opt.iterations)
        opt.apply(model.flat_weights, mean_gradient)
        what = worker.non_finite(0.0, {"weights": model.flat_weights})
        if what is not None:
            model.set_flat_weights(before[0])
            for k, v in before[1].items():
                opt.slots[k][...] = v
            opt.iterations = before[2]
            raise SparkTrainingDivergedError(
                f"SparkModel.fit: in round {round_index + 1}, {what} after the driver's optimizer "
                f"step on the mean gradient (finite in every partition); the model keeps the "
                f"weights it had before that round")

    # ---- checkpoints ----------------------------------------------------------------------------
    def _resume(self, store, settings, rounds_per_epoch):
        """Restore the newest readable checkpoint into the model and the history. Returns
        ``(rounds done, (loss sum, samples, metric states) of the unfinished epoch or None)``."""
        assert self.history is not None, "_start_history ran first"
        restored = store.restore_latest(self.model, check=functools.partial(
            _check_resumable, settings=settings, store=store))
        if restored is None:
            return 0, None, None
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
        workers = {int(p): (state, restored.arrays[f"worker_{p}"])
                   for p, state in meta.get("worker_states", {}).items()}
        return done, partial, workers

    def _checkpoint(self, store, round_index, settings, epoch, sums=None, transport=None):
        """Save the state after ``round_index`` rounds; ``sums`` (the ``EpochSums`` so far) when
        the checkpoint falls inside ``epoch``, None at an epoch's end."""
        assert self.history is not None, "_start_history ran first"
        loss_sum, samples, metric_objs = (sums.loss_sum, sums.samples, sums.metrics) if sums else (0.0, 0, [])
        # Async modes and EASGD: each partition's worker state, so a resumed fit continues it.
        workers = transport.worker_states() if transport is not None else {}
        meta = json_plain({"round": round_index, "epoch": epoch, "settings": settings,
                       "loss_sum": loss_sum, "samples": samples, "history": self.history.history,
                       "epochs_done": self.history.epoch, "rounds": self.history.rounds,
                       "worker_states": {str(p): state for p, (state, _) in workers.items()}})
        arrays = {f"metric_{i}": m.state for i, m in enumerate(metric_objs)}
        arrays.update({f"worker_{p}": vector for p, (_, vector) in workers.items()})
        store.save(self.model, round_index, meta, arrays)

    def _vector_bytes(self) -> int:
        """Bytes of one pull or push of the model as they travel: weights, moving statistics
        and, when weights are averaged, the optimizer's slots; encoded when compressed."""
        model, opt = self.model, self.model.optimizer
        slots = sum(v.size for v in opt.slots.values()) if opt is not None and self.aggregate == "weights" else 0
        values = int(model.flat_weights.size + model.flat_state.size + slots)
        codec = get_codec(self.compression)
        return 4 * values if codec is None else codec.nbytes(values)

    @staticmethod
    def _round_info(round_index, start, result, moved: int) -> dict:
        seconds = time.perf_counter() - start
        return {"round": round_index + 1, "samples": result.samples, "steps": result.steps,
                "bytes": int(moved),
                "loss_sum": result.loss_sum, "metric_states": result.metric_states,
                "seconds": seconds, "compute_seconds": result.compute_seconds,
                "overhead_seconds": max(seconds - result.compute_seconds, 0.0),
                "samples_per_second": result.samples / seconds if seconds > 0 else float("nan"),
                "partitions": result.partitions}

    # ---- inference ---------------------------------------------------------------------------
    @overload
    def predict(self, data: DataFrame, features_col: str | Sequence[str] = ..., prediction_col: str = ...,
                probability_col: str | None = ..., batch_size: int = ..., verbose: int = ...) -> DataFrame: ...

    @overload
    def predict(self, data: RDD[Any] | npt.ArrayLike, features_col: str | Sequence[str] = ...,
                prediction_col: str = ..., probability_col: str | None = ..., batch_size: int = ...,
                verbose: int = ...) -> npt.NDArray[np.float32]: ...

    def predict(self, data: DataFrame | RDD[Any] | npt.ArrayLike, features_col: str | Sequence[str] = "features",
                prediction_col: str = "prediction", probability_col: str | None = "probability",
                batch_size: int = 256, verbose: int = 0) -> DataFrame | npt.NDArray[np.float32]:
        """NumPy in, NumPy out (locally); a DataFrame in, the DataFrame plus predictions out
        (computed on the executors); an RDD of feature rows (one example's array or list of
        numbers each, as Elephas takes) in, the outputs in the RDD's order as one NumPy array
        out (computed on the executors, the model broadcast once). ``verbose`` is accepted for
        Keras' signature; prediction shows no progress."""
        from pyspark import RDD
        from pyspark.sql import DataFrame
        batch_size = checks.integer(batch_size, "batch_size", "SparkModel.predict", at_least=1)
        if isinstance(data, DataFrame):
            return inference.predict_frame(data, self.model, features_col, prediction_col,
                                        probability_col, batch_size)
        if isinstance(data, RDD):
            return inference.predict_rdd(data, self.model, batch_size)
        return self.model.predict(data, batch_size=batch_size)

    @overload
    def evaluate(self, data: DataFrame | npt.ArrayLike, y: npt.ArrayLike | None = ..., batch_size: int = ...,
                 verbose: int = ..., *, features_col: str | Sequence[str] = ...,
                 label_col: str | Sequence[str] = ..., return_dict: None = ...) -> Scores: ...

    @overload
    def evaluate(self, data: DataFrame | npt.ArrayLike, y: npt.ArrayLike | None = ..., batch_size: int = ...,
                 verbose: int = ..., *, features_col: str | Sequence[str] = ...,
                 label_col: str | Sequence[str] = ..., return_dict: Literal[True]) -> dict[str, float]: ...

    @overload
    def evaluate(self, data: DataFrame | npt.ArrayLike, y: npt.ArrayLike | None = ..., batch_size: int = ...,
                 verbose: int = ..., *, features_col: str | Sequence[str] = ...,
                 label_col: str | Sequence[str] = ..., return_dict: Literal[False]) -> list[float] | float: ...

    def evaluate(self, data: DataFrame | npt.ArrayLike, y: npt.ArrayLike | None = None, batch_size: int = 256,
                 verbose: int = 0, *, features_col: str | Sequence[str] = "features",
                 label_col: str | Sequence[str] = "label", return_dict: bool | None = None
                 ) -> Scores | dict[str, float] | list[float] | float:
        """Loss and compiled metrics: of a DataFrame (``features_col``, ``label_col``) computed
        on the executors and combined on the driver, or of NumPy arrays ``(x, y)`` computed on
        the driver by the engine. Returns what the engine's ``evaluate`` returns: a ``Scores``
        dict (``{"loss": ..., "accuracy": ...}``) that also reads by position as Keras' list
        (``[0]`` the loss, ``[1]`` the first compiled metric); ``return_dict=True`` a plain
        dict, ``False`` Keras' list (the loss alone without metrics). ``verbose`` is accepted
        for Keras' and Elephas' signature; evaluation shows no progress."""
        from pyspark.sql import DataFrame
        who = "SparkModel.evaluate"
        batch_size = checks.integer(batch_size, "batch_size", who, at_least=1)
        return_dict = scores_mod.check_return_dict(return_dict, who)
        if isinstance(data, DataFrame):
            if y is not None:
                raise TypeError(f"{who}: a DataFrame carries its labels in label_col={label_col!r}; "
                                f"expected y=None, received {type(y).__name__}: {y!r}"[:400])
            scores = inference.evaluate_frame(data, self.model, features_col, label_col, batch_size)
            return scores_mod.returned(scores, return_dict)
        if y is None:
            raise ValueError(f"{who}: expected a DataFrame, or NumPy features x with their targets y; "
                             f"received {type(data).__name__} and y=None")
        scores = self.model.evaluate(data, y, batch_size=batch_size, return_dict=True)
        return scores_mod.returned(scores, return_dict)


def _conf_of(data):
    """The Spark settings of ``fit``'s data (``get(key, default)``: a SparkConf, or a Spark
    Connect session's ``connect.SessionConf``), or None for anything else (``_blocks`` then
    says what it expects)."""
    from pyspark import RDD
    from pyspark.sql import DataFrame
    if connect.is_connect(data):
        return connect.SessionConf(data.sparkSession)
    if isinstance(data, DataFrame):
        return data.sparkSession.sparkContext.getConf()
    return data.context.getConf() if isinstance(data, RDD) else None


def _check_in_task(callbacks, run, who: str) -> None:
    """An allreduce fit whose loop runs in a task has no client to call back."""
    asked = [name for name, value in (("callbacks", callbacks), ("checkpoint_dir", run.store),
                                      ("dashboard", run.feed)) if value]
    if asked:
        raise ValueError(f"{who}: the executors cannot reach this client, so the allreduce fit runs its loop in "
                         f"one of its tasks, where {', '.join(asked)} cannot run (they need the client); "
                         f"set spark.sparkdl.client.host to an address of this machine the executors reach, "
                         f"or fit without {' and '.join(asked)}")


def _check_keywords(mode, mode_options: dict) -> None:
    """An unknown keyword of ``SparkModel(...)`` is a TypeError naming it and the keywords that
    exist; the mode's options (``staleness``, ``rho``, ...) pass."""
    takes = option_names(mode)          # an unknown mode is a ValueError listing the modes
    unknown = sorted(set(mode_options) - set(takes))
    if unknown:
        own = [name for name, p in inspect.signature(SparkModel.__init__).parameters.items()
               if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]
        key = getattr(mode, "name", mode)         # a Strategy object, or the name given
        raise TypeError(f"SparkModel: unexpected keyword argument{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}; SparkModel takes {', '.join(own)}, and mode "
                        f"{key!r} takes {', '.join(takes) if takes else 'no options'}")


def _check_allreduce(spark_model: SparkModel) -> None:
    """``transport="allreduce"`` runs sync rounds (weights or gradients) inside the fit's
    barrier job; anything else is a ValueError naming the alternative."""
    if spark_model.transport != "allreduce":
        return
    who = "SparkModel"
    if spark_model.strategy.asynchronous or spark_model.strategy.elastic:
        raise ValueError(f"{who}: transport='allreduce' averages synchronous rounds (mode='sync'); "
                         f"received mode={spark_model.mode!r}, which exchanges with the driver's model: "
                         f"use transport='socket' (the default) for it")
    if spark_model.execution != "auto":
        raise ValueError(f"{who}: transport='allreduce' runs inside the fit's one barrier job; received "
                         f"execution={spark_model.execution!r}: use execution='auto', or "
                         f"transport='socket' or 'spark' for one job per round")


def _check_compression(spark_model: SparkModel) -> None:
    """Compressed vectors need a worker that keeps its error-feedback residual from one push
    to the next: a parameter server's worker, or a task of the fit's one barrier job."""
    compression = spark_model.compression
    if compression is None or spark_model.strategy.asynchronous:
        return
    who = "SparkModel"
    if spark_model.strategy.elastic:
        raise ValueError(f"{who}: compression={compression!r} does not apply to synchronous EASGD, whose "
                         f"workers report their whole state each round; use mode='easgd' with "
                         f"variant='async' (its pushes and pulls are compressed) or compression=None")
    if spark_model.transport == "spark" or spark_model.execution != "auto":
        raise ValueError(f"{who}: compression={compression!r} in mode {spark_model.mode!r} needs the fit's "
                         f"tasks to live as long as the fit (each keeps what rounding has not delivered "
                         f"yet); received transport={spark_model.transport!r}, execution="
                         f"{spark_model.execution!r}: use transport='socket' or 'allreduce' with "
                         f"execution='auto'")


def _check_shards(spark_model: SparkModel) -> None:
    """``num_servers >= 1`` shards the parameter server of the async modes, or the model of
    sync gradient rounds, inside the fit's barrier job, with row-sparse traffic for the
    model's embedding tables; anything else is a ValueError naming what takes it."""
    check_shards(spark_model.num_servers, spark_model.mode, spark_model.model, spark_model.num_workers,
                 aggregate=spark_model.aggregate, overlap=spark_model.overlap, transport=spark_model.transport,
                 execution=spark_model.execution, compression=spark_model.compression)


def check_shards(num_servers: int, mode: str, model: Model | None, num_workers: int | None = None, *,
                 aggregate: str = "weights", overlap: bool = False, transport: str = "socket",
                 execution: str = "auto", compression: str | None = None, who: str = "SparkModel",
                 servers: str = "num_servers", workers: str = "num_workers") -> None:
    """The rules of ``num_servers`` (``SparkModel``'s docstring) on these settings: ``mode``
    under its canonical name, ``model`` None to leave out the Embedding-table rule and
    ``num_workers`` None the count rule. ``who`` starts the ValueError; ``servers`` and
    ``workers`` are the names the caller gives ``num_servers`` and ``num_workers`` (the
    pyspark.ml stages' ``numServers`` and ``numWorkers``)."""
    k = num_servers
    if not k:
        return
    takes = (f"{servers}={k} shards the parameter server of modes {', '.join(shards.MODES)}, and the "
             f"rounds of mode 'sync' with aggregate='gradients'")
    rounds = mode == "sync"
    if mode not in shards.MODES and not rounds:
        raise ValueError(f"{who}: {takes}; received mode={mode!r}: use one of those, or {servers}=0")
    if rounds and aggregate != "gradients":
        raise ValueError(f"{who}: {takes}; received mode={mode!r} with aggregate={aggregate!r}: use "
                         f"aggregate='gradients', or {servers}=0")
    if rounds and overlap:
        raise ValueError(f"{who}: {servers}={k} in mode {mode!r} pushes each round's row-sparse gradient sum "
                         f"once the round is computed; received overlap=True: use overlap=False, or "
                         f"{servers}=0")
    if transport != "socket" or execution != "auto":
        raise ValueError(f"{who}: {servers}={k} runs the shards inside the fit's one barrier job; received "
                         f"transport={transport!r}, execution={execution!r}: use "
                         f"transport='socket' and execution='auto', or {servers}=0")
    if compression is not None:
        raise ValueError(f"{who}: {servers}={k} sends row-sparse float32 pushes and pulls; received "
                         f"compression={compression!r}: use compression=None, or {servers}=0")
    if num_workers is not None and k > num_workers:
        raise ValueError(f"{who}: expected {servers} <= {workers}={num_workers} (each shard "
                         f"lives in a training task), received {servers}={k}")
    if model is not None and not ParamMap.from_model(model).tables:
        raise ValueError(f"{who}: {servers}={k} shards the rows of a model's Embedding tables; the model "
                         f"has none: use {servers}=0")


def _check_shard_partitions(spark_model: SparkModel, reason: str | None, training: int, who: str) -> None:
    """Each shard lives in a training task of the fit's one barrier job."""
    k = spark_model.num_servers
    if not k:
        return
    if reason is not None:
        raise ValueError(f"{who}: num_servers={k} needs the fit to run as one barrier job, and it cannot "
                         f"here: {reason}; use num_servers=0")
    if k > training:
        raise ValueError(f"{who}: expected num_servers <= {training}, the partitions that train (each shard "
                         f"lives in one's task), received num_servers={k}")


def _dashboard_address(data) -> dict[str, Any]:
    """Where a fit's dashboard listens: the driver's host (``spark.driver.bindAddress``,
    advertised as ``spark.driver.host``), or in a Spark Connect session the client's
    (``connect.client_address``), and ``spark.sparkdl.dashboard.port`` (0: ephemeral)."""
    conf = _conf_of(data)
    if conf is None:
        return {}
    if connect.is_connect(data):            # the fit runs in this client: its page is served here
        host, bind = connect.client_address(data.sparkSession)
        return {"host": bind, "port": _dashboard_port(conf), "advertise": host}
    host = conf.get("spark.driver.host", "127.0.0.1")
    return {"host": conf.get("spark.driver.bindAddress", host), "port": _dashboard_port(conf), "advertise": host}


def _dashboard_port(conf) -> int:
    """``spark.sparkdl.dashboard.port`` (0: ephemeral)."""
    raw = conf.get("spark.sparkdl.dashboard.port", "0")
    try:
        port = int(raw)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError(f"expected spark.sparkdl.dashboard.port to be an int in [0, 65535], "
                         f"received {raw!r}") from None
    return port


def _check_validation_split(split, validation_data, who) -> float:
    """``validation_split`` as a float in [0, 1), refused together with ``validation_data``."""
    if not checks.is_number(split):
        raise checks.invalid(who, "validation_split as a number, 0 <= validation_split < 1",
                             "validation_split", split, TypeError)
    split = checks.fraction(split, "validation_split", who)
    if split and validation_data is not None:
        raise ValueError(f"{who}: expected validation_data or validation_split, not both; received "
                         f"validation_split={split!r} and validation_data")
    return split


def _check_held_out(train, held, split, who) -> None:
    """Both sides of a ``validation_split`` hold rows."""
    if sum(train.rows) == 0:
        raise ValueError(f"{who}: validation_split={split!r} leaves no rows to train on (partitions "
                         f"of {[t + h for t, h in zip(train.rows, held.rows)]} rows); expected a "
                         f"smaller validation_split")
    if sum(held.rows) == 0:
        raise ValueError(f"{who}: validation_split={split!r} holds out no row of partitions of "
                         f"{train.rows} rows; expected a larger validation_split, or 0")


def _checkpoint_store(directory, every, resume, keep, who):
    """The fit's CheckpointStore (None without ``directory``), options checked first."""
    checks.integer(every, "checkpoint_every", who, at_least=1)
    if not isinstance(resume, bool):
        raise TypeError(f"{who}: expected resume as a bool, received {type(resume).__name__}: {resume!r}")
    if directory is None:
        if resume:
            raise ValueError(f"{who}: resume=True needs checkpoint_dir (the directory to resume from)")
        return None
    from sparkdl.distributed.checkpoint import CheckpointStore
    keep = checks.integer(keep, "checkpoint_keep", who, at_least=1)
    if not isinstance(directory, (str, bytes)) and not hasattr(directory, "__fspath__"):
        raise TypeError(f"{who}: expected checkpoint_dir as a path, received "
                        f"{type(directory).__name__}: {directory!r}")
    return CheckpointStore(directory, keep=keep)


def _check_resumable(meta: dict, settings: dict, store) -> None:
    """A checkpoint resumes this fit only if it trained the same rounds on the same partitions."""
    saved = meta.get("settings", {})
    different = [f"{k}: checkpoint {saved.get(k)!r}, this fit {v!r}" for k, v in settings.items()
                 if saved.get(k) != v]
    if different:
        raise ValueError(f"SparkModel.fit: the checkpoints in {store.directory!r} come from another "
                         f"run and cannot be resumed here ({'; '.join(different)}); use another "
                         f"checkpoint_dir or resume=False")


@dataclass
class _FitState:
    """Where a fit is: rounds done, the resumed epoch's partial sums, the transport."""
    run: "_FitRun"
    per_epoch: int
    settings: dict
    callbacks: CallbackList
    round: int = 0
    partial: tuple | None = None
    transport: transports.InJob | transports.RoundJobs | None = None   # RingInJob is an InJob


def watches_rounds(callbacks) -> bool:
    """Whether a callback has its own ``on_batch_begin`` or ``on_batch_end`` (called around
    each round of ``SparkModel.fit``), so may look at the model between rounds."""
    return any(type(cb).on_batch_begin is not Callback.on_batch_begin
               or type(cb).on_batch_end is not Callback.on_batch_end for cb in callbacks)


@dataclass(frozen=True)
class _FitRun:
    """What one call of ``fit`` asked for."""
    epochs: int
    batch_size: int
    verbose: int
    store: CheckpointStore | None
    every: int
    resume: bool
    validation_split: float = 0.0
    feed: Feed | None = None          # the live dashboard's, or None
