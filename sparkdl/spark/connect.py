"""Spark Connect sessions: fits, predictions and evaluations from a thin client.

A Spark Connect session (``SparkSession.builder.remote("sc://...")``) has no SparkContext and
no RDDs: no broadcast, no job groups, no ``mapPartitions``. sparkdl does the same work there
through DataFrames:

- the training data is converted once into one block per partition by a ``mapInArrow`` whose
  rows carry the blocks' bytes, in chunks, and which stays cached (``frame_blocks``,
  ``FrameBlocks``); validation rows ride in the same partitions after the training rows, as
  no other job could run beside the fit's, which holds every task slot;
- the fit is one barrier ``mapInArrow`` over those rows (``ConnectFitJob``), a shuffle-map
  stage that Spark retries whole, tagged so that the fit can interrupt it;
- the model travels inside the job's request (``ShippedModel``), once per job;
- the fit's coordinator, parameter server or round exchange listens in the client's process,
  on ``spark.sparkdl.client.host`` or the client's address on the route to the Connect
  server; a one-task job first checks that the executors reach it (``check_reachable``).

Sessions are told apart by their class's module (``is_connect``): importing
``pyspark.sql.connect`` needs the client's gRPC packages, which a classic install lacks.
"""
from __future__ import annotations

import logging
import re
import socket
import uuid

import numpy as np

from sparkdl.spark.blocks import Blocks
from sparkdl.spark.frames import Refusal, decode_block, encode_block, plan_columns, raise_refusal, run_prep_job
from sparkdl.spark.job import FitJob

logger = logging.getLogger(__name__)

#: The address the executors reach the client's servers at (default: the client's address on
#: the route to the Connect server), and the one those servers bind (default: that address)
CLIENT_HOST = "spark.sparkdl.client.host"
CLIENT_BIND = "spark.sparkdl.client.bindAddress"
#: Most bytes of a pickled model a job's request carries (a Connect client sends at most 128 MiB)
MAX_SHIPPED_BYTES = 96 * 1024 * 1024
#: Most bytes of a block's encoding in one row of the converted frame
CHUNK_BYTES = 8 * 1024 * 1024
#: The converted frame: each partition's block in chunks (``rows``: its training rows, ``held``
#: the validation rows after them, on the first chunk; ``rows`` -1: a refusal)
BLOCK_SCHEMA = "part long, seq long, rows long, held long, chunk binary"
_FLAG = "__sparkdl_validation"
_LOCAL = re.compile(r"local\[(\d+)(?:,\s*\d+)?\]")
_CLUSTER = re.compile(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*\d+\s*\]")


def is_connect(obj) -> bool:
    """Whether ``obj`` (a DataFrame or SparkSession) belongs to a Spark Connect session."""
    return type(obj).__module__.startswith("pyspark.sql.connect.")


def refusal(who: str, what: str, instead: str) -> ValueError:
    """The one error for what a Spark Connect session cannot do, naming the alternative."""
    return ValueError(f"{who}: {what} does not run on Spark Connect (its sessions have no SparkContext "
                      f"and no RDDs); {instead}")


class SessionConf:
    """A Connect session's settings read as a SparkConf is, ``get(key, default)``. A client
    sees what was set explicitly (on the server, the session or the builder), not Spark's
    defaults."""

    def __init__(self, session):
        self._conf = session.conf

    def get(self, key: str, default=None):
        value = self._conf.get(key, None)
        return default if value is None else value


def task_slots(session) -> int:
    """How many tasks the session's cluster runs at once, as far as a client can tell: from
    ``spark.master`` for local and local-cluster masters, else from the partitions of
    ``spark.range`` (Spark's default parallelism: the executors' cores), per
    ``spark.task.cpus``. A barrier stage that needs more slots than this must not start: on a
    Connect server it stops the SparkContext."""
    conf = SessionConf(session)
    cpus = max(1, int(conf.get("spark.task.cpus", "1")))
    master = str(conf.get("spark.master", ""))
    if master == "local":
        return 1
    local, cluster = _LOCAL.fullmatch(master), _CLUSTER.fullmatch(master)
    if local:
        cores = int(local.group(1))
    elif cluster:
        cores = int(cluster.group(1)) * int(cluster.group(2))
    else:
        from pyspark.sql.connect import functions as F
        cores = int(session.range(0, 1 << 12).agg(F.max(F.spark_partition_id())).first()[0]) + 1
    return max(1, cores // cpus)


def default_workers(session) -> int:
    """The partitions a fit trains on without ``num_workers``: ``spark.default.parallelism``
    when it is set, cut to the task slots, else the task slots."""
    slots = task_slots(session)
    raw = SessionConf(session).get("spark.default.parallelism")
    return min(int(raw), slots) if raw else slots


def client_address(session) -> tuple[str, str]:
    """``(advertised host, bind address)`` of the servers a fit opens in this client:
    ``spark.sparkdl.client.host`` (default: this machine's address on the route to the Connect
    server, 127.0.0.1 for a server on loopback) and ``spark.sparkdl.client.bindAddress``
    (default: that host)."""
    conf = SessionConf(session)
    host = conf.get(CLIENT_HOST) or _address_toward(session.client.host.strip("[]"))
    return host, conf.get(CLIENT_BIND) or host


def _address_toward(remote: str) -> str:
    """This machine's address on the route to ``remote`` (a UDP socket's, connected: no packet
    is sent)."""
    try:
        family, _, _, _, address = socket.getaddrinfo(remote, 9, socket.AF_INET, socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class ShippedModel:
    """A cloudpickled model that travels inside a job's request (a Connect session has no
    broadcast), with a key naming it in the Python workers' caches (``executor.cached_model``)."""

    def __init__(self, model, who: str):
        import cloudpickle
        self.key = uuid.uuid4().hex
        self.data = cloudpickle.dumps(model)
        if len(self.data) > MAX_SHIPPED_BYTES:
            raise ValueError(f"{who}: on Spark Connect the model travels inside the job's request, which the "
                             f"client limits to 128 MiB; expected a model of at most "
                             f"{MAX_SHIPPED_BYTES >> 20} MiB pickled, received {len(self.data) / 2 ** 20:.0f} MiB: "
                             f"use a classic SparkSession, whose broadcast has no such limit")

    def value(self) -> bytes:
        return self.data

    def destroy(self) -> None:
        """Nothing to free: the model left with the job's request."""


class ConnectSite:
    """Where a Spark Connect session's fit runs (the counterpart of ``job.ClassicSite``): the
    session's settings, the client's data-plane address, the model in the job's closure and
    the fit's barrier ``mapInArrow``."""


    def __init__(self, session):
        self.session = session
        self.conf = SessionConf(session)

    def data_plane_address(self) -> tuple[str, str]:
        return client_address(self.session)

    def ship_model(self, model, who: str = "SparkModel.fit") -> ShippedModel:
        return ShippedModel(model, who)

    def fallback_reason(self, partitions: int, transport: str, who: str) -> None:
        """None: a Connect fit runs as one barrier job or not at all (``SparkModel`` refuses
        what needs a job per round first). ValueError under dynamic allocation, or for more
        partitions than task slots (a barrier stage that asks for more stops a Connect
        server's SparkContext)."""
        if self.conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
            raise ValueError(f"{who}: a fit runs as one barrier job, which Spark refuses with "
                             f"spark.dynamicAllocation.enabled=true; on Spark Connect there is no job-per-round "
                             f"fallback: disable dynamic allocation for the session's cluster")
        slots = task_slots(self.session)
        if partitions > slots:
            raise ValueError(f"{who}: {partitions} partitions train but the cluster runs {slots} tasks at once, "
                             f"and the fit's barrier job needs them all at once; expected num_workers <= {slots}")
        return None

    def start_job(self, blocks, val_blocks, task, group: str, description: str, end=None) -> ConnectFitJob:
        """The fit's barrier job over the converted frame; ``end``: the tasks' endpoint, whose
        server in this client the executors must reach (``check_reachable``, checked first)."""
        if end is not None:
            check_reachable(self.session, end.address, "SparkModel.fit")
        job_task = arrow_task(task, list(blocks.tail), val_blocks is not None)
        return ConnectFitJob(self.session, blocks.frame, job_task, group, description)


def check_reachable(session, address, who: str, timeout: float = 10.0) -> None:
    """A ValueError naming the settings when the executors cannot reach ``address``, a server
    in this client (``unreachable``)."""
    error = unreachable(session, address, timeout)
    if error:
        host, port = address
        raise ValueError(f"{who}: the executors cannot reach this client at {host}:{port} ({error}), where "
                         f"the fit's tasks exchange weights and orders; set {CLIENT_HOST} (and "
                         f"{CLIENT_BIND}) to an address of this machine the executors reach, with "
                         f"spark.conf.set(...) or the session builder's config(...); or, in mode 'sync', use "
                         f"transport='allreduce', whose loop runs without the client")


def reaches_client(session, timeout: float = 10.0) -> bool:
    """Whether the executors reach a server in this client at ``client_address`` (a listening
    socket there for the length of the check)."""
    host, bind = client_address(session)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((bind, 0))
        listener.listen(4)
        error = unreachable(session, (host, listener.getsockname()[1]), timeout)
    if error:
        logger.info("SparkModel.fit: the executors cannot reach this client at %s (%s)", host, error)
    return not error


def unreachable(session, address, timeout: float = 10.0) -> str:
    """What a one-task job got when it opened a connection to ``address``: "" when it could."""
    import pyarrow as pa

    host, port = address

    def probe(batches):
        import socket as sockets
        for _ in batches:
            pass
        try:
            sockets.create_connection((host, port), timeout=timeout).close()
            error = ""
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        yield pa.RecordBatch.from_pydict({"error": [error]})

    return session.range(0, 1, 1, 1).mapInArrow(probe, "error string").collect()[0].error


class FrameBlocks(Blocks):
    """The converted training data of a Connect fit (``blocks.Blocks`` over a DataFrame): the
    cached frame of block chunks, the rows of this view per partition, and ``tail``: how many
    rows at the end of each partition's block are validation rows."""

    def __init__(self, frame, session, rows: list[int], tail: list[int]):
        super().__init__(None, rows)
        self.frame, self.session = frame, session
        self.tail = tail

    @property
    def site(self):
        return ConnectSite(self.session)

    def split(self, validation_split: float) -> tuple[FrameBlocks, FrameBlocks]:
        """``(training view, validation view)``: each partition's last ``held_out_rows``
        validate, as ``blocks.split_blocks`` holds them out."""
        from sparkdl.spark.blocks import held_out_rows
        held = [held_out_rows(r, validation_split) for r in self.rows]
        train = FrameBlocks(self.frame, self.session, [r - h for r, h in zip(self.rows, held)], held)
        val = FrameBlocks(self.frame, self.session, held, held)
        train.kept = val.kept = True        # this view's frame releases them
        return train, val

    def validation(self) -> FrameBlocks:
        """The view of the validation rows after each partition's training rows."""
        val = FrameBlocks(self.frame, self.session, list(self.tail), list(self.tail))
        val.kept = True
        return val

    def release(self) -> None:
        if self.kept:
            return
        try:
            self.frame.unpersist()
        except Exception as exc:  # noqa: BLE001 - a stopped session has dropped its cache already
            logger.debug("SparkModel.fit: the converted frame was not unpersisted (%s)", exc)


def frame_blocks(df, model, features_col, label_col, parts: int, who: str, validation=None) -> FrameBlocks:
    """Convert ``df`` (and the rows of the ``validation`` DataFrame, after each partition's
    training rows) into a cached frame of one block per partition, in ``parts`` partitions
    (one job; ``FrameBlocks``). Bad input comes back as one ValueError or TypeError."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark import StorageLevel
    from pyspark.sql.connect import functions as F      # a Connect frame's (whatever the process)

    from sparkdl.spark.blocks import block_converter
    from sparkdl.spark.frames import refusing

    if not model.built:
        raise ValueError(f"{who}: model '{model.name}' is not built; give it an input shape")
    features, label = plan_columns(df, model, features_col, label_col, who)
    names = features.names + (label.names if label else [])
    selected = df.select(*names).repartition(parts)     # a shuffle before the barrier stage, as it needs
    flagged = validation is not None
    if flagged:
        plan_columns(validation, model, features_col, label_col, f"{who}(validation_data)")
        selected = _with_validation(selected, validation.select(*names).repartition(parts), parts)
    convert = refusing(block_converter(model, features, label, who))
    schema = pa.schema([("part", pa.int64()), ("seq", pa.int64()), ("rows", pa.int64()), ("held", pa.int64()),
                        ("chunk", pa.binary())])

    def rows_of(part, chunks, rows, held):
        n = len(chunks)
        return pa.RecordBatch.from_pydict({"part": [part] * n, "seq": list(range(n)), "rows": [rows] + [0] * (n - 1),
                                           "held": [held] + [0] * (n - 1), "chunk": chunks}, schema=schema)

    def encoded(batches):
        from pyspark import TaskContext
        context = TaskContext.get()
        assert context is not None, "a mapInArrow function runs in a task"
        part = context.partitionId()
        batches = [b for b in batches if b.num_rows]
        sides = [batches]
        if flagged:
            sides = [[b.filter(pc.invert(b.column(_FLAG))) for b in batches],
                     [b.filter(b.column(_FLAG)) for b in batches]]
        made = [convert([b for b in side if b.num_rows]) for side in sides]
        refused = next((m for m in made if isinstance(m, Refusal)), None)
        if refused is not None:
            yield rows_of(part, [refused.encode()], -1, 0)
            return
        x = np.concatenate([m[0][0] for m in made])
        y = np.concatenate([m[1] for m in made]) if label is not None else None
        data = encode_block(x, y)
        chunks = [data[a:a + CHUNK_BYTES] for a in range(0, len(data), CHUNK_BYTES)]
        yield rows_of(part, chunks, len(made[0][0][0]), len(x) - len(made[0][0][0]))

    frame = selected.mapInArrow(encoded, BLOCK_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        heads = run_prep_job(lambda: frame.where("seq = 0").select(
            "part", "rows", "held", F.when(F.col("rows") < 0, F.col("chunk")).alias("refused")).collect(), who)
        raise_refusal([Refusal.decode(r.refused) for r in sorted(heads, key=lambda r: r.part) if r.rows < 0])
        rows, held = [0] * parts, [0] * parts
        for r in heads:
            rows[r.part], held[r.part] = int(r.rows), int(r.held)
        total = sum(rows)
        if total == 0:
            raise ValueError(f"{who}: the DataFrame is empty; expected at least one row")
        if total < parts:
            raise ValueError(f"{who}: {parts} workers but only {total} rows; expected at least one row "
                             f"per worker (lower num_workers)")
        if flagged and not sum(held):
            raise ValueError(f"{who}(validation_data): the DataFrame is empty; expected at least one row")
    except BaseException:
        frame.unpersist()
        raise
    return FrameBlocks(frame, df.sparkSession, rows, held)


def _with_validation(train, validation, parts: int):
    """``train``'s partitions with ``validation``'s partition of the same index after their
    rows, in that order: training rows are where they would be without validation rows. Each
    row's partition number goes through a hash shuffle under a key that Spark's hash
    partitioning sends to that partition (``partition_keys``)."""
    from pyspark.sql.connect import functions as F

    keys = partition_keys(train.sparkSession, parts)

    def tagged(frame, flag: bool):
        return frame.select("*", F.lit(flag).alias(_FLAG), F.spark_partition_id().alias("__sparkdl_part"),
                            F.monotonically_increasing_id().alias("__sparkdl_order"))

    both = tagged(train, False).unionByName(tagged(validation, True))
    key = F.array(*[F.lit(k) for k in keys])[F.col("__sparkdl_part")]
    return (both.withColumn("__sparkdl_key", key).repartition(parts, "__sparkdl_key")
            .sortWithinPartitions(_FLAG, "__sparkdl_order"))


def partition_keys(session, parts: int) -> list[int]:
    """For each partition ``p < parts``, a long that ``repartition(parts, column)`` sends to
    ``p`` (``pmod(hash(key), parts) == p``: Spark's hash partitioning), found by one query."""
    from pyspark.sql.connect import functions as F
    candidates = session.range(0, 64 * parts).select("id", F.expr(f"pmod(hash(id), {parts})").alias("p"))
    keys: dict[int, int] = {}
    for row in candidates.collect():
        keys.setdefault(int(row.p), int(row.id))
    missing = [p for p in range(parts) if p not in keys]
    if missing:       # about e**-64 per partition
        raise RuntimeError(f"no key among {64 * parts} longs hashes to partitions {missing} of {parts}")
    return [keys[p] for p in range(parts)]


def read_block(batches, with_label: bool = True):
    """The block ``(x, y)`` of a partition of the converted frame, from its chunk rows; None
    for a partition without rows."""
    chunks: list[tuple[int, bytes]] = []
    for batch in batches:
        seqs, parts = batch.column("seq").to_pylist(), batch.column("chunk").to_pylist()
        chunks.extend(zip(seqs, parts))
    if not chunks:
        return None
    return decode_block(b"".join(part for _, part in sorted(chunks)), with_label)


def task_items(batches, partition: int, tail: list[int], with_validation: bool) -> list:
    """What a fit's ``mapPartitionsWithIndex`` task reads of its partition, from the converted
    frame's chunk rows: ``[training block]``, or ``[(training block, validation block)]`` (the
    last ``tail[partition]`` rows), or ``[]`` for a partition without rows."""
    block = read_block(batches)
    if block is None:
        return []
    x, y = block
    at = len(y) - (tail[partition] if partition < len(tail) else 0)
    train = ([x[:at]], y[:at])
    return [(train, ([x[at:]], y[at:]))] if with_validation else [train]


def arrow_task(run, tail: list[int], with_validation: bool):
    """A barrier ``mapInArrow`` function around ``run``, a fit's ``mapPartitionsWithIndex``
    task (``executor.persistent_task``): it hands ``run`` its partition's blocks
    (``task_items``) and yields one row, the partition, once the fit has stopped the task."""
    import pyarrow as pa

    def task(batches):
        from pyspark import BarrierTaskContext
        partition = BarrierTaskContext.get().partitionId()
        for _ in run(partition, iter(task_items(batches, partition, tail, with_validation))):
            pass
        yield pa.RecordBatch.from_pydict({"part": pa.array([partition], pa.int64())})
    return task


class ConnectFitJob(FitJob):
    """The fit's barrier ``mapInArrow`` over the converted frame, run in a client thread under
    the tag ``tag`` (Connect's job groups: ``interruptTag`` cancels it). Its result rows go
    through a one-partition shuffle, so that Spark retries the barrier stage as a whole.
    No executor or slot counts reach a client: ``short_of_slots`` says nothing."""

    def __init__(self, session, frame, task, tag: str, description: str):
        import threading
        self.session = session
        self.group = tag
        self._frame = frame.mapInArrow(task, "part long", barrier=True).repartition(1)
        self.error: BaseException | None = None
        self.executors = None
        logger.info("SparkModel.fit: %s, Spark job tag %s", description, tag)
        self._thread = threading.Thread(target=self._run, args=(description,), daemon=True, name="sparkdl-fit-job")
        self._thread.start()

    def _run(self, description: str) -> None:
        try:
            self.session.addTag(self.group)          # tags are the thread's own
            try:
                self._frame.collect()
            finally:
                self.session.removeTag(self.group)
        except BaseException as error:  # noqa: BLE001 - handed to the fit loop by check()
            self.error = error

    def short_of_slots(self, tasks: int) -> str | None:
        return None

    def cancel(self) -> None:
        try:
            self.session.interruptTag(self.group)
        except Exception as exc:  # noqa: BLE001 - the session may be gone; nothing else to cancel
            logger.warning("SparkModel.fit: could not interrupt the fit's Spark job (%s)", exc)
