"""End to end on a real Spark standalone cluster started from the installed pyspark: a master
and two workers (one core, 1 GiB each, their own work directories), applications submitted
with ``spark-submit --master spark://...``. A sync fit there gives the weights of ``local[2]``
bit for bit; an executor JVM killed mid-round is replaced and the fit still ends on the
weights of a fit without the fault."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import spark_submit

BIN = Path(sys.executable).parent
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive_workers(webui: int) -> list:
    """The workers the master lists as ALIVE (its JSON page), or [] while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{webui}/json/", timeout=5) as page:
            state = json.load(page)
    except OSError:
        return []
    return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]


def stop(processes) -> None:
    """SIGTERM every process group (the worker stops its executors), SIGKILL what is left."""
    for proc in processes:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


class Cluster:
    def __init__(self, master: str, webui: int, logs: Path):
        self.master, self.webui, self.logs = master, webui, logs

    def submit(self, args, timeout=300):
        """spark-submit to this cluster; the driver's data plane on loopback, as the workers."""
        # The fit runs as one barrier job only if every slot is there when it starts: the
        # context waits (30 s at most) until both executors have registered.
        return spark_submit(["--master", self.master, "--conf", "spark.driver.host=127.0.0.1",
                             "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0"] + args, timeout=timeout)

    def executor_dirs(self) -> list[Path]:
        """The work directories of every executor the workers have started (app-ID/N)."""
        return [p for i in (1, 2) for p in (self.logs / f"worker-{i}").glob("app-*/*")]

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.logs.glob("*.log")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    spark_class = BIN / "spark-class"
    if not spark_class.exists():
        pytest.skip("spark-class is not installed next to this Python")
    base = tmp_path_factory.mktemp("standalone")
    port, webui = free_port(), free_port()
    master = f"spark://127.0.0.1:{port}"
    # PYSPARK_PYTHON also lets spark-class find the installed pyspark (its SPARK_HOME).
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    commands = {"master": ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                           "--webui-port", str(webui)]}
    for i in (1, 2):
        work = base / f"worker-{i}"
        work.mkdir()
        commands[f"worker-{i}"] = ["org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1",
                                   "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()),
                                   "--work-dir", str(work)]
    processes = []
    try:
        for name, command in commands.items():
            with open(base / f"{name}.log", "w") as log:
                processes.append(subprocess.Popen([str(spark_class)] + command, env=env, cwd=base, stdout=log,
                                                  stderr=subprocess.STDOUT, start_new_session=True))
        cluster = Cluster(master, webui, base)
        deadline = time.monotonic() + START_TIMEOUT
        while len(alive_workers(webui)) < 2:
            assert all(p.poll() is None for p in processes), cluster.log_tail()
            assert time.monotonic() < deadline, f"2 workers not registered in {START_TIMEOUT} s\n{cluster.log_tail()}"
            time.sleep(0.5)
        yield cluster
    finally:
        stop(processes)


def mnist(run, mode: str) -> tuple[float, float]:
    found = re.search(rf"{mode}: test accuracy: ([0-9.]+)  test loss: ([0-9.]+)", run.stdout)
    assert found, (run.stdout[-2000:], run.stderr[-3000:])
    return float(found.group(1)), float(found.group(2))


def test_sync_on_standalone_is_bit_identical_to_local_and_async_learns(cluster, tmp_path):
    """The same seed and two partitions: sync on two executors of the standalone cluster ends
    with the weights of local[2], bit for bit; async (the parameter server on the driver, its
    workers on the executors) learns."""
    app = ["examples/mnist_app.py", "--workers", "2", "--epochs", "2", "--verbose", "0"]
    on_cluster = cluster.submit(app + ["--mode", "sync,async", "--save-weights", str(tmp_path / "cluster.npz")])
    assert on_cluster.returncode == 0, (on_cluster.stderr[-4000:], cluster.log_tail())
    local = spark_submit(["--master", "local[2]"] + app + ["--mode", "sync", "--save-weights",
                                                          str(tmp_path / "local.npz")], timeout=300)
    assert local.returncode == 0, local.stderr[-4000:]
    assert mnist(on_cluster, "sync") == mnist(local, "sync")
    with np.load(tmp_path / "cluster.npz") as ours, np.load(tmp_path / "local.npz") as reference:
        assert ours["sync"].dtype == np.float32 and ours["sync"].size == 784 * 256 + 256 + 256 * 128 + 128 + 1290
        np.testing.assert_array_equal(ours["sync"], reference["sync"])
    accuracy, _ = mnist(on_cluster, "async")
    assert accuracy >= 0.85, accuracy
    # Both workers ran executors of the application.
    assert {p.parents[1].name for p in cluster.executor_dirs()} == {"worker-1", "worker-2"}


def test_executor_killed_mid_round_is_replaced_and_the_fit_ends_on_identical_weights(cluster, tmp_path):
    """The executor JVM running round 3, partition 0 is killed (SIGKILL) from inside the task;
    the standalone worker starts a new executor, Spark reruns the barrier stage once it has
    two slots again, recomputes the lost cached partitions (from_arrays keeps their rows in
    order), and the new tasks continue with round 3 from the same weights."""
    out, markers = tmp_path / "reports.json", tmp_path / "markers"
    before = set(cluster.executor_dirs())
    run = cluster.submit(["tests/spark/fault_job.py", "--scenario", "sync-kill-executor", "--marker-dir",
                          str(markers), "--out", str(out)])
    assert run.returncode == 0, (run.stderr[-4000:], cluster.log_tail())
    report = json.loads(out.read_text())["sync-kill-executor"]
    fired = sorted(p.name for p in (markers / "sync-kill-executor").iterdir())
    assert len(fired) == 1 and fired[0].startswith("kill-executor-"), fired
    assert report["identical"], report["max_abs_diff"]
    assert report["rounds"] == 15 and report["execution"].startswith("one job per fit"), report
    # The application's executors: the two it started with, and the one that replaced the lost.
    executors = set(cluster.executor_dirs()) - before
    assert len(executors) >= 3, executors
