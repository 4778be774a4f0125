"""What distribution costs: SparkModel.fit on local[2] against the engine in one process.

(a) Overhead factor: the MNIST 5k MLP, 10 epochs, batch 64, frequency "epoch", 2 workers,
    from a cached DataFrame (data preparation included) / single-process model.fit on the
    same data, with the breakdown into data preparation, rounds, compute and overhead.
    The first fit of a Spark application also starts the Python workers and the JVM's
    Arrow machinery; (a) reports that first fit and a second one on the same session.
(b) Fixed cost S of one round: frequency "batch" (one step of 8 rows per partition), for
    models of ~10k, ~1M and ~10M parameters; S = round time - compute time, median; for
    both transports (sparkdl's socket data plane, Spark's broadcast + treeReduce).
(c) LeNet throughput: samples/s of SparkModel.fit rounds on local[2] (2 workers, 1 thread
    each, frequency "epoch") against the engine's fit in one process with 2 threads.

    python benchmarks/spark_overhead.py [--parts a,b,c] [--rounds 8] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np


def session():
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from sparkdl.spark import get_session
    spark = get_session("local[2]", app_name="sparkdl-bench", conf={"spark.ui.enabled": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def overhead_factor(spark, repeats):
    import sparkdl
    from sparkdl.data.samples import mnist_5k
    from sparkdl.engine import optimizers, zoo
    from sparkdl.spark import SparkModel, from_arrays

    x, y, _, _ = mnist_5k(0)
    df = from_arrays(spark, x, y, num_partitions=2).cache()
    df.count()

    def model():
        sparkdl.set_random_seed(0)
        m = zoo.mlp()
        m.compile(optimizers.SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy")
        return m

    def measure():
        local = model()
        start = time.perf_counter()
        local.fit(x, y, epochs=10, batch_size=64, verbose=0, seed=0)
        local_seconds = time.perf_counter() - start
        start = time.perf_counter()
        history = SparkModel(model(), frequency="epoch", num_workers=2).fit(
            df, epochs=10, batch_size=64, verbose=0)
        return local_seconds, time.perf_counter() - start, history

    def report(label, runs):
        local_seconds = statistics.median(r[0] for r in runs)
        spark_seconds = statistics.median(r[1] for r in runs)
        rounds = [r for run in runs for r in run[2].rounds]
        n = len(runs)
        print(f"  {label}")
        print(f"    single process fit      {local_seconds:8.3f} s")
        print(f"    SparkModel.fit          {spark_seconds:8.3f} s   factor {spark_seconds / local_seconds:.2f}")
        print(f"      data preparation      {statistics.median(r[2].data_seconds for r in runs):8.3f} s")
        print(f"      rounds (sum)          {sum(r['seconds'] for r in rounds) / n:8.3f} s over "
              f"{len(rounds) // n} rounds")
        print(f"      compute (max worker)  {sum(r['compute_seconds'] for r in rounds) / n:8.3f} s")
        print(f"      overhead per round    {statistics.median(r['overhead_seconds'] for r in rounds):8.3f} s (median)")

    print("(a) overhead factor, MNIST 5k MLP, 10 epochs, 2 workers, frequency 'epoch'")
    report("first fit of the application (starts Python workers and the JVM's Arrow code)", [measure()])
    report(f"later fits, same session (median of {repeats})", [measure() for _ in range(repeats)])


def fixed_cost(spark, rounds):
    from sparkdl import layers
    from sparkdl.models import Sequential
    from sparkdl.spark import SparkModel, from_arrays

    print("(b) fixed cost S of one round (frequency='batch', 8-row batches), median over rounds")
    print("                                   socket data plane         Spark broadcast + treeReduce")
    for name, width, hidden in (("10k", 100, 96), ("1M", 1000, 1000), ("10M", 3000, 3300)):
        rng = np.random.default_rng(0)
        df = from_arrays(spark, rng.random((64, width), dtype=np.float32), rng.integers(0, 10, 64),
                         num_partitions=2).cache()
        df.count()
        cells = []
        for transport in ("socket", "spark"):
            model = Sequential([layers.Input((width,)), layers.Dense(hidden, activation="relu"),
                                layers.Dense(10, activation="softmax")])
            model.compile("sgd", "sparse_categorical_crossentropy")
            history = SparkModel(model, frequency="batch", num_workers=2, transport=transport).fit(
                df, epochs=3, batch_size=8, verbose=0)
            runs = history.rounds[1:rounds + 1] or history.rounds
            s = statistics.median(r["overhead_seconds"] for r in runs)
            total = statistics.median(r["seconds"] for r in runs)
            cells.append(f"S = {s:.3f} s (round {total:.3f} s)")
        df.unpersist()
        print(f"    {name:>4} ({model.count_params():>10,} params): {cells[0]}   {cells[1]}")


def lenet_throughput(spark, epochs):
    import sparkdl
    from sparkdl.data.samples import mnist_5k
    from sparkdl.engine import optimizers, threads, zoo
    from sparkdl.spark import SparkModel, from_arrays

    x, y, _, _ = mnist_5k(0)
    df = from_arrays(spark, x, y, num_partitions=2).cache()
    df.count()

    def model():
        sparkdl.set_random_seed(0)
        m = zoo.lenet()
        m.compile(optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
        return m

    threads.set_num_threads(2)
    local = model()
    local.fit(x[:256].reshape(-1, 1, 28, 28), y[:256], epochs=1, batch_size=64, verbose=0)  # warm-up
    start = time.perf_counter()
    local.fit(x.reshape(-1, 1, 28, 28), y, epochs=epochs, batch_size=64, verbose=0, seed=0)
    local_rate = epochs * len(x) / (time.perf_counter() - start)
    start = time.perf_counter()
    history = SparkModel(model(), frequency="epoch", num_workers=2).fit(df, epochs=epochs + 1,
                                                                        batch_size=64, verbose=0)
    fit_seconds = time.perf_counter() - start
    rounds = history.rounds[1:]          # the first round also warms the workers' model up
    spark_rate = sum(r["samples"] for r in rounds) / sum(r["seconds"] for r in rounds)
    whole = sum(r["samples"] for r in history.rounds) / fit_seconds
    print(f"(c) LeNet throughput, MNIST 5k, batch 64, {epochs} epochs")
    print(f"    engine, one process, 2 threads   {local_rate:8.0f} samples/s")
    print(f"    SparkModel rounds, 2 workers     {spark_rate:8.0f} samples/s   ratio {spark_rate / local_rate:.2f}")
    print(f"    whole fit incl. data preparation {whole:8.0f} samples/s   ratio {whole / local_rate:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="a,b,c")
    parser.add_argument("--lenet-epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="warm runs of (a)")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    print(f"# spark_overhead: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    spark = session()
    if "a" in args.parts:
        overhead_factor(spark, args.repeats)
    if "b" in args.parts:
        fixed_cost(spark, args.rounds)
    if "c" in args.parts:
        lenet_throughput(spark, args.lenet_epochs)
    spark.stop()


if __name__ == "__main__":
    main()
