"""What distribution costs: SparkModel.fit on local[2] against the engine in one process.

(a) Overhead factor: the MNIST 5k MLP, 10 epochs, batch 64, frequency "epoch", 2 workers,
    from a cached DataFrame (data preparation included) / single-process model.fit on the
    same data, with the breakdown into data preparation, rounds, compute and overhead.
(b) Fixed cost S of one round: frequency "batch" (one step of 8 rows per partition), for
    models of ~10k, ~1M and ~10M parameters; S = round time - compute time, median.

    python benchmarks/spark_overhead.py [--parts a,b] [--rounds 8]
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


def overhead_factor(spark):
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

    local = model()
    start = time.perf_counter()
    local.fit(x, y, epochs=10, batch_size=64, verbose=0, seed=0)
    local_seconds = time.perf_counter() - start
    spark_model = SparkModel(model(), frequency="epoch", num_workers=2)
    start = time.perf_counter()
    history = spark_model.fit(df, epochs=10, batch_size=64, verbose=0)
    spark_seconds = time.perf_counter() - start
    rounds = history.rounds
    print("(a) overhead factor, MNIST 5k MLP, 10 epochs, 2 workers")
    print(f"    single process fit      {local_seconds:8.3f} s")
    print(f"    SparkModel.fit          {spark_seconds:8.3f} s   factor {spark_seconds / local_seconds:.2f}")
    print(f"      data preparation      {history.data_seconds:8.3f} s")
    print(f"      rounds (sum)          {sum(r['seconds'] for r in rounds):8.3f} s over {len(rounds)} rounds")
    print(f"      compute (max worker)  {sum(r['compute_seconds'] for r in rounds):8.3f} s")
    print(f"      overhead per round    {statistics.median(r['overhead_seconds'] for r in rounds):8.3f} s (median)")


def fixed_cost(spark, rounds):
    from sparkdl import layers
    from sparkdl.models import Sequential
    from sparkdl.spark import SparkModel, from_arrays

    print("(b) fixed cost S of one round (frequency='batch', 8-row batches), median over rounds")
    for name, width, hidden in (("10k", 100, 96), ("1M", 1000, 1000), ("10M", 3000, 3300)):
        model = Sequential([layers.Input((width,)), layers.Dense(hidden, activation="relu"),
                            layers.Dense(10, activation="softmax")])
        model.compile("sgd", "sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        df = from_arrays(spark, rng.random((64, width), dtype=np.float32), rng.integers(0, 10, 64),
                         num_partitions=2).cache()
        df.count()
        history = SparkModel(model, frequency="batch", num_workers=2).fit(
            df, epochs=3, batch_size=8, verbose=0)
        runs = history.rounds[1:rounds + 1] or history.rounds
        s = statistics.median(r["overhead_seconds"] for r in runs)
        total = statistics.median(r["seconds"] for r in runs)
        print(f"    {name:>4} ({model.count_params():>10,} params): S = {s:.3f} s  (round {total:.3f} s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="a,b")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    print(f"# spark_overhead: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    spark = session()
    if "a" in args.parts:
        overhead_factor(spark)
    if "b" in args.parts:
        fixed_cost(spark, args.rounds)
    spark.stop()


if __name__ == "__main__":
    main()
