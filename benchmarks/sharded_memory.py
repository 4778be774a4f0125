"""The driver's resident memory during a sharded fit, against the model's size.

``zoo.wide_and_deep(num_ids=...)`` over click data (26 categorical fields, 13 dense), two
workers on ``local[2]``, mode async (a push every ``tau`` steps): the driver process's
resident memory (``VmRSS``, sampled every 20 ms by a thread) before the model is built, once
it is built, at its highest while training (from the first epoch's start, the fit's
servers set up, until ``on_train_end``), and after the fit (a sharded fit's model comes
back into memory at its end), for ``num_servers=K`` (the
driver's model in files while the fit runs, the shards in the tasks) and, unless
``--skip-whole``, for ``num_servers=0`` (the driver's parameter server), each fit in a new
Python process so that one's peak does not hide the other's.

    python benchmarks/sharded_memory.py [--num-ids 4194304] [--rows 20000] [--shards 2] [--skip-whole]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
from driver_memory import rss_mb, training_peak

CARDINALITIES = tuple(int(c) for c in np.geomspace(4, 200_000, 26))


def one_fit(num_ids: int, rows: int, shards: int, tau: int) -> dict:
    from sparkdl.data.synthetic import click_data
    from sparkdl.engine import optimizers, zoo
    from sparkdl.engine.random import set_random_seed
    from sparkdl.spark import SparkModel, get_session
    spark = get_session("local[2]", app_name="sparkdl-sharded-memory", conf={"spark.ui.enabled": "false"})
    data = click_data(rows, seed=0, cardinalities=CARDINALITIES, crosses=(), num_dense=13, num_ids=num_ids)
    rdd = spark.sparkContext.parallelize(
        [((i, d), float(y)) for i, d, y in zip(data.ids, data.dense, data.label)], 2).cache()
    rdd.count()
    before = rss_mb()
    set_random_seed(0)
    model = zoo.wide_and_deep(num_ids=num_ids, num_fields=26, num_dense=13, embedding_dim=8)
    model.compile(optimizer=optimizers.SGD(0.05), loss="binary_crossentropy")
    built = rss_mb()
    callback, training = training_peak()
    start = time.perf_counter()
    SparkModel(model, mode="async", frequency=tau, num_workers=2, num_servers=shards).fit(
        rdd, epochs=2, batch_size=256, verbose=0, callbacks=[callback])
    seconds = time.perf_counter() - start
    spark.stop()
    return {"model_mb": 4 * (model.flat_weights.size + model.flat_state.size) / 2**20, "before": before,
            "built": built, "training": training[0], "after": rss_mb(), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-ids", type=int, default=2**22)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--tau", type=int, default=4)
    parser.add_argument("--skip-whole", action="store_true", help="only the sharded fit")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)    # (a child's fit)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_fit(args.num_ids, args.rows, args.one, args.tau)))
        return
    print(f"sparkdl sharded memory benchmark: {platform.machine()}, {os.cpu_count()} cores, local[2], "
          f"wide_and_deep(num_ids={args.num_ids}), {args.rows} rows, 2 epochs, mode async, tau {args.tau}")
    for k in ([args.shards] if args.skip_whole else [args.shards, 0]):
        out = subprocess.run([sys.executable, __file__, "--num-ids", str(args.num_ids), "--rows", str(args.rows),
                              "--tau", str(args.tau), "--one", str(k)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        held = r["training"] - r["before"]
        print(f"  num_servers={k}: model {r['model_mb']:.0f} MB; driver RSS before the model {r['before']:.0f} MB, "
              f"built {r['built']:.0f}, peak while training {r['training']:.0f} ({held:+.0f} over the driver "
              f"without the model = {held / r['model_mb']:.2f} x the model), after the fit {r['after']:.0f}; "
              f"fit {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
