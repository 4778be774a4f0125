"""Training-step time of sparkdl's engine against PyTorch CPU, measured side by side.

For each model, both frameworks get the same architecture, the same initial weights, the
same batch, float32 and the same number of threads (BLAS threads for NumPy through
threadpoolctl, ``torch.set_num_threads`` for PyTorch). Timings alternate between the two in
each repeat, so drifting machine load hits both; the figure is the median over repeats of the
mean step time, and the ratio is sparkdl / PyTorch (below 1.0: sparkdl is faster).

    python benchmarks/engine_vs_torch.py [--threads 2] [--repeats 9] [--models mlp]

Needs torch and threadpoolctl (pip install torch threadpoolctl; on machines without a GPU
prefer the CPU wheel index of PyTorch).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def mlp_case(batch):
    import torch

    from sparkdl import layers, optimizers
    from sparkdl.models import Sequential

    ours = Sequential([layers.Input((784,)), layers.Dense(256, activation="relu"),
                       layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")])
    ours.compile(optimizer=optimizers.SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy")
    theirs = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                 torch.nn.ReLU(), torch.nn.Linear(128, 10))
    w = ours.get_weights()
    with torch.no_grad():
        for i, lin in enumerate([theirs[0], theirs[2], theirs[4]]):
            lin.weight.copy_(torch.from_numpy(w[2 * i].T.copy()))
            lin.bias.copy_(torch.from_numpy(w[2 * i + 1]))
    rng = np.random.default_rng(0)
    x = rng.random((batch, 784), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    return "MLP 784-256-128-10", ours, theirs, torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9), x, y


CASES = {"mlp": (mlp_case, 128)}


def step_fns(ours, theirs, torch_opt, x, y):
    import torch

    xs = [x]
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()

    def ours_step():
        ours._train_batch(xs, y)

    def torch_step():
        torch_opt.zero_grad(set_to_none=True)
        loss_fn(theirs(tx), ty).backward()
        torch_opt.step()

    return ours_step, torch_step


def timed(fn, steps):
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.5, help="target time per timed block")
    parser.add_argument("--models", default=",".join(CASES))
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    print(f"# engine_vs_torch: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"threads={args.threads}, numpy {np.__version__}, torch {torch.__version__}, "
          f"python {platform.python_version()}")
    print(f"{'model':<28}{'batch':>6}{'sparkdl ms':>12}{'torch ms':>10}{'ratio':>8}")
    with threadpool_limits(args.threads):
        for key in args.models.split(","):
            builder, batch = CASES[key]
            name, ours, theirs, opt, x, y = builder(batch)
            ours_step, torch_step = step_fns(ours, theirs, opt, x, y)
            for fn in (ours_step, torch_step):  # warm up caches, allocator and thread pools
                timed(fn, 20)
            steps = max(5, int(args.seconds / max(timed(ours_step, 5), 1e-6)))
            a, b = [], []
            for _ in range(args.repeats):
                a.append(timed(ours_step, steps))
                b.append(timed(torch_step, steps))
            ta, tb = statistics.median(a), statistics.median(b)
            print(f"{name:<28}{batch:>6}{ta * 1e3:>12.3f}{tb * 1e3:>10.3f}{ta / tb:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
