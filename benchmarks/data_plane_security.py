"""What protecting the data plane costs: frames as they are ("plain"), with per-frame tags
("integrity", HMAC-SHA256) and encrypted ("encrypted", AES-256-GCM), side by side in one run.

(0) The primitives on one 40 MB vector (10 M float32) in this process: HMAC-SHA256, keyed
    BLAKE2b (the candidates for the tags) and AES-256-GCM, best of 5.
(a) A sync round's data-plane traffic at 1 M and 10 M float32 parameters on loopback: the
    driver's round exchange (``RoundExchange`` behind a ``FrameServer``, the service of the
    socket data plane) and 2 clients in separate processes, each pulling the round's vector
    and pushing it back (``exchange.pull`` / ``exchange.push``, as a task does). Per round:
    from opening it to both pushes received; the modes take turns round by round.
(b) A real 10 M-parameter sync round: ``SparkModel.fit`` on local[2] in one job (dense
    3000-3300-10, 2 workers), round times from the history (median over the rounds after
    the first), with the fit's data plane in each mode in turn (the benchmark sets the mode
    that ``spark.sparkdl.dataPlane.integrity`` and Spark's encryption settings would choose).
    Two kinds of round: frequency "batch" with 8-row batches (almost all communication; 8
    rounds per fit) and frequency "epoch" with 8 steps of 64 rows per round (6 per fit).

    python benchmarks/data_plane_security.py [--parts 0,a,b] [--rounds 12] [--epochs 6] [--repeats 3]
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import multiprocessing
import os
import platform
import statistics
import sys
import time

import numpy as np

MODES = ("plain", "integrity", "encrypted")


def best_of(fn, n=5):
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def primitives():
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    data = memoryview(np.random.default_rng(0).random(10_000_000, dtype=np.float32)).cast("B")
    key = os.urandom(32)
    out = memoryview(bytearray(1 << 20))

    def gcm():
        enc = Cipher(algorithms.AES(key), modes.GCM(bytes(12))).encryptor()
        for lo in range(0, len(data), 1 << 20):
            enc.update_into(data[lo:lo + (1 << 20)], out)
        enc.finalize()
    print("(0) primitives on 40 MB (10 M float32), best of 5, one thread")
    for name, fn in (("HMAC-SHA256", lambda: hmac.new(key, data, hashlib.sha256).digest()),
                     ("keyed BLAKE2b-256", lambda: hashlib.blake2b(data, key=key, digest_size=32).digest()),
                     ("AES-256-GCM (encrypt)", gcm)):
        seconds = best_of(fn)
        print(f"    {name:<22} {seconds * 1e3:7.1f} ms   {len(data) / seconds / 1e9:5.2f} GB/s")


def client(commands, done, partition):
    """A task's side of each round: pull the vector, push it back."""
    from sparkdl.distributed import exchange
    for end, round_index in iter(commands.get, None):
        parts, _ = exchange.pull(end, round_index)
        exchange.push(end, round_index, partition, 0, 1, {"weights": parts["weights"]})
        done.put(partition)


def traffic(rounds):
    from sparkdl.distributed import exchange, protocol
    from sparkdl.distributed.server import FrameServer

    ctx = multiprocessing.get_context("spawn")
    commands, done = [ctx.Queue() for _ in range(2)], ctx.Queue()
    procs = [ctx.Process(target=client, args=(commands[p], done, p), daemon=True) for p in range(2)]
    for proc in procs:
        proc.start()
    print(f"(a) a sync round's data-plane traffic: 2 client processes each pull and push the vector "
          f"over loopback; median of {rounds} rounds per mode (modes in turn)")
    print("    params  " + "".join(f"{m:>22}" for m in MODES) + "   integrity / plain   encrypted / plain")
    try:
        for label, size in (("1M", 1_000_000), ("10M", 10_000_000)):
            layout = exchange.Layout(("weights",), (size,), (True,))
            payload = np.random.default_rng(1).random(size, dtype=np.float32)
            token = protocol.new_token()
            services = {m: exchange.RoundExchange(layout, timeout=60) for m in MODES}
            servers = {m: FrameServer(services[m], token, timeout=60, security=m) for m in MODES}
            try:
                times: dict[str, list[float]] = {m: [] for m in MODES}
                for r in range(rounds + 1):                 # round 0 warms each mode up
                    order = MODES[r % 3:] + MODES[:r % 3]
                    for mode in order:
                        end = exchange.Endpoint(servers[mode].address, token, 60.0, layout, layout, mode)
                        start = time.perf_counter()
                        services[mode].open_round(r, payload, {"iterations": 0}, partitions={0: 1, 1: 1})
                        for queue in commands:
                            queue.put((end, r))
                        for _ in range(2):
                            done.get(timeout=120)
                        total, received = services[mode].close_round()
                        if r:
                            times[mode].append(time.perf_counter() - start)
                        assert received == {0: 1, 1: 1}
            finally:
                for server in servers.values():
                    server.close()
            med = {m: statistics.median(times[m]) for m in MODES}
            print(f"    {label:>6}  " + "".join(f"{med[m] * 1e3:19.1f} ms" for m in MODES) +
                  f"   {med['integrity'] / med['plain']:17.2f}   {med['encrypted'] / med['plain']:17.2f}")
    finally:
        for queue in commands:
            queue.put(None)
        for proc in procs:
            proc.join(30)


def real_rounds(epochs, repeats):
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from sparkdl import layers
    from sparkdl.models import Sequential
    from sparkdl.spark import SparkModel, from_arrays, get_session, transports

    spark = get_session("local[2]", app_name="sparkdl-bench-security", conf={"spark.ui.enabled": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    rng = np.random.default_rng(0)
    kinds = (("frequency 'batch', 8 rows", "batch", 8, 128), ("frequency 'epoch', 8 x 64 rows", "epoch", 64, 1024))
    print(f"(b) a real 10 M-parameter sync round: SparkModel.fit on local[2], one job, 2 workers, "
          f"median round time after each fit's first round (modes in turn, {repeats} fits each)")
    print("    round kind                      " + "".join(f"{m:>15}" for m in MODES) +
          "   integrity / plain   encrypted / plain")
    for label, frequency, batch, rows in kinds:
        df = from_arrays(spark, rng.random((rows, 3000), dtype=np.float32), rng.integers(0, 10, rows),
                         num_partitions=2).cache()
        df.count()
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for repeat in range(repeats + 1):               # repeat 0 warms the workers up
            for mode in MODES:
                transports.data_plane_security = lambda conf, mode=mode: mode
                model = Sequential([layers.Input((3000,)), layers.Dense(3300, activation="relu"),
                                    layers.Dense(10, activation="softmax")])
                model.compile("sgd", "sparse_categorical_crossentropy")
                history = SparkModel(model, frequency=frequency, num_workers=2).fit(
                    df, epochs=epochs if frequency == "epoch" else 1, batch_size=batch, verbose=0)
                if repeat:
                    times[mode] += [r["seconds"] for r in history.rounds[1:]]
        df.unpersist()
        med = {m: statistics.median(times[m]) for m in MODES}
        print(f"    {label:<32}" + "".join(f"{med[m] * 1e3:12.1f} ms" for m in MODES) +
              f"   {med['integrity'] / med['plain']:17.2f}   {med['encrypted'] / med['plain']:17.2f}")
    print(f"    ({model.count_params():,} parameters)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="0,a,b")
    parser.add_argument("--rounds", type=int, default=12, help="rounds per mode and size in (a)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per fit in (b), frequency 'epoch'")
    parser.add_argument("--repeats", type=int, default=3, help="fits per mode and round kind in (b)")
    args = parser.parse_args()
    print(f"# data_plane_security: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    if "0" in args.parts:
        primitives()
    if "a" in args.parts:
        traffic(args.rounds)
    if "b" in args.parts:
        real_rounds(args.epochs, args.repeats)


if __name__ == "__main__":
    main()
