"""What overlapping communication with compute saves (``SparkModel(..., overlap=True)``).

(a) Time per step at 1 M and 10 M parameters: a Dense model (inputs -> n -> 10, ReLU,
    softmax; n = 1000 or 3150), one worker against a parameter server on loopback in this
    process (integrity-tagged frames, the default, and plain frames), mode async at
    frequency "batch" (a pull and a push of the whole vector per step of batch 64). The worker runs
    ``worker.run_async_epoch`` in lock step and with ``overlap=True`` alternately, the same
    batches each time; per step: the median over the repeats of an epoch's wall time divided
    by its steps, and how much of the step overlap saves; "no server": the same steps
    without any exchange (the compute that the exchanges can hide behind).
(b) Learning: the MNIST 5k MLP (784-256-128-10, SGD 0.05 momentum 0.9, batch 64), 2 workers
    on local[2], 10 epochs, mode async at frequency "epoch" (the default call) and "batch",
    with and without overlap, seeds 0-2: test accuracy per seed and the mean.

(c) Sync rounds of gradient sums (aggregate "gradients", frequency "batch"): a 3-layer Dense
    model (inputs -> n -> n -> 10, n = 700 or 2200: 1 M and 10 M parameters), one task
    pushing to a driver's exchange on loopback in this process; per round, its push packed
    after the round, or streamed during the round's backward, last layer first
    (``PushStream``); the median over the repeats of the wall time per round.

    python benchmarks/overlap.py [--parts a,b,c] [--repeats 5] [--steps 16] [--seeds 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def step_times(hidden: int, inputs: int, steps: int, repeats: int, security: str) -> None:
    from sparkdl import layers, optimizers
    from sparkdl.distributed import protocol, worker
    from sparkdl.distributed.parameter_server import Client, ParameterServer
    from sparkdl.distributed.server import FrameServer
    from sparkdl.models import Sequential

    model = Sequential([layers.Dense(hidden, activation="relu", input_shape=(inputs,)),
                        layers.Dense(10, activation="softmax")])
    model.compile(optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    batch = 64
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(batch * steps, inputs)).astype(np.float32)]
    y = rng.integers(0, 10, size=batch * steps)
    vector = worker.model_vector(model)
    token = protocol.new_token()
    ps = ParameterServer(vector, mode="async", rows={0: len(y)})
    times: dict[bool, list[float]] = {False: [], True: []}
    alone = []          # the same steps without a server: the compute that overlap can hide behind
    with FrameServer(ps, token, timeout=60.0, security=security) as server:
        for run in range(repeats + 1):                 # the first round warms up, not counted
            start = time.perf_counter()
            model.train_epoch(xs, y, batch, (0, 0, 0))
            if run:
                alone.append((time.perf_counter() - start) / steps)
            for overlap in (False, True):
                ps.begin_epoch(2 * run + overlap)
                client = Client(server.address, token, 60.0, 2 * run + overlap, 0, 0, vector.size,
                                server.security)
                spec = worker.RoundSpec(round=0, seed=0, batch_size=batch, frequency="batch",
                                        aggregate="weights", mode="async", overlap=overlap)
                start = time.perf_counter()
                try:
                    worker.run_async_epoch(model, xs, y, spec, 0, client)
                finally:
                    client.close()
                if run:
                    times[overlap].append((time.perf_counter() - start) / steps)
    plain, ahead = statistics.median(times[False]), statistics.median(times[True])
    params = model.count_params()
    print(f"    {params / 1e6:5.2f} M   {security:<9}  {statistics.median(alone) * 1e3:8.1f}   "
          f"{plain * 1e3:8.1f}   {ahead * 1e3:8.1f}   {(plain - ahead) * 1e3:+7.1f} ms   {ahead / plain:6.3f}")


def streamed_rounds(hidden: int, inputs: int, rounds: int, repeats: int) -> None:
    """Sync rounds of gradient sums (one batch of 64 per round) pushed to a driver's exchange
    on loopback: packed after the round, or streamed during its backward (``PushStream``)."""
    from sparkdl import layers, optimizers
    from sparkdl.distributed import exchange, protocol, worker
    from sparkdl.distributed.protocol import Connection, Op
    from sparkdl.distributed.push_stream import PushStream
    from sparkdl.distributed.server import FrameServer
    from sparkdl.models import Sequential

    def dense():
        m = Sequential([layers.Dense(hidden, activation="relu", input_shape=(inputs,)),
                        layers.Dense(hidden, activation="relu"), layers.Dense(10, activation="softmax")])
        m.compile(optimizers.SGD(0.01), "sparse_categorical_crossentropy")
        return m
    model = dense()
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(64 * rounds, inputs)).astype(np.float32)]
    y = rng.integers(0, 10, size=64 * rounds)
    weights = model.get_flat_weights()
    times: dict[bool, list[float]] = {False: [], True: []}
    token = protocol.new_token()
    grads = np.empty(weights.size, np.float32)
    for run in range(repeats + 1):
        for streamed in (False, True):
            _, layout = exchange.round_layouts(model, "gradients", streamed=streamed)
            rounds_ex = exchange.RoundExchange(layout, timeout=60)
            with FrameServer(rounds_ex, token, timeout=60) as server, \
                    Connection(server.address, token, 60.0) as conn:
                start = time.perf_counter()
                for r in range(rounds):
                    rounds_ex.open_round(r, np.zeros(1, np.float32), {}, partitions={0: 64})
                    spec = worker.RoundSpec(round=r, seed=0, batch_size=64, frequency="batch",
                                            aggregate="gradients")
                    meta = {"round": r, "partition": 0, "attempt": 0, "samples": 64}
                    if streamed:
                        stream = PushStream(conn, meta, layout, {"gradients": grads})
                        worker.run_round(model, xs, y, spec, 0, weights, None, {}, 0, views=True,
                                         gradients=grads, on_ready=stream.ready)
                        stream.finish({})
                        conn.receive()
                    else:
                        result = worker.run_round(model, xs, y, spec, 0, weights, None, {}, 0, views=True)
                        conn.request(Op.PUSH, meta, layout.pack({"gradients": result.vector}))
                    rounds_ex.close_round()
                if run:
                    times[streamed].append((time.perf_counter() - start) / rounds)
    plain, ahead = statistics.median(times[False]), statistics.median(times[True])
    print(f"    {model.count_params() / 1e6:5.2f} M   {plain * 1e3:8.1f}   {ahead * 1e3:8.1f}   "
          f"{(plain - ahead) * 1e3:+7.1f} ms   {ahead / plain:6.3f}")


def learning(seeds: int) -> None:
    from mnist_bench import mnist_on_local2

    from sparkdl.spark import SparkModel
    spark, df, x_test, y_test, model = mnist_on_local2("sparkdl-bench-overlap")

    SparkModel(model(0), mode="async", num_workers=2).fit(df, epochs=1, verbose=0)   # warm-up
    print(f"(b) MNIST 5k MLP, mode async, 2 workers, local[2], 10 epochs, batch 64, seeds 0-{seeds - 1}")
    print("    frequency  overlap  accuracy per seed          mean     s/epoch (median)")
    for frequency in ("epoch", "batch"):
        for overlap in (False, True):
            accuracies, epoch_seconds = [], []
            for seed in range(seeds):
                m = model(seed)
                history = SparkModel(m, mode="async", frequency=frequency, num_workers=2, seed=seed,
                                     overlap=overlap).fit(df, epochs=10, batch_size=64, verbose=0)
                accuracies.append(m.evaluate(x_test, y_test)["accuracy"])
                epoch_seconds += [r["seconds"] for r in history.rounds]
            shown = " ".join(f"{a:.4f}" for a in accuracies)
            print(f"    {frequency:<9}  {str(overlap):<7}  {shown:<25}  {np.mean(accuracies):.4f}   "
                  f"{statistics.median(epoch_seconds):.2f}")
    spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="a,b,c")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    print(f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"NumPy {np.__version__}")
    if "a" in parts:
        print(f"(a) one async worker, frequency 'batch', batch 64, loopback; "
              f"ms per step, median of {args.repeats} epochs of {args.steps} steps")
        print("    params    frames     no server  lock step  overlap     saved      overlap / lock step")
        for hidden in (1000, 3150):
            for security in ("integrity", "plain"):
                step_times(hidden, hidden, args.steps, args.repeats, security)
    if "b" in parts:
        learning(args.seeds)
    if "c" in parts:
        print(f"(c) sync rounds of gradient sums, one batch of 64 per round, one task, loopback, "
              f"integrity tags; ms per round, median of {args.repeats} runs of {args.steps} rounds")
        print("    params    packed     streamed    saved      streamed / packed")
        streamed_rounds(700, 700, args.steps, args.repeats)
        streamed_rounds(2200, 2200, args.steps, args.repeats)


if __name__ == "__main__":
    main()
