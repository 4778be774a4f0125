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


def test_mnist_app_trains_on_local_cluster():
    run = spark_submit(["--master", "local-cluster[2,1,1024]", "examples/mnist_app.py",
                        "--workers", "2", "--epochs", "3", "--verbose", "0"])
    assert run.returncode == 0, run.stderr[-3000:]
    found = re.search(r"test accuracy: ([0-9.]+)", run.stdout)
    assert found, run.stdout[-2000:]
    assert float(found.group(1)) >= 0.88
