"""End to end on a real Spark standalone cluster started from the installed pyspark: a master
and two workers (one core, 1 GiB each, their own work directories), applications submitted
with ``spark-submit --master spark://...``. A sync fit there gives the weights of ``local[2]``
bit for bit, also with a packed virtual environment shipped to the executors
(``--archives``); an executor JVM killed mid-round is replaced and the fit still ends on the
weights of a fit without the fault; a worker killed with its executor leaves the fit short of
a slot until ``round_timeout`` ends it with one error naming what it waited for."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT, spark_submit

BIN = Path(sys.executable).parent
START_TIMEOUT = 90.0
MNIST = ["examples/mnist_app.py", "--workers", "2", "--epochs", "2", "--verbose", "0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive_workers(webui: int) -> list:
    """The workers the master lists as ALIVE (its JSON page), or [] while it does not answer
    (or something else answers on the port)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{webui}/json/", timeout=5) as page:
            state = json.load(page)
    except (OSError, ValueError):
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
    """The master and workers (``processes``, by name, each in its own process group) and how
    to start them again."""

    def __init__(self, master: str, webui: int, logs: Path, env: dict, commands: dict):
        self.master, self.webui, self.logs = master, webui, logs
        self.env, self.commands = env, commands
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        with open(self.logs / f"{name}.log", "a") as log:
            self.processes[name] = subprocess.Popen([str(BIN / "spark-class")] + self.commands[name], env=self.env,
                                                    cwd=self.logs, stdout=log, stderr=subprocess.STDOUT,
                                                    start_new_session=True)

    def wait_for_workers(self) -> None:
        """Until every worker is ALIVE on the master."""
        workers = sum(name.startswith("worker-") for name in self.commands)
        deadline = time.monotonic() + START_TIMEOUT
        while len(alive_workers(self.webui_port())) < workers:
            assert all(p.poll() is None for p in self.processes.values()), self.log_tail()
            assert time.monotonic() < deadline, \
                f"{workers} workers not registered in {START_TIMEOUT} s\n{self.log_tail()}"
            time.sleep(0.5)

    def webui_port(self) -> int:
        """The port the master's web UI is bound to: the one asked for, or the next free one
        Spark took when another process held it (the master's log says which)."""
        log = self.logs / "master.log"
        bound = re.findall(r"MasterWebUI.*?started at https?://[^:/]+:(\d+)", log.read_text()) if log.exists() else []
        return int(bound[-1]) if bound else self.webui

    def restart_ended(self) -> list[str]:
        """Start again the daemons that ended (a test killed them), wait for the workers; returns
        their names."""
        ended = [name for name, proc in self.processes.items() if proc.poll() is not None]
        for name in ended:
            self.start(name)
        self.wait_for_workers()
        return ended

    def submit(self, args, timeout=300, env=None, checkout_on_executors=True):
        """spark-submit to this cluster; the driver's data plane on loopback, as the workers.
        When the tests import sparkdl through PYTHONPATH (a checkout), the executors get it too
        (the worker daemons do not have it), unless ``checkout_on_executors`` is false."""
        # The fit runs as one barrier job only if every slot is there when it starts: the
        # context waits (30 s at most) until both executors have registered.
        conf = ["--master", self.master, "--conf", "spark.driver.host=127.0.0.1",
                "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0"]
        if checkout_on_executors and os.environ.get("PYTHONPATH"):
            conf += ["--conf", f"spark.executorEnv.PYTHONPATH={os.environ['PYTHONPATH']}"]
        return spark_submit(conf + args, timeout=timeout, env=env)

    def executor_dirs(self) -> list[Path]:
        """The work directories of every executor the workers have started (app-ID/N)."""
        return [p for i in (1, 2) for p in (self.logs / f"worker-{i}").glob("app-*/*")]

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.logs.glob("*.log")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not (BIN / "spark-class").exists():
        pytest.skip("spark-class is not installed next to this Python")
    base = tmp_path_factory.mktemp("standalone")
    port, webui = free_port(), free_port()
    master = f"spark://127.0.0.1:{port}"
    # PYSPARK_PYTHON also lets spark-class find the installed pyspark (its SPARK_HOME). The
    # daemons, and so the executors, do not inherit PYTHONPATH: as on a real cluster, what the
    # executors import comes from their Python's environment or from the application.
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    env.pop("PYTHONPATH", None)
    commands = {"master": ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                           "--webui-port", str(webui)]}
    for i in (1, 2):
        work = base / f"worker-{i}"
        work.mkdir()
        commands[f"worker-{i}"] = ["org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1",
                                   "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()),
                                   "--work-dir", str(work)]
    cluster = Cluster(master, webui, base, env, commands)
    try:
        for name in commands:
            cluster.start(name)
        cluster.wait_for_workers()
        yield cluster
    finally:
        stop(cluster.processes.values())


@pytest.fixture(scope="module")
def cluster_run(cluster, tmp_path_factory):
    """MNIST in sync then async mode on the cluster, with this Python on the executors: the
    run and the .npz of its weights."""
    weights = tmp_path_factory.mktemp("cluster-run") / "cluster.npz"
    run = cluster.submit(MNIST + ["--mode", "sync,async", "--save-weights", str(weights)])
    assert run.returncode == 0, (run.stderr[-4000:], cluster.log_tail())
    return run, weights


def mnist(run, mode: str) -> tuple[float, float]:
    found = re.search(rf"{mode}: test accuracy: ([0-9.]+)  test loss: ([0-9.]+)", run.stdout)
    assert found, (run.stdout[-2000:], run.stderr[-3000:])
    return float(found.group(1)), float(found.group(2))


def test_sync_on_standalone_is_bit_identical_to_local_and_async_learns(cluster, cluster_run, tmp_path):
    """The same seed and two partitions: sync on two executors of the standalone cluster ends
    with the weights of local[2], bit for bit; async (the parameter server on the driver, its
    workers on the executors) learns."""
    on_cluster, weights = cluster_run
    local = spark_submit(["--master", "local[2]"] + MNIST + ["--mode", "sync", "--save-weights",
                                                            str(tmp_path / "local.npz")], timeout=300)
    assert local.returncode == 0, local.stderr[-4000:]
    assert mnist(on_cluster, "sync") == mnist(local, "sync")
    with np.load(weights) as ours, np.load(tmp_path / "local.npz") as reference:
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


# ---- a packed Python environment on the executors ------------------------------------------------
# What the executors need, pinned to the driver's versions so that both compute the same bits;
# pyspark is left out: an executor's Python worker imports it from Spark's own python path.
EXECUTOR_PACKAGES = ("numpy", "pyarrow", "cloudpickle")
# pip's words for a package index it cannot reach (or that does not have the version).
UNREACHABLE = ("No matching distribution found", "Could not find a version", "NewConnectionError",
               "Max retries exceeded", "Temporary failure in name resolution", "Network is unreachable")


def pip_install(python: Path, args) -> None:
    """``python -m pip install args``; skips the test where pip cannot reach a package index."""
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *args], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0 and any(words in done.stdout + done.stderr for words in UNREACHABLE):
        pytest.skip(f"pip cannot install {' '.join(map(str, args))} from a package index: {done.stderr[-500:]}")
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])


def packed_environment(tmp: Path) -> Path:
    """A new venv of this Python holding what the executors need — numpy, pyarrow, cloudpickle
    and sparkdl (built from a copy of this checkout's sources, installed without its
    dependencies) — packed with venv-pack, as docs/deployment.md shows."""
    venv_pack = BIN / "venv-pack"
    if not venv_pack.exists():
        pytest.skip("venv-pack is not installed next to this Python (pip install -e '.[test]')")
    source, env, archive = tmp / "source", tmp / "env", tmp / "env.tar.gz"
    shutil.copytree(ROOT / "sparkdl", source / "sparkdl", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    pip_install(python, [f"{name}=={metadata.version(name)}" for name in EXECUTOR_PACKAGES])
    pip_install(python, ["--no-deps", str(source)])
    packed = subprocess.run([str(venv_pack), "--prefix", str(env), "--output", str(archive), "--compress-level", "1",
                             "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert packed.returncode == 0, packed.stderr[-3000:]
    return archive


def test_executors_run_a_packed_environment_and_sync_gives_the_same_weights(cluster, cluster_run, tmp_path):
    """The recipe of docs/deployment.md: a venv packed with venv-pack goes to the executors with
    ``--archives env.tar.gz#environment`` and ``PYSPARK_PYTHON=./environment/bin/python``; the
    driver keeps this Python (client mode, ``PYSPARK_DRIVER_PYTHON``). Every executor runs
    the unpacked interpreter from its work directory and imports numpy, pyarrow, cloudpickle
    and sparkdl from it, pyspark from Spark; the sync fit ends with the weights of the run with
    this Python on the executors, bit for bit."""
    archive = packed_environment(tmp_path)
    report, weights = tmp_path / "python.json", tmp_path / "packed.npz"
    run = cluster.submit(["--archives", f"{archive}#environment", "tests/e2e/executor_python_app.py",
                          "--report", str(report), "--slots", "2"] + MNIST[1:] + ["--mode", "sync", "--save-weights",
                                                                                   str(weights)],
                         env={"PYSPARK_PYTHON": "./environment/bin/python", "PYSPARK_DRIVER_PYTHON": sys.executable},
                         checkout_on_executors=False)
    assert run.returncode == 0, (run.stderr[-4000:], cluster.log_tail())
    pythons = json.loads(report.read_text())
    assert Path(pythons["driver"]["executable"]) == Path(sys.executable), pythons["driver"]
    executors = pythons["executors"]
    assert {Path(e["cwd"]).parents[1].name for e in executors} == {"worker-1", "worker-2"}, executors
    for e in executors:
        unpacked = Path(e["cwd"]) / "environment"
        assert Path(e["cwd"]).parents[2] == cluster.logs, e
        assert Path(e["prefix"]) == unpacked and Path(e["executable"]).parent == unpacked / "bin", e
        for name in EXECUTOR_PACKAGES + ("sparkdl",):
            assert Path(e["modules"][name]).is_relative_to(unpacked / "lib"), (name, e)
        # pyspark is not in the archive: Spark puts its own pyspark.zip on the worker's path.
        pyspark = Path(e["modules"]["pyspark"])
        assert not pyspark.is_relative_to(unpacked) and "pyspark.zip" in pyspark.parts, e
    on_cluster, reference = cluster_run
    assert mnist(run, "sync") == mnist(on_cluster, "sync")
    with np.load(weights) as ours, np.load(reference) as theirs:
        np.testing.assert_array_equal(ours["sync"], theirs["sync"])


def test_a_lost_worker_that_never_comes_back_ends_the_fit_at_round_timeout(cluster, tmp_path):
    """The worker daemon running round 3, partition 0 is killed with its executor (SIGKILL),
    so no executor can replace the lost one (the other worker's one core is taken). Spark's
    retry of the barrier stage waits for a second slot that never comes; round_timeout (20 s)
    ends the fit with one TimeoutError that names the round, the partition it waited for, the
    slots the stage needs and the executor that was lost. Before that, every timeout (6 s) of
    the wait, a warning says the same."""
    out, markers = tmp_path / "reports.json", tmp_path / "markers"
    before = set(cluster.executor_dirs())
    try:
        run = cluster.submit(["tests/spark/fault_job.py", "--scenario", "sync-kill-worker", "--marker-dir",
                              str(markers), "--out", str(out)])
    finally:
        killed = cluster.restart_ended()
    assert run.returncode == 0, (run.stderr[-4000:], cluster.log_tail())
    fired = sorted(p.name for p in (markers / "sync-kill-worker").iterdir())
    assert len(fired) == 1 and fired[0].startswith("kill-worker-"), fired
    assert len(killed) == 1 and killed[0].startswith("worker-"), killed
    # The lost executor: the application's one on the killed worker (its work directory is named by its id).
    [lost] = [p.name for p in set(cluster.executor_dirs()) - before if p.parents[1].name == killed[0]]
    report = json.loads(out.read_text())["sync-kill-worker"]
    assert report.get("error") == "TimeoutError", report
    # Partition 1 may or may not have reported round 3 before the stage's other task was stopped.
    waiting = (r"\(no report from partitions? (0|0, 1); its barrier stage needs 2 task slots at once and the cluster "
               rf"has 1: executor {lost} was lost and no executor replaced it\)")
    assert re.fullmatch(rf"SparkModel\.fit: round 3/15 did not finish within round_timeout=20\.0 s {waiting}; the "
                        r"fit's Spark job was cancelled", report["message"]), report
    warned = re.findall(rf"SparkModel\.fit: round 3/15 has waited \d+ s {waiting}; it waits until executors come "
                        r"back, for round_timeout=20\.0 s at most", run.stdout)     # the driver's stderr too
    assert warned, (run.stdout[-4000:], run.stderr[-2000:])
