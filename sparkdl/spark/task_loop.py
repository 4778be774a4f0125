"""``transport="allreduce"`` when the executors cannot reach the client of a Spark Connect
session: the fit's loop runs inside one of its tasks.

The tasks of an allreduce fit average among themselves; the client only sends orders and
receives each round's report and, at an epoch's end, the state. Where the executors cannot
open a connection to the client (a laptop behind NAT talking to a remote Connect server), the
whole loop moves into the task of the lowest training partition, the leader: it runs
``SparkModel``'s own epochs and rounds (``_fit_rounds``, the same orders, so the same
numbers as a fit driven from the client), with the coordinator served from its executor and
its own worker in a thread; every task learns the leader's endpoint through the barrier's
``allGather``. When the loop ends the leader returns the model's state, the optimizer's and
the History as the job's output rows (chunks of ``CHUNK_BYTES``), which the client reads back
into its model. Nothing runs on the client meanwhile: callbacks, checkpoints and the dashboard
need it live and are refused; a failure in the loop comes back as the same exception.
"""
from __future__ import annotations

import base64
import logging
import pickle
import threading
from typing import Any

from sparkdl.spark import connect, executor
from sparkdl.spark.job import FitJob, raise_job_error

logger = logging.getLogger(__name__)

#: Most bytes of the leader's result in one output row (the server's driver holds each row)
CHUNK_BYTES = 4 * 1024 * 1024
#: The settings of the client's session the leader's server follows (its data plane's)
CONF_KEYS = ("spark.sparkdl.dataPlane.integrity", "spark.sparkdl.dataPlane.encryption", "spark.network.crypto.enabled",
             "spark.ssl.enabled", "spark.sparkdl.server.maxConnections", "spark.sparkdl.server.handshakeTimeout",
             "spark.sparkdl.server.memory")
RESULT_SCHEMA = "part long, seq long, chunk binary"


class TaskSite:
    """Where the leader's loop runs its fit (``job.ClassicSite``'s counterpart): the client's
    data-plane settings, the leader's executor host, and as the fit's "job" its own worker in
    a thread, once every task knows the endpoint."""


    def __init__(self, conf: dict, host: str, context, partition: int, items: list, timeout: float):
        self.conf = conf
        self.host = host
        self.context, self.partition, self.items, self.timeout = context, partition, items, timeout

    def data_plane_address(self) -> tuple[str, str]:
        return self.host, self.host

    def ship_model(self, model, who: str = "SparkModel.fit"):
        return connect.ShippedModel(model, who)

    def fallback_reason(self, partitions: int, transport: str, who: str) -> None:
        return None

    def start_job(self, blocks, val_blocks, task, group: str, description: str, end=None) -> WorkerThread:
        """Tell every task the endpoint (``allGather``), then run this task's own worker."""
        assert end is not None, "an allreduce fit's transport passes its endpoint"
        executor.all_gather(self.context, base64.b64encode(pickle.dumps(end)).decode(), self.timeout,
                            self.partition, what="the fit's endpoint", who="SparkModel.fit")
        return WorkerThread(task, self.partition, self.items)


class TaskBlocks(connect.FrameBlocks):
    """The leader's view of the converted frame's rows (no frame: the tasks hold the blocks)."""

    def __init__(self, rows: list[int], tail: list[int], site: TaskSite):
        super().__init__(None, None, rows, tail)
        self._site = site
        self.kept = True

    @property
    def site(self):
        return self._site


class WorkerThread(FitJob):
    """The leader's own worker (``executor.persistent_task``) in a thread, standing for the
    fit's job in the leader's loop."""

    def __init__(self, task, partition: int, items: list):
        self.group = "sparkdl-leader"
        self.error: BaseException | None = None
        self.executors = None
        self._thread = threading.Thread(target=self._work, args=(task, partition, items), daemon=True,
                                        name="sparkdl-leader-worker")
        self._thread.start()

    def _work(self, task, partition: int, items: list) -> None:
        try:
            for _ in task(partition, iter(items)):
                pass
        except BaseException as error:  # noqa: BLE001 - handed to the loop by check()
            self.error = error

    def short_of_slots(self, tasks: int) -> str | None:
        return None

    def cancel(self) -> None:
        """Nothing to cancel: the worker stops with the coordinator's stop."""


def leader_task(spark_model, run, val, blocks, lead: int, conf: dict, model_bc, with_validation: bool):
    """The barrier ``mapInArrow`` function of an allreduce fit whose loop runs in partition
    ``lead``'s task (see the module docstring): ``spark_model`` and ``run`` are the client's
    (``run`` without callbacks, checkpoints or dashboard), ``val`` its validation (None, the
    rows after each partition's, or arrays), ``blocks`` the converted frame's rows."""
    import pyarrow as pa

    rows, tail = list(blocks.rows), list(blocks.tail)
    # The held-out rows' counts, not the client's view of them (which holds its session)
    held = ("blocks", (list(val[1].rows), list(val[1].tail))) if val is not None and val[0] == "blocks" else val
    schema = pa.schema([("part", pa.int64()), ("seq", pa.int64()), ("chunk", pa.binary())])

    def task(batches):
        from pyspark import BarrierTaskContext
        context = BarrierTaskContext.get()
        partition = context.partitionId()
        items = connect.task_items(batches, partition, tail, with_validation)
        if partition != lead:
            told = executor.all_gather(context, "", spark_model.timeout, partition, what="the fit's endpoint",
                                       who="SparkModel.fit")
            end = pickle.loads(base64.b64decode(told[lead]))
            for _ in executor.persistent_task(model_bc, end, with_validation)(partition, iter(items)):
                pass
            yield pa.RecordBatch.from_pydict({"part": [partition], "seq": [0], "chunk": [b""]}, schema=schema)
            return
        host = context.getTaskInfos()[partition].address.rsplit(":", 1)[0]
        site = TaskSite(conf, host, context, partition, items, spark_model.timeout)
        data = pickle.dumps(_lead(spark_model, run, held, TaskBlocks(rows, tail, site), site))
        chunks = [data[a:a + CHUNK_BYTES] for a in range(0, len(data), CHUNK_BYTES)]
        yield pa.RecordBatch.from_pydict({"part": [partition] * len(chunks), "seq": list(range(len(chunks))),
                                          "chunk": chunks}, schema=schema)
    return task


def _lead(spark_model, run, val, blocks: TaskBlocks, site: TaskSite) -> dict[str, Any]:
    """The fit's loop in the leader: the client's ``_fit_rounds`` over the tasks' blocks.
    Returns the model's state and the History, or the error that ended the loop."""
    val_blocks = None
    if val is not None and val[0] == "blocks":
        rows, tail = val[1]
        val_blocks = TaskBlocks(rows, tail, site)
        val = ("blocks", val_blocks)
    try:
        history = spark_model._fit_rounds(blocks, val, val_blocks, None, 0.0, run, None)
    except BaseException as error:  # noqa: BLE001 - the client raises it
        try:
            pickle.dumps(error)
        except Exception:  # noqa: BLE001 - an exception that does not pickle goes as its text
            error = RuntimeError(f"{type(error).__name__}: {error}")
        return {"error": error}
    model = spark_model.model
    history.model = None
    return {"weights": model.get_flat_weights(), "state": model.flat_state.copy(),
            "slots": {k: v.copy() for k, v in model.optimizer.slots.items()},
            "iterations": int(model.optimizer.iterations), "history": history}


def run_job(session, frame, task, tag: str):
    """The leader's fit as one barrier job under ``tag``; its output rows."""
    session.addTag(tag)
    try:
        return frame.mapInArrow(task, RESULT_SCHEMA, barrier=True).repartition(1).collect()
    except Exception as error:
        raise_job_error(error)
    finally:
        session.removeTag(tag)


def take_result(spark_model, rows, lead: int):
    """The client's model takes the leader's result (``rows``: the job's output); returns its
    History, or raises the error that ended the loop."""
    data = b"".join(r.chunk for r in sorted((r for r in rows if r.part == lead), key=lambda r: r.seq))
    result = pickle.loads(data)
    if "error" in result:
        raise result["error"]
    model = spark_model.model
    model.set_flat_weights(result["weights"])
    model.flat_state[...] = result["state"]
    opt = model.optimizer
    opt.build(model.flat_weights.size)
    for k, v in result["slots"].items():
        opt.slots[k][...] = v
    opt.iterations = result["iterations"]
    return result["history"]
