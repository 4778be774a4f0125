"""What distribution costs: SparkModel.fit on local[2] against the engine in one process,
with the fit as one Spark job (the default) and with one job per round side by side.

(a) Overhead factor: the MNIST 5k MLP, 10 epochs, batch 64, frequency "epoch", 2 workers,
    from a cached DataFrame (data preparation included) / single-process model.fit on the
    same data, with the breakdown into data preparation, rounds, compute and overhead. The
    first fit of an application is measured in fresh processes, next to the cost of Spark's
    own first Arrow job (a trivial mapInArrow) in another fresh process.
(b) Fixed cost S of one round: frequency "batch" (one step of 8 rows per partition), for
    models of ~10k, ~1M and ~10M parameters; S = round time - compute time, median; in one
    job, one job per round over the socket, and Spark's broadcast + treeReduce.
(c) Sync with frequency "batch" (tau = 1), MNIST 5k MLP, 10 epochs, models averaged (the
    default) and gradients averaged: fit time against the
    single-process fit, and test accuracy.
(d) LeNet throughput: samples/s of the whole SparkModel.fit on local[2] (2 workers, 1 thread
    each, frequency "epoch"), data preparation included, against the engine's fit in one
    process with 2 threads.

    python benchmarks/spark_overhead.py [--parts a,b,c,d] [--rounds 8] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import platform
import json
import statistics
import subprocess
import sys
import time

import numpy as np


def session():
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from sparkdl.spark import get_session
    spark = get_session("local[2]", app_name="sparkdl-bench", conf={"spark.ui.enabled": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def mnist_frame(spark):
    from sparkdl.data.samples import mnist_5k
    from sparkdl.spark import from_arrays
    x, y, xt, yt = mnist_5k(0)
    df = from_arrays(spark, x, y, num_partitions=2).cache()
    df.count()
    return df, x, y, xt, yt


def mlp(seed=0):
    import sparkdl
    from sparkdl.engine import optimizers, zoo
    sparkdl.set_random_seed(seed)
    m = zoo.mlp()
    m.compile(optimizers.SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def single_process_seconds(x, y, repeats=5):
    """Median time of the engine's fit in this process (2 threads): the baseline of every ratio
    of a part, measured once so that all of the part's ratios share it."""
    times = []
    for _ in range(repeats):
        local = mlp()
        start = time.perf_counter()
        local.fit(x, y, epochs=10, batch_size=64, verbose=0, seed=0)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fit_once(spark, df, execution, frequency="epoch", aggregate="weights"):
    """``(SparkModel.fit seconds, history, model)``."""
    from sparkdl.spark import SparkModel
    model = mlp()
    start = time.perf_counter()
    history = SparkModel(model, frequency=frequency, num_workers=2, execution=execution,
                         aggregate=aggregate).fit(
        df, epochs=10, batch_size=64, verbose=0)
    return time.perf_counter() - start, history, model


def first_in_fresh_process(what):
    """Seconds of the first fit (or the first trivial mapInArrow job) of a new application."""
    out = subprocess.run([sys.executable, __file__, "--child", what], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def child(what):
    spark = session()
    if what == "arrow":
        df = spark.range(100).repartition(2).cache()
        df.count()
        times = []
        for _ in range(2):
            start = time.perf_counter()
            df.mapInArrow(lambda batches: (b for b in batches), df.schema).count()
            times.append(time.perf_counter() - start)
        print(json.dumps({"first": times[0], "second": times[1]}))
    elif what == "breakdown":
        print(json.dumps(cold_breakdown(spark)))
    else:
        df, x, y, _, _ = mnist_frame(spark)
        seconds, history, _ = fit_once(spark, df, what)
        print(json.dumps({"local": single_process_seconds(x, y, 3), "fit": seconds, "data": history.data_seconds}))
    spark.stop()


def cold_breakdown(spark):
    """What the first data preparation of an application is made of: Spark's first job
    reading the DataFrame's Arrow batches into a Python RDD (the path the blocks take: JVM
    Arrow writer, Python worker start), then sparkdl's conversion, first and second time."""
    from sparkdl.spark import frames
    from sparkdl.spark.blocks import dataframe_blocks
    df, _, _, _, _ = mnist_frame(spark)
    out = {}

    def timed(key, run):
        start = time.perf_counter()
        run()
        out[key] = time.perf_counter() - start

    for key in ("arrow_rdd", "arrow_rdd_again"):
        timed(key, lambda: frames.arrow_batch_rdd(df).map(lambda b: b.num_rows).collect())
    for key in ("blocks_first", "blocks_second"):
        timed(key, lambda: dataframe_blocks(df, mlp(), "features", "label", 2, "bench").release())
    return out


def overhead_factor(spark, repeats):
    df, x, y, _, _ = mnist_frame(spark)
    fit_once(spark, df.select("*"), "auto")          # warm the Python workers up
    local = single_process_seconds(x, y)
    print("(a) overhead factor, MNIST 5k MLP, 10 epochs, 2 workers, frequency 'epoch'")
    print(f"  warm fits, same session (median of {repeats}); single-process fit {local:.3f} s "
          f"(median of 5)")
    print("                              one job per fit          one job per round")
    columns = {}
    for execution in ("auto", "rounds"):
        # A new DataFrame object each time: its blocks are converted; the same one: reused.
        columns[execution, "new"] = [fit_once(spark, df.select("*"), execution) for _ in range(repeats)]
        columns[execution, "same"] = [fit_once(spark, df, execution) for _ in range(repeats + 1)][1:]
    for data in ("new", "same"):
        rows = {}
        for execution in ("auto", "rounds"):
            runs = columns[execution, data]
            fit = statistics.median(r[0] for r in runs)
            rounds = [r for run in runs for r in run[1].rounds]
            rows.setdefault("SparkModel.fit", []).append(f"{fit:8.3f} s  factor {fit / local:4.2f}")
            rows.setdefault("  data preparation", []).append(
                f"{statistics.median(r[1].data_seconds for r in runs):8.3f} s")
            rows.setdefault("  rounds (sum)", []).append(f"{sum(r['seconds'] for r in rounds) / repeats:8.3f} s")
            rows.setdefault("  compute (max worker)", []).append(
                f"{sum(r['compute_seconds'] for r in rounds) / repeats:8.3f} s")
            rows.setdefault("  overhead per round", []).append(
                f"{statistics.median(r['overhead_seconds'] for r in rounds):8.4f} s")
        print("  a new DataFrame each fit (converted)" if data == "new" else
              "  the same DataFrame again (converted blocks reused)")
        for label, cells in rows.items():
            print(f"    {label:<24}{cells[0]:<25}{cells[1]}")
    arrow = [first_in_fresh_process("arrow") for _ in range(3)]
    firsts = [first_in_fresh_process("auto") for _ in range(3)]
    first_arrow = statistics.median(a["first"] for a in arrow)
    first_fit = statistics.median(f["fit"] for f in firsts)
    local = statistics.median(f["local"] for f in firsts)
    print("  first fit of an application (fresh processes, median of 3)")
    print(f"    Spark's first trivial mapInArrow job {first_arrow:6.3f} s (the next one "
          f"{statistics.median(a['second'] for a in arrow):.3f} s)")
    print(f"    first SparkModel.fit (one job)       {first_fit:6.3f} s  (data preparation "
          f"{statistics.median(f['data'] for f in firsts):.3f} s; single process {local:.3f} s); "
          f"above the first Arrow job: {first_fit - first_arrow:+.3f} s")
    parts = [first_in_fresh_process("breakdown") for _ in range(3)]
    med = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    print("  what the first data preparation is made of (fresh processes, median of 3, in this order)")
    print(f"    first job reading Arrow batches into a Python RDD    {med['arrow_rdd']:6.3f} s "
          f"(next time {med['arrow_rdd_again']:.3f} s)")
    print(f"    sparkdl's block conversion, first / second time      {med['blocks_first']:6.3f} s / "
          f"{med['blocks_second']:.3f} s")


def fixed_cost(spark, rounds):
    from sparkdl import layers
    from sparkdl.models import Sequential
    from sparkdl.spark import SparkModel, from_arrays

    print("(b) fixed cost S of one round (frequency='batch', 8-row batches), median over rounds")
    print("                             one job per fit      job per round, socket   job per round, Spark")
    for name, width, hidden in (("10k", 100, 96), ("1M", 1000, 1000), ("10M", 3000, 3300)):
        rng = np.random.default_rng(0)
        df = from_arrays(spark, rng.random((64, width), dtype=np.float32), rng.integers(0, 10, 64),
                         num_partitions=2).cache()
        df.count()
        cells = []
        for execution, transport in (("auto", "socket"), ("rounds", "socket"), ("rounds", "spark")):
            model = Sequential([layers.Input((width,)), layers.Dense(hidden, activation="relu"),
                                layers.Dense(10, activation="softmax")])
            model.compile("sgd", "sparse_categorical_crossentropy")
            history = SparkModel(model, frequency="batch", num_workers=2, transport=transport,
                                 execution=execution).fit(df, epochs=3, batch_size=8, verbose=0)
            runs = history.rounds[1:rounds + 1] or history.rounds
            s = statistics.median(r["overhead_seconds"] for r in runs)
            cells.append(f"S = {s * 1e3:8.2f} ms")
        df.unpersist()
        print(f"    {name:>4} ({model.count_params():>10,} params): {cells[0]:<21}{cells[1]:<24}{cells[2]}")


def tau_one(spark):
    df, x, y, xt, yt = mnist_frame(spark)
    fit_once(spark, df.select("*"), "auto")          # warm the Python workers up
    local = single_process_seconds(x, y)
    print(f"(c) sync, frequency 'batch' (tau = 1), MNIST 5k MLP, 10 epochs, 2 workers; "
          f"single-process fit {local:.3f} s (median of 5)")
    for execution, aggregate in (("auto", "weights"), ("auto", "gradients"), ("rounds", "weights")):
        seconds, history, model = fit_once(spark, df.select("*"), execution, "batch", aggregate)
        accuracy = model.evaluate(xt, yt)["accuracy"]
        rounds = history.rounds
        label = ("one job per fit" if execution == "auto" else "one job per round") + f", {aggregate}"
        print(f"    {label:<28} {len(rounds)} rounds in {seconds:6.2f} s: factor {seconds / local:5.2f}; "
              f"per round {statistics.median(r['seconds'] for r in rounds) * 1e3:6.2f} ms, compute "
              f"{statistics.median(r['compute_seconds'] for r in rounds) * 1e3:5.2f} ms; "
              f"data preparation {history.data_seconds:.2f} s; test accuracy {accuracy:.4f}")


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
    print(f"(d) LeNet throughput, MNIST 5k, batch 64, {epochs} epochs (+1 in the Spark fit)")
    print(f"    engine, one process, 2 threads   {local_rate:8.0f} samples/s")
    print(f"    SparkModel rounds, 2 workers     {spark_rate:8.0f} samples/s   ratio {spark_rate / local_rate:.2f}")
    print(f"    whole fit incl. data preparation {whole:8.0f} samples/s   ratio {whole / local_rate:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="a,b,c,d")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--lenet-epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="warm runs of (a)")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    print(f"# spark_overhead: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    spark = session()
    if "a" in args.parts:
        overhead_factor(spark, args.repeats)
    if "b" in args.parts:
        fixed_cost(spark, args.rounds)
    if "c" in args.parts:
        tau_one(spark)
    if "d" in args.parts:
        lenet_throughput(spark, args.lenet_epochs)
    spark.stop()


if __name__ == "__main__":
    main()
