"""Sync against the parameter-server modes on one job, and what one push costs the server.

(a) The MNIST 5k MLP (784-256-128-10, SGD 0.05 momentum 0.9, batch 64), 2 workers on
    local[2], 10 epochs: sync, async, hogwild, ssp (staleness 2), adag and easgd (sync
    variant with the default alpha 0.9 / 2 and with rho 2, i.e. alpha 0.1; async variant),
    each at frequency "epoch" (the default: one round, push or exchange per pass) and
    "batch" (one per step), the synchronous EASGD rows also at tau 4; seeds 0-2.
    For each: mean and min test accuracy over the seeds, samples/s over the training rounds,
    and the time until the test accuracy (checked after each epoch) first reaches 0.92 (data
    preparation plus the rounds up to that epoch).
(b) The parameter server's cost per push for models of 1 M and 10 M parameters: clients in
    threads of this process push deltas over loopback, in plain frames, in frames with
    integrity tags (the default), and int8-compressed with tags; per push, the round trip
    seen by a client and the server's time to apply it (async: under the lock; hogwild:
    without; decoding not included).

    python benchmarks/async_modes.py [--parts a,b] [--seeds 3] [--pushes 20]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time

import numpy as np


def modes_on_one_job(epochs, seeds):
    from mnist_bench import mnist_on_local2

    from sparkdl.spark import SparkModel
    spark, df, x_test, y_test, model = mnist_on_local2("sparkdl-bench-async")

    modes = [("sync", {}), ("async", {}), ("hogwild", {}), ("ssp", {"staleness": 2}), ("adag", {}),
             ("easgd", {}), ("easgd", {"rho": 2.0}), ("easgd", {"variant": "async"})]
    # Warm the application up (Python workers, Arrow) so that no mode pays for it.
    SparkModel(model(0), frequency="epoch", num_workers=2).fit(df, epochs=1, verbose=0)
    print(f"(a) MNIST 5k MLP, 2 workers, local[2], {epochs} epochs, batch 64, seeds {list(seeds)}")
    print("    mode         frequency  accuracy mean / min   samples/s  time to 0.92 (median)")
    for mode, options in modes:
        name = mode + "".join(f"/{v}" if k == "variant" else f" {k} {v:g}" for k, v in options.items()
                              if k != "staleness")
        for frequency in ("epoch", "batch") + ((4,) if mode == "easgd" and "variant" not in options else ()):
            accuracies, rates, reaches = [], [], []
            for seed in seeds:
                history = SparkModel(model(seed), mode=mode, frequency=frequency, num_workers=2, seed=seed,
                                     **options).fit(df, epochs=epochs, batch_size=64, verbose=0,
                                                    validation_data=(x_test, y_test))
                accuracies.append(history.history["val_accuracy"][-1])
                rounds = history.rounds
                rates.append(sum(r["samples"] for r in rounds) / sum(r["seconds"] for r in rounds))
                reaches.append(_time_to(history, epochs, 0.92))
            reached = [t for t in reaches if t is not None]
            reach = f"{statistics.median(reached):6.2f} s" if len(reached) == len(reaches) else \
                f"{len(reached)}/{len(reaches)} seeds reach it"
            print(f"    {name:12s} {str(frequency):9s} {statistics.mean(accuracies):8.4f} / {min(accuracies):.4f}"
                  f"   {statistics.median(rates):10.0f}  {reach:>14s}")
    spark.stop()


def _time_to(history, epochs, target):
    """Seconds of data preparation and rounds until the first epoch whose test accuracy
    (checked after each epoch, outside the rounds) reaches ``target``; None if none does."""
    rounds, elapsed = history.rounds, history.data_seconds
    per_epoch = len(rounds) // epochs
    for epoch, accuracy in enumerate(history.history["val_accuracy"]):
        elapsed += sum(r["seconds"] for r in rounds[epoch * per_epoch:(epoch + 1) * per_epoch])
        if accuracy >= target:
            return elapsed
    return None


def push_cost(pushes):
    print(f"(b) parameter server cost per push, 2 clients in threads, {pushes} pushes each, loopback")
    print("    model  mode      frames     vectors  round trip per push (median)  server apply per push")
    for label, size in (("1M", 1_000_000), ("10M", 10_000_000)):
        for mode in ("async", "hogwild"):
            for security, compression in (("plain", None), ("integrity", None), ("integrity", "int8")):
                times, apply = _pushes(size, mode, security, compression, pushes)
                print(f"    {label:5s}  {mode:8s}  {security:9s}  {compression or 'float32':7s}"
                      f"  {statistics.median(times) * 1000:10.1f} ms               {apply * 1000:8.1f} ms")


def _pushes(size, mode, security, compression, pushes):
    """Round trips of ``pushes`` pushes from each of 2 client threads, and the server's time
    to apply one (decoding included when pushes are compressed)."""
    from sparkdl.distributed import parameter_server, protocol
    from sparkdl.distributed.server import FrameServer

    ps = parameter_server.ParameterServer(np.zeros(size, np.float32), mode=mode,
                                          rows={0: 64 * pushes, 1: 64 * pushes}, compression=compression)
    token = protocol.new_token()
    times = []
    lock = threading.Lock()
    with FrameServer(ps, token, security=security) as server:
        def client(partition):
            c = parameter_server.Client(server.address, token, 60, 0, partition, 0, size,
                                        security, compression)
            update = np.full(size, 1e-3, np.float32)
            c.start()
            for k in range(pushes):
                t = time.perf_counter()
                c.push(k, 64, update)
                with lock:
                    times.append(time.perf_counter() - t)
            c.done()
            c.close()
        threads = [threading.Thread(target=client, args=(p,)) for p in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return times, ps.stats["apply_seconds"] / ps.stats["pushes"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="a,b")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 per mode and frequency")
    parser.add_argument("--pushes", type=int, default=20)
    args = parser.parse_args()
    print(f"# async_modes: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    if "a" in args.parts:
        modes_on_one_job(args.epochs, range(args.seeds))
    if "b" in args.parts:
        push_cost(args.pushes)


if __name__ == "__main__":
    main()
