"""A Spark fit with the parameter server's shards in its tasks against the driver's server.

``zoo.wide_and_deep(num_ids=2**22)`` over click data with 26 categorical fields and 13 dense
features, on ``local[2]``: two workers train in mode async (weight deltas, SGD, a push every
``tau`` steps) once with ``num_servers=0`` (the driver's parameter server, whole-vector pulls
and pushes) and once with ``num_servers=K`` (row-sparse traffic to K shards hosted by the
fit's tasks). Prints per fit the bytes of a push and a pull (``history.rounds``), against the
bound ``2 x touched rows x dim x 4 B + dense`` of the rows a push's steps read (counted from
the data's batch plans), samples/s of the last epoch, the AUC on held-out rows against that
of the generating model's probabilities, and the driver process's peak resident memory.

    python benchmarks/sharded_fit.py [--num-ids 4194304] [--rows 20000] [--batch 256] [--tau 4]
                                     [--shards 2] [--epochs 2] [--skip-whole]
"""
from __future__ import annotations

import argparse
import os
import platform
import resource

import numpy as np

from sparkdl.data.synthetic import click_data
from sparkdl.distributed.sparse import ParamMap
from sparkdl.engine import optimizers, zoo
from sparkdl.engine.random import set_random_seed

CARDINALITIES = tuple(int(c) for c in np.geomspace(4, 200_000, 26))


def auc(y, p) -> float:
    ranks = np.argsort(np.argsort(p, kind="stable")) + 1.0
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def model_of(num_ids: int):
    set_random_seed(0)
    model = zoo.wide_and_deep(num_ids=num_ids, num_fields=26, num_dense=13, embedding_dim=8)
    model.compile(optimizer=optimizers.SGD(0.05), loss="binary_crossentropy")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-ids", type=int, default=2**22)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--tau", type=int, default=4)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--skip-whole", action="store_true", help="only the sharded fit")
    args = parser.parse_args()

    from sparkdl.spark import SparkModel, get_session
    spark = get_session("local[2]", app_name="sparkdl-sharded-fit", conf={"spark.ui.enabled": "false"})
    train = click_data(args.rows, seed=0, cardinalities=CARDINALITIES, crosses=(), num_dense=13,
                       num_ids=args.num_ids)
    # The same ground truth (seed), other rows (the rows are drawn from the seed and their number).
    test = click_data(10001, seed=0, cardinalities=CARDINALITIES, crosses=(), num_dense=13, num_ids=args.num_ids)
    rdd = spark.sparkContext.parallelize(
        [((i, d), float(y)) for i, d, y in zip(train.ids, train.dense, train.label)], 2).cache()
    m = ParamMap.from_model(model_of(args.num_ids))
    # The rows a push of tau steps reads, on average: unique ids of tau x batch consecutive rows.
    stretch = args.tau * args.batch
    touched = np.mean([len(np.unique(train.ids[a:a + stretch])) for a in range(0, args.rows - stretch + 1, stretch)])
    bound = 2 * touched * sum(t.dim for t in m.tables) * 4 + 4 * m.dense_length
    print(f"sparkdl sharded fit benchmark: {platform.machine()}, {os.cpu_count()} cores, local[2], "
          f"wide_and_deep(num_ids={args.num_ids}), {m.size:,} values ({4 * m.size / 1e6:.0f} MB); {args.rows} rows "
          f"in 2 partitions, batch {args.batch}, tau {args.tau}, {args.epochs} epochs, mode async")
    print(f"  generating model's AUC on 10,001 held-out rows: {auc(test.label, test.probability):.4f}; "
          f"~{touched:,.0f} ids per push, bound 2 x touched x dim x 4 + dense = {bound:,.0f} B")
    for k in ([args.shards] if args.skip_whole else [0, args.shards]):
        model = model_of(args.num_ids)
        history = SparkModel(model, mode="async", frequency=args.tau, num_workers=2, num_servers=k).fit(
            rdd, epochs=args.epochs, batch_size=args.batch, verbose=0)
        last = history.rounds[-1]
        score = auc(test.label, model.predict([test.ids, test.dense], batch_size=2048).reshape(-1))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  num_servers={k}: bytes per push {last['bytes_pushed'] / last['pushes']:,.0f}, per pull "
              f"{last['bytes_pulled'] / max(last['pulls'], 1):,.0f}; samples/s {last['samples_per_second']:,.0f}; "
              f"AUC {score:.4f}; driver peak RSS so far {peak:,.0f} MB")
    spark.stop()


if __name__ == "__main__":
    main()
