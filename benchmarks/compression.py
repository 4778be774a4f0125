"""Compressed vectors against float32, mode by mode: accuracy and bytes.

The MNIST 5k MLP (784-256-128-10, SGD 0.05 momentum 0.9, batch 64), 2 workers on local[2],
10 epochs, seeds 0-2, for each training setting with ``compression=None``, ``"fp16"`` and
``"int8"``: mean and lowest test accuracy over the seeds, the difference of the mean from
float32's, and the bytes one round (sync) or one epoch (parameter-server modes) moved,
as counted where they travel (``history.rounds``: ``bytes``, and ``ring_bytes`` for
``transport="allreduce"``), with their ratio to float32's.

    python benchmarks/compression.py [--seeds 3] [--epochs 10] [--only sync,async]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

SETTINGS = [
    ("sync", "epoch", {}),
    ("sync", 4, {}),
    ("sync", "batch", {"aggregate": "gradients"}),
    ("sync", "epoch", {"transport": "allreduce"}),
    ("sync", "batch", {"transport": "allreduce", "aggregate": "gradients"}),
    ("async", "epoch", {}),
    ("hogwild", "epoch", {}),
    ("ssp", "epoch", {"staleness": 1}),
    ("adag", "batch", {}),
    ("easgd", "epoch", {"variant": "async"}),
]
CODECS = (None, "fp16", "int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--only", default="", help="comma-separated modes to run (default: all)")
    args = parser.parse_args()
    from mnist_bench import mnist_on_local2

    from sparkdl.spark import SparkModel
    spark, df, x_test, y_test, model = mnist_on_local2("sparkdl-bench-compression")

    only = {m for m in args.only.split(",") if m}
    seeds = range(args.seeds)
    SparkModel(model(0), num_workers=2).fit(df, epochs=1, verbose=0)      # warm the workers up
    print(f"sparkdl compression benchmark: {platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}, MNIST 5k MLP, 2 workers, local[2], {args.epochs} epochs, "
          f"seeds {list(seeds)}")
    print("  setting                               codec  accuracy mean / min  vs float32  "
          "bytes per round   ratio")
    for mode, frequency, options in SETTINGS:
        if only and mode not in only:
            continue
        name = f"{mode} {frequency}" + "".join(f" {k}={v}" for k, v in options.items())
        base_mean, base_bytes = None, None
        for codec in CODECS:
            accuracies, moved = [], []
            for seed in seeds:
                net = model(seed)
                history = SparkModel(net, mode=mode, frequency=frequency, num_workers=2, seed=seed,
                                     compression=codec, **options).fit(df, epochs=args.epochs, batch_size=64,
                                                                       verbose=0)
                accuracies.append(net.evaluate(x_test, y_test)["accuracy"])
                key = "ring_bytes" if options.get("transport") == "allreduce" else "bytes"
                moved.append(statistics.median(r[key] for r in history.rounds[1:] or history.rounds))
            mean, per_round = statistics.mean(accuracies), statistics.median(moved)
            if codec is None:
                base_mean, base_bytes = mean, per_round
            assert base_mean is not None and base_bytes is not None
            print(f"  {name:<38} {codec or 'none':<5}  {mean:.4f} / {min(accuracies):.4f}     "
                  f"{100 * (mean - base_mean):+.2f} pt   {per_round / 1e6:10.3f} MB  {per_round / base_bytes:6.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
