"""Functions that run inside Spark's Python workers.

The model arrives once per fit as a cloudpickled broadcast and is unpickled once per Python
worker (workers are reused between tasks), then reused every round. Each task drains its
partition iterator: Spark waits for unread input, and a drained task finishes faster.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from sparkdl.distributed import exchange, fit_task, worker
from sparkdl.engine import threads


def use_task_cpus() -> None:
    """Give the engine (conv threads and BLAS) the task's ``spark.task.cpus``, so two tasks on
    two cores do not fight over four threads."""
    from pyspark import TaskContext
    context = TaskContext.get()
    threads.set_num_threads(int(context.cpus()) if context is not None else 1)

_models: dict[str, object] = {}


class ModelBroadcast:
    """A cloudpickled model broadcast once, with a key naming it in the workers' caches."""

    def __init__(self, sc, model):
        import uuid

        import cloudpickle
        self.key = uuid.uuid4().hex
        self.broadcast = sc.broadcast(cloudpickle.dumps(model))

    def value(self) -> bytes:
        """The pickled model (in a task)."""
        return self.broadcast.value

    def destroy(self):
        self.broadcast.destroy()


def ship_model(session, model, who: str):
    """``model`` as the tasks of a job of ``session`` receive it: a ``ModelBroadcast``, or in a
    Spark Connect session, which has no broadcast, a ``connect.ShippedModel`` in the job's
    closure."""
    from sparkdl.spark import connect
    if connect.is_connect(session):
        return connect.ShippedModel(model, who)
    return ModelBroadcast(session.sparkContext, model)


def cached_model(model_bc):
    """The model of a ``ModelBroadcast`` (or ``connect.ShippedModel``), unpickled once per
    Python worker."""
    key = model_bc.key
    model = _models.get(key)
    if model is None:
        _models.clear()  # one fit at a time per worker: drop the previous fit's model
        model = pickle.loads(model_bc.value())
        _models[key] = model
    return model


def _partition_task(model_bc, train):
    """A ``mapPartitionsWithIndex`` function: drain the partition's cached block; an empty
    partition reports itself, otherwise ``train(model, xs, y, partition, attempt)`` runs on the
    worker's copy of the model with the task's CPUs."""
    def run(partition, iterator):
        from pyspark import TaskContext

        blocks = list(iterator)
        if not blocks or len(blocks[0][1]) == 0:
            yield worker.RoundResult(partitions=1, empty_partitions=[partition])
            return
        use_task_cpus()
        context = TaskContext.get()
        xs, y = blocks[0]
        yield train(cached_model(model_bc), xs, y, partition,
                    context.attemptNumber() if context else 0)
    return run


def round_task(model_bc, weights_bc, spec: worker.RoundSpec):
    """A sync round on Spark's transport: weights from a broadcast, the full result returned."""
    def train(model, xs, y, partition, attempt):
        payload = weights_bc.value
        return worker.run_round(model, xs, y, spec, partition, payload["weights"], payload["state"],
                                payload["slots"], payload["iterations"])
    return _partition_task(model_bc, train)


def socket_round_task(model_bc, end: exchange.Endpoint, spec: worker.RoundSpec):
    """A sync round over the data plane: pull the weights from the driver, train, push the
    result; the task returns only the small part of its result (counts, loss, metric states)."""
    def train(model, xs, y, partition, attempt):
        parts, meta = exchange.pull(end, spec.round)
        slots = {name[5:]: v for name, v in parts.items() if name.startswith("slot:")}
        result = worker.run_round(model, xs, y, spec, partition, parts["weights"], parts.get("state"),
                                  slots, int(meta["iterations"]))
        if result.diverged:         # nothing non-finite reaches the driver
            return result
        out = {end.push.names[0]: result.vector, "state": result.state}
        out.update({f"slot:{k}": v for k, v in result.slots.items()})
        exchange.push(end, spec.round, partition, attempt, result.samples, out)
        result.vector, result.state, result.slots = None, None, {}
        return result
    return _partition_task(model_bc, train)


def async_epoch_task(model_bc, end, spec: worker.RoundSpec, states_bc):
    """One epoch of a partition against the driver's parameter server (async modes), from the
    partition's worker state (``states_bc``: a broadcast of every partition's); the result
    carries the state after the epoch."""
    def train(model, xs, y, partition, attempt):
        from sparkdl.distributed import parameter_server

        residual = worker.set_worker_state(model, *states_bc.value[partition])
        client = parameter_server.Client(end.address, end.token, end.timeout, spec.round, partition,
                                         attempt, end.size, end.security, spec.compression, residual)
        try:
            result = worker.run_async_epoch(model, xs, y, spec, partition, client)
        finally:
            client.close()
        if not result.diverged:
            result.worker_states = {partition: worker.worker_state(
                model, with_weights=spec.mode == "easgd", residual=client.residual)}
        return result
    return _partition_task(model_bc, train)


def elastic_round_task(model_bc, states_bc, spec: worker.RoundSpec):
    """A synchronous EASGD round of a partition from its worker state (``states_bc``: a
    broadcast of every partition's)."""
    def train(model, xs, y, partition, attempt):
        worker.set_worker_state(model, *states_bc.value[partition])
        return worker.run_elastic_round(model, xs, y, spec, partition)
    return _partition_task(model_bc, train)


@dataclass(frozen=True)
class PSEndpoint:
    """What a task needs to reach the parameter server (shipped in the task closure)."""
    address: tuple
    token: bytes
    timeout: float
    size: int
    security: str = "integrity"       # the server's protection mode (session.MODES)


def persistent_task(model_bc, end: fit_task.FitEndpoint, with_validation: bool = False):
    """The task of a one-job fit: hold the partition's block (and validation rows, zipped in
    as a second block) and the model, and carry out the driver's orders until it says stop."""
    def run(partition, iterator):
        items = list(iterator)
        block, val_block = (items[0] if with_validation else (items[0], None)) if items else (None, None)
        if block is None or len(block[1]) == 0:
            block = ([], [])
        use_task_cpus()
        ring = _ring_task(partition, len(block[1]), end) if end.ring is not None else None
        model = cached_model(model_bc)
        shards = _shard_task(model, partition, end, val_block) if end.shards is not None else None
        try:
            yield fit_task.run_fit_task(model, block, val_block, partition, end, ring or shards)
        finally:
            if ring is not None:
                ring.peer.close()
            if shards is not None:
                shards.close()
    return run


def all_gather(context, message: str, timeout: float, partition: int, what: str = "its ring address",
               who: str = "allreduce") -> list[str]:
    """``context.allGather(message)`` waiting at most ``timeout`` seconds. pyspark's call has
    no timeout of its own: it waits ``spark.barrier.sync.timeout`` (365 days by default, a conf
    the SparkContext fixes when it starts), so a task stuck before the call would hold its peers
    for that long. The call runs in a daemon thread; when it does not return in time this task
    fails (Spark then ends the barrier stage, its stuck task included), and the thread ends
    with this Python worker, which does not outlive a failed task."""
    import threading

    answer: list = []

    def call():
        try:
            answer.append((True, context.allGather(message)))
        except BaseException as error:  # noqa: BLE001 - raised in the task's thread below
            answer.append((False, error))

    thread = threading.Thread(target=call, name="sparkdl-all-gather", daemon=True)
    thread.start()
    thread.join(timeout)
    if not answer:
        raise TimeoutError(f"{who}: partition {partition} waited {timeout} s for every task of the fit's "
                           f"barrier stage to tell {what} (allGather); a task did not get there: "
                           f"it is stuck, or reads its partition more than timeout={timeout} s slower")
    ok, value = answer[0]
    if not ok:
        raise value
    return value


def _ring_task(partition: int, rows: int, end: fit_task.FitEndpoint):
    """``transport="allreduce"``: this task's ring peer (a training partition's), bound to its
    executor's host; every task of the barrier stage tells the others its address
    (``all_gather``, within the fit's ``timeout``). None for a task that does not train. The
    ring's attempt is a number drawn from every peer's address, the same for all tasks of a
    stage attempt and new with each retry (Python tasks do not see Spark's stage attempt
    number)."""
    import hashlib
    import json

    from pyspark import BarrierTaskContext

    from sparkdl.distributed import ring, ring_task
    from sparkdl.distributed.compression import get_codec
    context = BarrierTaskContext.get()
    members = list(end.ring or ())
    assert end.push is not None, "an allreduce fit's endpoint carries the push layout"
    peer = None
    if partition in members and rows:
        host = context.getTaskInfos()[partition].address.rsplit(":", 1)[0]
        peer = ring.RingPeer(members.index(partition), len(members), end.push.size, end.token, end.timeout,
                             attempt=None, host=host, security=end.security,
                             codec=get_codec(end.compression))
    try:
        told = all_gather(context, json.dumps(list(peer.address) if peer is not None else None), end.timeout,
                          partition)
    except BaseException:
        if peer is not None:
            peer.close()
        raise
    if peer is None:
        return None
    addresses = [json.loads(told[p]) for p in members]
    attempt = int.from_bytes(hashlib.sha256(json.dumps(addresses).encode()).digest()[:6], "big")
    peer.connect([tuple(a) for a in addresses], attempt)
    return ring_task.RingTask(peer, end)


def _shard_task(model, partition: int, end: fit_task.FitEndpoint, val_block=None):
    """``num_servers >= 1``: this task's ``shard_task.ShardTask``. The task of a partition that
    hosts a shard starts its server, bound to its executor's host, from the driver's vector;
    every task of the barrier stage tells the others its shard's address, or None
    (``all_gather``, within the fit's ``timeout``). Sync rounds (``RoundShardSettings``):
    a ``shard_round_task.RoundShardTask`` on ``ShardRounds``."""
    import json

    from pyspark import BarrierTaskContext

    from sparkdl.distributed import shard_round_task, shard_task
    from sparkdl.distributed.server import FrameServer
    settings = end.shards
    rounds = isinstance(settings, shard_round_task.RoundShardSettings)
    context = BarrierTaskContext.get()
    layout = shard_task.ShardLayout(settings.param_map, settings.num_shards)
    shard = settings.hosts.index(partition) if partition in settings.hosts else None
    server: Any = None          # a ShardServer, or the ShardRounds of sync rounds
    frames = None
    if shard is not None:
        host = context.getTaskInfos()[partition].address.rsplit(":", 1)[0]
        start = shard_round_task.start_round_shard if rounds else shard_task.start_shard
        server = start(layout, shard, settings, end)
        frames = FrameServer(server, end.token, host=host, port=0, timeout=end.timeout,
                             name=f"sparkdl-shard-{shard}", security=end.security)
    try:
        told = all_gather(context, json.dumps([shard, list(frames.address) if frames is not None else None]),
                          end.timeout, partition, what="its shard's address", who="SparkModel.fit")
    except BaseException:
        if frames is not None:
            frames.close()
        raise
    addresses: list = [None] * settings.num_shards
    for k, address in map(json.loads, told):
        if k is not None:
            addresses[k] = tuple(address)
    task = shard_round_task.RoundShardTask if rounds else shard_task.ShardTask
    return task(layout, settings, shard, server, addresses, end, close=None if frames is None else frames.close,
                val_block=val_block)
