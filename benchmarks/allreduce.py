"""Ring all-reduce between the tasks against the driver hub, on local[2].

A ~10M-parameter MLP (3000-3300-10, plain SGD), 2 workers, frequency "batch" (one step of
8 rows per partition and round, so the round is almost all communication), 16 rounds per
epoch. For each transport: the median round time over the ordinary rounds (the first round
of the fit, where the ring's tasks take the starting state from the driver, and the last of
each epoch, where the driver takes it back, are reported apart), and the bytes of vectors
through the driver per round. The transports alternate, ``--repeats`` fits each, so the
machine's noise falls on both; the final weights are compared bit for bit.

    python benchmarks/allreduce.py [--repeats 3] [--epochs 2] [--security integrity|plain|encrypted]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np


def session(security):
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from sparkdl.spark import get_session
    conf = {"spark.ui.enabled": "false",
            "spark.sparkdl.dataPlane.integrity": "false" if security == "plain" else "true",
            "spark.sparkdl.dataPlane.encryption": "true" if security == "encrypted" else "false"}
    spark = get_session("local[2]", app_name="sparkdl-bench-allreduce", conf=conf)
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def model(width, hidden):
    import sparkdl
    from sparkdl import layers
    from sparkdl.models import Sequential
    sparkdl.set_random_seed(0)
    m = Sequential([layers.Input((width,)), layers.Dense(hidden, activation="relu"),
                    layers.Dense(10, activation="softmax")])
    m.compile("sgd", "sparse_categorical_crossentropy")
    return m


def fit(df, transport, width, hidden, epochs):
    from sparkdl.spark import SparkModel
    m = model(width, hidden)
    start = time.perf_counter()
    history = SparkModel(m, frequency="batch", num_workers=2, transport=transport).fit(
        df, epochs=epochs, batch_size=8, verbose=0)
    return m, history, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=3000)
    parser.add_argument("--hidden", type=int, default=3300)
    parser.add_argument("--security", choices=("integrity", "plain", "encrypted"), default="integrity",
                        help="the data plane's protection mode, on the driver's and on the tasks' sockets")
    args = parser.parse_args()
    from sparkdl.spark import from_arrays
    spark = session(args.security)
    rng = np.random.default_rng(0)
    df = from_arrays(spark, rng.random((256, args.width), dtype=np.float32), rng.integers(0, 10, 256),
                     num_partitions=2).cache()
    df.count()
    print(f"# allreduce: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    fit(df, "socket", args.width, args.hidden, 1)        # warm the Python workers up
    per = {"socket": [], "allreduce": []}
    firsts = {"socket": [], "allreduce": []}
    ends = {"socket": [], "allreduce": []}
    driver = {"socket": [], "allreduce": []}
    fits = {"socket": [], "allreduce": []}
    ordinary_bytes = {"socket": [], "allreduce": []}
    weights = {}
    params = 0
    for _ in range(args.repeats):
        for transport in ("socket", "allreduce"):
            m, history, seconds = fit(df, transport, args.width, args.hidden, args.epochs)
            params = m.count_params()
            rounds = history.rounds
            per_epoch = len(rounds) // args.epochs
            for i, r in enumerate(rounds):
                if i == 0:
                    firsts[transport].append(r["seconds"])
                elif (i + 1) % per_epoch == 0:
                    ends[transport].append(r["seconds"])
                else:
                    per[transport].append(r["seconds"])
                    ordinary_bytes[transport].append(r["bytes"])
            driver[transport].append(sum(r["bytes"] for r in rounds) / len(rounds))
            fits[transport].append(seconds)
            weights[transport] = m.get_flat_weights()
    med = {k: statistics.median(v) for k, v in per.items()}
    print(f"{params:,} parameters ({params * 4 / 1e6:.1f} MB of float32), 2 workers, frequency 'batch' "
          f"(8 rows), {per_epoch} rounds an epoch x {args.epochs} epochs x "
          f"{args.repeats} fits per transport, alternating, {args.security!r} frames; load average after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("                                  hub (socket)     allreduce     allreduce / hub")
    print(f"  round, median of ordinary    {med['socket'] * 1e3:9.1f} ms  {med['allreduce'] * 1e3:9.1f} ms"
          f"      {med['allreduce'] / med['socket']:.2f}")
    for name, data in (("first round of a fit", firsts), ("last round of an epoch", ends)):
        a, b = statistics.median(data["socket"]), statistics.median(data["allreduce"])
        print(f"  {name:<28} {a * 1e3:9.1f} ms  {b * 1e3:9.1f} ms      {b / a:.2f}")
    a, b = statistics.median(fits["socket"]), statistics.median(fits["allreduce"])
    print(f"  whole fit, median             {a:9.2f} s   {b:9.2f} s       {b / a:.2f}")
    a, b = statistics.median(driver["socket"]), statistics.median(driver["allreduce"])
    print(f"  driver bytes per round, mean {a / 1e6:9.1f} MB  {b / 1e6:9.2f} MB     {b / a:.3f}")
    a, b = max(ordinary_bytes["socket"]), max(ordinary_bytes["allreduce"])
    print(f"  driver bytes, ordinary round {a / 1e6:9.1f} MB  {b / 1e6:9.2f} MB     {b / a:.3f} "
          f"(vectors; besides, each task's order and report, under 1 kB)")
    print(f"  final weights bit-identical: {np.array_equal(weights['socket'], weights['allreduce'])}")
    spark.stop()


if __name__ == "__main__":
    main()
