"""End to end through spark-submit on a real (local) cluster: two executor JVMs, each with
its own Python workers, so models, weights and results cross process boundaries."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def spark_submit(args, timeout=600):
    submit = Path(sys.executable).with_name("spark-submit")
    if not submit.exists():
        pytest.skip("spark-submit is not installed next to this Python")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    return subprocess.run([str(submit), "--properties-file", str(ROOT / "spark-defaults.conf")] + args,
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_async_modes_train_on_local_cluster():
    """The parameter server on the driver, workers in two other JVMs' Python processes. (Sync
    rounds on local-cluster run in test_faults.py, with and without a killed Python worker.)"""
    run = spark_submit(["--master", "local-cluster[2,1,1024]", "examples/mnist_app.py",
                        "--mode", "async,hogwild,ssp", "--staleness", "1", "--tau", "batch",
                        "--workers", "2", "--epochs", "3", "--verbose", "0"])
    assert run.returncode == 0, run.stderr[-3000:]
    found = dict(re.findall(r"(\w+): test accuracy: ([0-9.]+).*?3 epochs, 2 workers", run.stdout))
    assert set(found) == {"async", "hogwild", "ssp"}, run.stdout[-2000:]
    for mode, accuracy in found.items():
        assert float(accuracy) >= 0.88, (mode, accuracy)


def write_fake_cifar(folder, train_per_file=24, test_rows=30, seed=0):
    """Small files in the exact CIFAR-10 binary layout, with a learnable signal: the class
    sets the mean brightness of one colour channel."""
    import numpy as np

    from sparkdl.data import cifar10
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 120, (n, 3, 32, 32)).astype(np.uint8)
        images[np.arange(n), labels % 3] += (labels * 12).astype(np.uint8)[:, None, None]
        return images, labels

    for name in cifar10.TRAIN_FILES:
        cifar10.write_batch(folder / name, *make(train_per_file))
    cifar10.write_batch(folder / cifar10.TEST_FILE, *make(test_rows))


def test_cifar_app_reads_binary_files_and_trains(tmp_path):
    write_fake_cifar(tmp_path)
    run = spark_submit(["--master", "local[2]", "examples/cifar_app.py", "--data-dir", str(tmp_path),
                        "--workers", "2", "--epochs", "1", "--tau", "2", "--batch-size", "20",
                        "--verbose", "0"])
    assert run.returncode == 0, run.stderr[-3000:]
    found = re.search(r"test accuracy: ([0-9.]+).*?(\d+) rounds of tau=2, 2 workers, 120 training images",
                      run.stdout)
    assert found, run.stdout[-2000:]
