"""Sync gradient rounds with the model in shards in the fit's tasks against the driver's rounds.

``zoo.wide_and_deep(num_ids=N)`` over click data with 9 categorical fields and 4 dense
features, on ``local[2]``: two workers train sync rounds of gradients (SGD without momentum,
``frequency`` steps a round) with ``num_servers=0`` (the driver's round exchange: each task
pulls the whole vector and pushes a whole gradient sum, the driver steps), with
``num_servers=1`` and ``K`` (row-sparse pulls and pushes to shards hosted by the tasks, which
step), and with ``K`` and a callback that watches rounds (the driver takes the shards' values
after every round). The fits run in turns, ``--repeats`` times, so load on the machine hits
all alike. Prints per fit the median seconds of a round and its compute (the first round of
each fit, which starts the job, left out), the bytes a round moves (``history.rounds``), the
ratio to ``num_servers=0``, and whether the sharded fits end with its weights (they must,
bit for bit: see ``tests/spark/test_sharded_rounds.py``).

    python benchmarks/sharded_rounds.py [--num-ids 524288] [--rows 2400] [--batch 32] [--tau 1]
                                        [--shards 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics

import numpy as np

from sparkdl.data.synthetic import click_data
from sparkdl.engine import optimizers, zoo
from sparkdl.engine.callbacks import Callback
from sparkdl.engine.random import set_random_seed


class WatchRounds(Callback):
    """A callback with ``on_batch_end``: the driver's model must follow every round."""

    def on_batch_end(self, batch, logs=None):
        pass


def model_of(num_ids: int):
    set_random_seed(0)
    model = zoo.wide_and_deep(num_ids=num_ids, num_fields=9, num_dense=4, embedding_dim=8, hidden=(16,))
    model.compile(optimizer=optimizers.SGD(0.1), loss="binary_crossentropy")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-ids", type=int, default=2**19)
    parser.add_argument("--rows", type=int, default=2400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tau", type=int, default=1)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from sparkdl.spark import SparkModel, get_session
    spark = get_session("local[2]", app_name="sparkdl-sharded-rounds", conf={"spark.ui.enabled": "false"})
    data = click_data(args.rows, seed=0, num_ids=args.num_ids)
    rdd = spark.sparkContext.parallelize(
        [((i, d), float(y)) for i, d, y in zip(data.ids, data.dense, data.label)], 2).cache()
    rdd.count()
    size = model_of(args.num_ids).flat_weights.size
    print(f"sparkdl sharded sync rounds benchmark: {platform.machine()}, {os.cpu_count()} cores, local[2], "
          f"wide_and_deep(num_ids={args.num_ids}), {size:,} weights ({4 * size / 1e6:.0f} MB); {args.rows} rows "
          f"in 2 partitions, batch {args.batch}, tau {args.tau}, mode sync, aggregate gradients, 2 epochs")
    fits = [(0, False), (1, False), (args.shards, False), (args.shards, True)]
    for repeat in range(args.repeats):
        reference = None
        base = None
        for k, watch in fits:
            model = model_of(args.num_ids)
            history = SparkModel(model, mode="sync", aggregate="gradients", frequency=args.tau, num_workers=2,
                                 num_servers=k).fit(rdd, epochs=2, batch_size=args.batch, verbose=0,
                                                    callbacks=[WatchRounds()] if watch else None)
            rounds = history.rounds[1:]
            seconds = statistics.median(r["seconds"] for r in rounds)
            compute = statistics.median(r["compute_seconds"] for r in rounds)
            moved = statistics.median(r["bytes"] for r in rounds)
            if k == 0:
                reference, base = model.get_flat_weights(), seconds
            same = "" if k == 0 else f"; weights equal num_servers=0: {np.array_equal(model.flat_weights, reference)}"
            print(f"  [{repeat + 1}] num_servers={k}{' + a callback watching rounds' if watch else ''}: "
                  f"{len(history.rounds)} rounds, median round {seconds * 1e3:.1f} ms (compute "
                  f"{compute * 1e3:.1f} ms, {base / seconds:.1f}x num_servers=0), {moved:,.0f} B moved a round"
                  f"{same}", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
