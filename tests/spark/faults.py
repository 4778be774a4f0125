"""Fault injection for the reliability tests: a layer that fails on demand inside one chosen
Spark task, the small model and data the fault jobs train, and the jobs themselves (run
in-process on the tests' session, or through spark-submit by ``fault_job.py``).

``FaultyLayer`` is the identity until it finds itself in the chosen task: the order a task
of a one-job fit carries out (or, with a job per round, the job's description) names the
round (``"sparkdl round 3/6"``, ``"sparkdl async epoch 2/3"``) and the attempt, and
``pyspark.TaskContext`` gives the partition. There, after ``after`` training
steps, it raises, kills its own Python worker, its executor's JVM or (on a standalone
cluster) the worker daemon with its executor (SIGKILL), turns its output into NaN, or hangs
(waits on an event nobody sets, for up to ten minutes) — and
first leaves a marker file, so a test knows the fault really happened.
"""
from __future__ import annotations

import os
import signal
import threading

import numpy as np

import sparkdl
from sparkdl import layers, optimizers
from sparkdl.distributed.fit_task import current_order
from sparkdl.engine.layers.base import Layer
from sparkdl.models import Sequential

FAULTS = ("raise", "kill", "kill-executor", "kill-worker", "nan", "hang")


def ancestor_pid(pid: int, main_class: bytes) -> int:
    """The pid of the JVM running ``main_class`` that ``pid`` descends from: a task's Python
    worker is forked by pyspark's daemon, a child of the executor JVM
    (``CoarseGrainedExecutorBackend``), itself a child of a standalone worker
    (``deploy.worker.Worker``)."""
    start = pid
    while pid > 1:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if main_class in f.read():
                return pid
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    raise RuntimeError(f"process {start} descends from no {main_class.decode()} JVM")


def executor_jvm_pid(pid: int) -> int:
    return ancestor_pid(pid, b"CoarseGrainedExecutorBackend")


class FaultyLayer(Layer):
    def __init__(self, fault=None, job=None, partition=0, attempt=0, after=0, marker_dir=None, **kwargs):
        super().__init__(**kwargs)
        assert fault is None or fault in FAULTS, fault
        self.fault, self.job, self.partition, self.attempt = fault, job, partition, attempt
        self.after, self.marker_dir = after, marker_dir
        self.task, self.calls = None, 0

    def compute_output_shape(self, input_shape):
        return input_shape

    def forward(self, x, training=False):
        if training and self.fault is not None and self._chosen_step():
            if self.marker_dir:
                with open(os.path.join(self.marker_dir, f"{self.fault}-{os.getpid()}"), "w") as f:
                    f.write(self.job)
            if self.fault == "raise":
                raise RuntimeError(f"injected fault in {self.job}, partition {self.partition}")
            if self.fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.fault == "kill-worker":     # no worker is left to start a replacement executor
                os.kill(ancestor_pid(os.getpid(), b"org.apache.spark.deploy.worker.Worker"), signal.SIGKILL)
            if self.fault in ("kill-executor", "kill-worker"):
                os.kill(executor_jvm_pid(os.getpid()), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)     # and its worker (pyspark's daemon sees EOF and ends)
            if self.fault == "hang":
                threading.Event().wait(600)
            return x * np.float32("nan")
        return x

    def backward(self, dLdy):
        return dLdy

    def _chosen_step(self) -> bool:
        from pyspark import TaskContext
        context = TaskContext.get()
        if context is None:
            return False
        order = current_order()
        task = (context.taskAttemptId(), order and order["seq"])   # steps count per task and order
        if task != self.task:
            self.task, self.calls = task, 0
        self.calls += 1
        if order is not None:       # a task of a one-job fit: the order says round and attempt
            label, attempt = order["label"], order["attempt"]
        else:                       # a job per round: its description names the round
            label, attempt = context.getLocalProperty("spark.job.description") or "", context.attemptNumber()
        return (label.startswith(self.job) and context.partitionId() == self.partition
                and attempt == self.attempt and self.calls == self.after + 1)


def digits_frame(spark, rows=1200, partitions=2):
    """The first ``rows`` of scikit-learn's digits (pixels / 16) in ``partitions`` partitions,
    built the same way in every process, so every run sees the same partitions."""
    from sklearn.datasets import load_digits

    from sparkdl.spark import from_arrays
    digits = load_digits()
    x = (digits.data[:rows] / 16.0).astype(np.float32)
    return from_arrays(spark, x, digits.target[:rows], num_partitions=partitions).cache()


def model(seed=0, optimizer="sgd", **fault):
    """64-32-10 with the faulty identity between the layers."""
    sparkdl.set_random_seed(seed)
    net = Sequential([layers.Dense(32, activation="relu", input_shape=(64,)), FaultyLayer(**fault),
                      layers.Dense(10, activation="softmax")])
    opt = {"adam": lambda: optimizers.Adam(0.01), "sgd": lambda: optimizers.SGD(0.1, momentum=0.9),
           "plain-sgd": lambda: optimizers.SGD(0.1)}[optimizer]()
    net.compile(opt, "sparse_categorical_crossentropy", metrics=["accuracy"])
    return net


def train(spark, epochs=3, mode="sync", frequency=4, seed=0, optimizer="sgd", fit_options=None,
          mode_options=None, **fault):
    """Fit the faulty model on the digits; returns ``(model, history)``."""
    from sparkdl.spark import SparkModel
    net = model(seed=seed, optimizer=optimizer, **fault)
    spark_model = SparkModel(net, mode=mode, frequency=frequency, num_workers=2, seed=seed, **(mode_options or {}))
    history = spark_model.fit(digits_frame(spark), epochs=epochs, batch_size=32, verbose=0,
                              **(fit_options or {}))
    return net, history


def click_model(seed=0, optimizer=None, **fault):
    """Ids of 9 fields -> Embedding(64, 4) -> 8 relu -> the faulty identity -> sigmoid, plain
    SGD unless given ``optimizer``: a model whose parameter server can be sharded
    (``num_servers``)."""
    sparkdl.set_random_seed(seed)
    net = Sequential([layers.Embedding(64, 4, input_shape=(9,)), layers.Flatten(),
                      layers.Dense(8, activation="relu"), FaultyLayer(**fault),
                      layers.Dense(1, activation="sigmoid")])
    net.compile(optimizer or optimizers.SGD(0.1), "binary_crossentropy")
    return net


def train_sharded(spark, workers=1, num_servers=1, epochs=3, mode="async", optimizer=None, **fault):
    """Fit the faulty click model in mode async (or sync rounds of gradients) on
    ``num_servers`` shards: ``(model, history)``."""
    from sparkdl.data.synthetic import click_data
    from sparkdl.spark import SparkModel
    data = click_data(1200, seed=0, num_ids=64)
    rdd = spark.sparkContext.parallelize([(i, float(y)) for i, y in zip(data.ids, data.label)], workers)
    net = click_model(optimizer=optimizer, **fault)
    spark_model = SparkModel(net, mode=mode, frequency=4, num_workers=workers, num_servers=num_servers,
                             aggregate="gradients" if mode == "sync" else "weights")
    return net, spark_model.fit(rdd, epochs=epochs, batch_size=32, verbose=0)
