"""A Spark fit with the parameter server's shards in its tasks against the driver's server.

``zoo.wide_and_deep(num_ids=2**22)`` over synthetic click data with 26 categorical fields and
13 dense features, on ``local[2]``: two workers train in mode async (``aggregate="gradients"``:
each pushes the gradient sum of ``tau`` batches and the server's optimizer, Adagrad by
default, steps with per-row slots) once with ``num_servers=K`` (row-sparse traffic to K shards
hosted by the fit's tasks) over all the training rows, then once with ``num_servers=0`` (the
driver's parameter server, whole-vector pulls and pushes) over the first ``--whole-rows`` of
them, since a whole-vector push moves the 151 MB model. Prints per fit the bytes of a push and
a pull (``history.rounds``) against the bound ``2 x touched rows x dim x 4 B + dense`` of the
rows a push's steps read (counted from the data), samples/s of the last epoch (a rate, so the
two fits compare over different row counts), the AUC on held-out rows against that of the
generating model's probabilities on the same rows, the driver process's resident memory
before the model is built and at its highest while training (``driver_memory``), its peak
so far, and that of the JVM (which holds the executors on ``local[2]``).

The data: ``click_data(..., zipf=1.1, rarity_decay=0.3, weight_scale=0.35, bias=-2.3,
dense_scale=0.2)``. Field f has ``geomspace(4, 200000, 26)[f]`` values drawn Zipf-like (the
k-th with probability proportional to ``(k + 1) ** -1.1``), each hashed to an id in
``[0, 2**22)``; the true click logit is ``-2.3 + sum over fields of w[id] * (p / p_max) ** 0.3
+ dense @ v`` with ``w ~ N(0, 0.35)`` per id and ``v ~ N(0, 0.2)``: a value's weight shrinks
with its popularity ``p`` relative to its field's most popular value, so most of the signal
sits on ids that 1M rows show often. The click rate is about 21% and the generating model's
AUC about 0.80, in the range of real click-through data. Rows and truth come from one draw
(``seed``); the held-out rows are the draw's last ``--test-rows``.

The rows reach Spark as a parquet file (written with pyarrow into a temporary directory by a
child process, so that the driver's peak memory is the fit's and not the generator's), read
with ``spark.read.parquet`` and turned into an RDD of ``((ids, dense), label)`` pairs on the
executors: ``SparkModel.fit`` takes DataFrames for single-input models only.

    python benchmarks/sharded_fit.py [--rows 1000000] [--whole-rows 50000] [--test-rows 100000]
                                     [--num-ids 4194304] [--batch 256] [--tau 4] [--shards 2]
                                     [--epochs 3] [--whole-epochs 2] [--optimizer adagrad]
                                     [--lr 0.1] [--dim 8] [--skip-whole]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import tempfile
import time

import numpy as np
from driver_memory import rss_mb, training_peak

from sparkdl.data.synthetic import click_data
from sparkdl.distributed.sparse import ParamMap
from sparkdl.engine import optimizers, zoo
from sparkdl.engine.random import set_random_seed

CARDINALITIES = tuple(int(c) for c in np.geomspace(4, 200_000, 26))
TRUTH = dict(zipf=1.1, rarity_decay=0.3, weight_scale=0.35, bias=-2.3, dense_scale=0.2)
OPTIMIZERS = {"sgd": optimizers.SGD, "adagrad": optimizers.Adagrad, "ftrl": optimizers.Ftrl}


def auc(y, p) -> float:
    ranks = np.argsort(np.argsort(p, kind="stable")) + 1.0
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def model_of(args):
    set_random_seed(0)
    model = zoo.wide_and_deep(num_ids=args.num_ids, num_fields=26, num_dense=13, embedding_dim=args.dim)
    model.compile(optimizer=OPTIMIZERS[args.optimizer](args.lr), loss="binary_crossentropy")
    return model


def write_parquet(table_rows, path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids, dense, label = table_rows
    table = pa.table({
        "ids": pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1)), ids.shape[1]).cast(pa.list_(pa.int64())),
        "dense": pa.FixedSizeListArray.from_arrays(pa.array(dense.reshape(-1)), dense.shape[1])
        .cast(pa.list_(pa.float32())),
        "label": pa.array(label.astype(np.float64))})
    pq.write_table(table, path, row_group_size=100_000)


def prepare(args, folder: str) -> None:
    """(In a child process) draw the rows, write the training rows (and the whole-vector fit's
    first rows) as parquet, the held-out rows as .npz, and the rows a push reads as JSON."""
    data = click_data(args.rows + args.test_rows, seed=0, cardinalities=CARDINALITIES, crosses=(), num_dense=13,
                      num_ids=args.num_ids, **TRUTH)
    train, test = data.split(args.rows)
    write_parquet((train.ids, train.dense, train.label), os.path.join(folder, "train.parquet"))
    w = min(args.whole_rows, args.rows)
    write_parquet((train.ids[:w], train.dense[:w], train.label[:w]), os.path.join(folder, "whole.parquet"))
    np.savez(os.path.join(folder, "test.npz"), ids=test.ids, dense=test.dense, label=test.label,
             probability=test.probability)
    # The rows a push of tau steps reads, on average: unique ids of tau x batch consecutive rows
    # (the rows are independent draws, so any tau x batch of them is a sample like a worker's).
    stretch = args.tau * args.batch
    touched = float(np.mean([len(np.unique(train.ids[a:a + stretch]))
                             for a in range(0, args.rows - stretch + 1, stretch)]))
    with open(os.path.join(folder, "stats.json"), "w") as f:
        json.dump({"touched": touched, "ctr": float(train.label.mean())}, f)


def pairs(spark, path: str):
    """An RDD of ``((ids, dense), label)`` pairs from a parquet file, built on the executors."""
    def to_pair(row):
        return (np.asarray(row.ids, dtype=np.int64), np.asarray(row.dense, dtype=np.float32)), row.label
    # Two partitions of equal size, one per worker: a file of a few row groups is read as one
    # or two uneven partitions, and repartitioning its RDD of pickled batches can leave one empty.
    return spark.read.parquet(path).repartition(2).rdd.map(to_pair)


def peak_mb(pid: int | None = None) -> float:
    """Peak resident memory in MB: this process's, or (from /proc) process ``pid``'s."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def fit(spark, args, k: int, path: str, epochs: int, test) -> float:
    from sparkdl.spark import SparkModel

    before = rss_mb()
    model = model_of(args)
    callback, training = training_peak()
    start = time.perf_counter()
    history = SparkModel(model, mode="async", frequency=args.tau, num_workers=2, num_servers=k,
                         aggregate="gradients").fit(pairs(spark, path), epochs=epochs, batch_size=args.batch,
                                                    verbose=0, callbacks=[callback])
    wall = time.perf_counter() - start
    score = auc(test["label"], model.predict([test["ids"], test["dense"]], batch_size=4096).reshape(-1))
    rates = ", ".join(f"{r['samples_per_second']:,.0f}" for r in history.rounds)
    last = history.rounds[-1]
    gateway = getattr(spark.sparkContext._gateway, "proc", None)
    jvm = f"; JVM peak RSS {peak_mb(gateway.pid):,.0f} MB" if gateway is not None else ""
    pull = last["bytes_pulled"] / max(last["pulls"], 1)
    print(f"  num_servers={k}: {last['samples']:,} rows/epoch x {epochs}; bytes per push "
          f"{last['bytes_pushed'] / last['pushes']:,.0f}, per pull {pull:,.0f}; "
          f"samples/s per epoch {rates}; AUC {score:.4f}; fit {wall:,.0f} s; driver RSS before the model "
          f"{before:,.0f} MB, peak while training {training[0]:,.0f} MB ({training[0] - before:+,.0f}), peak so far "
          f"{peak_mb():,.0f} MB{jvm}", flush=True)
    return last["samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="training rows of the sharded fit")
    parser.add_argument("--whole-rows", type=int, default=50_000, help="training rows of the whole-vector fit")
    parser.add_argument("--test-rows", type=int, default=100_000)
    parser.add_argument("--num-ids", type=int, default=2**22)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--tau", type=int, default=4)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--whole-epochs", type=int, default=2)
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adagrad")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--dim", type=int, default=8, help="embedding_dim")
    parser.add_argument("--skip-whole", action="store_true", help="only the sharded fit")
    args = parser.parse_args()

    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sparkdl-sharded-fit-") as folder:
        child = multiprocessing.get_context("spawn").Process(target=prepare, args=(args, folder))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"generating the data failed (exit code {child.exitcode})")
        with open(os.path.join(folder, "stats.json")) as f:
            stats = json.load(f)
        test = dict(np.load(os.path.join(folder, "test.npz")))
        print(f"data: {time.perf_counter() - begin:.0f} s; driver peak RSS {peak_mb():,.0f} MB", flush=True)

        from sparkdl.spark import get_session
        spark = get_session("local[2]", app_name="sparkdl-sharded-fit", conf={"spark.ui.enabled": "false"})
        m = ParamMap.from_model(model_of(args))
        bound = 2 * stats["touched"] * sum(t.dim for t in m.tables) * 4 + 4 * m.dense_length
        print(f"sparkdl sharded fit benchmark: {platform.machine()}, {os.cpu_count()} cores, local[2], "
              f"wide_and_deep(num_ids={args.num_ids}, embedding_dim={args.dim}), {m.size:,} values "
              f"({4 * m.size / 1e6:.0f} MB); mode async, aggregate gradients, {args.optimizer}({args.lr}), "
              f"batch {args.batch}, tau {args.tau}")
        print(f"  truth {TRUTH}: click rate {stats['ctr']:.3f}; generating model's AUC on {len(test['label']):,} "
              f"held-out rows {auc(test['label'], test['probability']):.4f}; ~{stats['touched']:,.0f} ids per push, "
              f"bound 2 x touched x dim x 4 + dense = {bound:,.0f} B", flush=True)
        # The sharded fit first: the driver's peak memory after it is that fit's.
        sharded = fit(spark, args, args.shards, os.path.join(folder, "train.parquet"), args.epochs, test)
        whole = None if args.skip_whole else fit(spark, args, 0, os.path.join(folder, "whole.parquet"),
                                                 args.whole_epochs, test)
        if whole:
            print(f"  samples/s of the last epoch: sharded {sharded:,.0f} / whole vector {whole:,.0f} = "
                  f"{sharded / whole:.1f}x")
        spark.stop()
    print(f"wall time {time.perf_counter() - begin:,.0f} s; driver peak RSS {peak_mb():,.0f} MB")


if __name__ == "__main__":
    main()
