"""Training-step time of sparkdl's engine against PyTorch CPU, measured side by side.

For each model, both frameworks get the same architecture, the same initial weights (copied
into the PyTorch twin, and checked by comparing the first loss), the same batch, float32 and
the same number of threads (``sparkdl.engine.threads.set_num_threads`` for sparkdl, which also
sets its BLAS threads; ``torch.set_num_threads`` for PyTorch), and sparkdl's steps run under
the model's threading as in ``fit`` (BLAS single-threaded under the conv/pool threads of the
CNNs). Timings alternate between the
two in each repeat, so drifting machine load hits both; the figure is the median over repeats
of the mean step time, and the ratio is sparkdl / PyTorch (below 1.0: sparkdl is faster); the
quartiles of the per-repeat ratios show how much the machine's load moved it.

The memory section reports, for one cifar_quick training step at batch 100: sparkdl's
tracemalloc figures after warm-up (NumPy memory held between steps, and its peak during one
step), and for both frameworks the peak RSS of a fresh process above its RSS just before its
first training step, over three steps (tracemalloc does not see PyTorch's allocator).

    python benchmarks/engine_vs_torch.py [--threads 2] [--repeats 9] [--models mlp,lenet,cifar_quick]

Needs torch (pip install torch; on machines without a GPU prefer the CPU wheel index of PyTorch).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
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


def _copy_conv(conv, layer):
    import torch
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(layer.params["kernel"]))
        conv.bias.copy_(torch.from_numpy(layer.params["bias"]))


def _copy_dense(lin, layer):
    import torch
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(layer.params["kernel"].T.copy()))
        lin.bias.copy_(torch.from_numpy(layer.params["bias"]))


def lenet_case(batch):
    import torch
    from torch import nn

    from sparkdl import optimizers
    from sparkdl.engine import zoo

    ours = zoo.lenet()
    ours.compile(optimizer=optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy")
    theirs = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2),
                           nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
    for mine, twin in zip([ours.layers[i] for i in (0, 2, 5, 6)], [theirs[i] for i in (0, 2, 5, 7)]):
        (_copy_conv if twin.__class__ is nn.Conv2d else _copy_dense)(twin, mine)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    opt = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.9)
    return "LeNet (MNIST 1x28x28)", ours, theirs, opt, x, y


def cifar_quick_case(batch):
    import torch
    from torch import nn

    from sparkdl import optimizers
    from sparkdl.engine import zoo

    ours = zoo.cifar_quick()
    ours.compile(optimizer=optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy")
    # 'same' pooling on these even sizes is Caffe's ceil mode (32 -> 16 -> 8 -> 4).
    theirs = nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=False),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=False),
        nn.Flatten(), nn.Linear(1024, 64), nn.Linear(64, 10))
    for mine, twin in zip([ours.layers[i] for i in (0, 3, 5, 8, 9)], [theirs[i] for i in (0, 3, 6, 10, 11)]):
        (_copy_conv if twin.__class__ is nn.Conv2d else _copy_dense)(twin, mine)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    opt = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.9)
    return "cifar_quick (CIFAR 3x32x32)", ours, theirs, opt, x, y


CASES = {"mlp": (mlp_case, 128), "lenet": (lenet_case, 64), "cifar_quick": (cifar_quick_case, 100)}


def check_twins(ours, theirs, x, y):
    """Same weights, same function: the losses at the initial weights agree."""
    import torch
    ours_loss, _ = ours.compute_gradients(x, y)
    with torch.no_grad():
        torch_loss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y)).item()
    if abs(ours_loss - torch_loss) > 1e-4 * max(1.0, abs(torch_loss)):
        raise SystemExit(f"the twins differ: sparkdl loss {ours_loss}, torch loss {torch_loss}")


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


# ---- memory -------------------------------------------------------------------------------------
def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_child(framework, threads_n):
    """In a fresh process: peak RSS during three cifar_quick steps, above the RSS before them."""
    import torch

    from sparkdl.engine import threads

    torch.set_num_threads(threads_n)
    threads.set_num_threads(threads_n)
    _, ours, theirs, opt, x, y = cifar_quick_case(100)
    ours_step, torch_step = step_fns(ours, theirs, opt, x, y)
    step = ours_step if framework == "sparkdl" else torch_step
    context = ours._threading() if framework == "sparkdl" else contextlib.nullcontext()
    with context:
        before = _rss_kib("VmRSS")
        for _ in range(3):
            step()
        print(_rss_kib("VmHWM") - before)


def memory_report(threads_n):
    import tracemalloc

    from sparkdl.engine import threads

    threads.set_num_threads(threads_n)
    tracemalloc.start()
    _, ours, theirs, opt, x, y = cifar_quick_case(100)
    ours_step, _ = step_fns(ours, theirs, opt, x, y)
    with ours._threading():
        for _ in range(3):
            ours_step()
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        ours_step()
        _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mib = 1 / 2**20
    print(f"# memory, one cifar_quick training step at batch 100 (threads={threads_n})")
    print(f"sparkdl tracemalloc after warm-up: {held * mib:.1f} MiB of NumPy arrays held between steps "
          f"(weights, optimizer slots, layer workspaces, the batch), peak {peak * mib:.1f} MiB during a step "
          f"(+{(peak - held) * mib:.1f} MiB transient)")
    rss = {}
    for framework in ("sparkdl", "torch"):
        out = subprocess.run([sys.executable, __file__, "--rss-child", framework, "--threads", str(threads_n)],
                             capture_output=True, text=True, check=True).stdout
        rss[framework] = int(out.split()[-1]) / 1024
    print(f"peak RSS above the pre-training RSS of a fresh process, 3 steps: sparkdl {rss['sparkdl']:.1f} MiB, "
          f"torch {rss['torch']:.1f} MiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="default: the CPUs this process may use")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.5, help="target time per timed block")
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--no-memory", action="store_true", help="skip the memory section")
    parser.add_argument("--rss-child", choices=["sparkdl", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    from sparkdl.engine import threads

    n_threads = args.threads or threads.get_num_threads()
    if args.rss_child:
        rss_child(args.rss_child, n_threads)
        return
    torch.set_num_threads(n_threads)
    threads.set_num_threads(n_threads)
    print(f"# engine_vs_torch: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"threads={n_threads}, numpy {np.__version__}, torch {torch.__version__}, "
          f"python {platform.python_version()}, repeats={args.repeats}")
    print(f"{'model':<28}{'batch':>6}{'sparkdl ms':>12}{'torch ms':>10}{'ratio':>8}"
          f"  {'ratio per repeat, quartiles':>27}")
    for key in args.models.split(","):
        builder, batch = CASES[key]
        name, ours, theirs, opt, x, y = builder(batch)
        check_twins(ours, theirs, x, y)
        ours_step, torch_step = step_fns(ours, theirs, opt, x, y)

        def ours_timed(steps):
            # As in fit: the model's threading (BLAS single-threaded under conv/pool threads)
            # is set once around many steps, not per step. Called within this iteration only.
            with ours._threading():  # noqa: B023
                return timed(ours_step, steps)  # noqa: B023

        ours_timed(20)  # warm up caches, allocator, workspaces and thread pools
        timed(torch_step, 20)
        steps = max(5, int(args.seconds / max(ours_timed(5), 1e-6)))
        a, b = [], []
        for _ in range(args.repeats):
            a.append(ours_timed(steps))
            b.append(timed(torch_step, steps))
        ta, tb = statistics.median(a), statistics.median(b)
        q1, q2, q3 = np.percentile([u / v for u, v in zip(a, b)], [25, 50, 75])
        print(f"{name:<28}{batch:>6}{ta * 1e3:>12.3f}{tb * 1e3:>10.3f}{ta / tb:>8.2f}  "
              f"{q1:>17.2f} {q2:.2f} {q3:.2f}", flush=True)
    if not args.no_memory and "cifar_quick" in args.models.split(","):
        memory_report(n_threads)


if __name__ == "__main__":
    main()
