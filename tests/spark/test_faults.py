"""Faults during training: failed and killed tasks are retried and give the model a run without
the fault gives (sync), or apply every push once (async); a diverging model stops with the
round and partition named and keeps its last good weights; a driver killed mid-fit resumes
from its newest checkpoint to the same weights.

Retries need a master that retries tasks (plain local[2] fails a job on the first task
failure), so those jobs run through spark-submit (``fault_job.py``) on ``local[2,4]`` and on
``local-cluster[2,1,1024]`` (with the driver hub and with transport="allreduce"); the divergence
guard needs no retry and runs on the tests' session.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from tests.helpers import ROOT, spark_submit
from tests.spark import faults

cloudpickle.register_pickle_by_value(faults)
JOB = "tests/spark/fault_job.py"


def run_job(tmp_path, master, scenarios):
    """``{scenario: (report, names of the fault markers it left)}`` of one spark-submit."""
    out = tmp_path / "reports.json"
    markers = tmp_path / "markers"
    run = spark_submit(["--master", master, JOB, "--scenario", ",".join(scenarios), "--marker-dir",
                        str(markers), "--out", str(out)], timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    reports = json.loads(out.read_text())
    return {s: (reports[s], sorted(p.name for p in (markers / s).iterdir())) for s in scenarios}


def test_failed_tasks_are_retried_sync_to_bit_identical_weights_async_applying_every_push_once(tmp_path):
    """On local[2,4] (four attempts per task). Sync: the task of round 3, partition 0 raises in
    attempt 0; the retry recomputes the same result, so the weights equal those of a fit without
    the fault bit for bit. The same in synchronous EASGD, where each retried task must first
    take back its own weights and momentum: as of round 2, or of round 3 for a task that had
    already reported it. Async: the Python worker of epoch 2, partition 0 is killed after 5
    pushes; the retry replays them and the parameter server drops the replays."""
    jobs = run_job(tmp_path, "local[2,4]", ["sync-raise", "async-kill", "easgd-raise"])
    for scenario in ("sync-raise", "easgd-raise"):
        report, markers = jobs[scenario]
        assert len(markers) == 1 and markers[0].startswith("raise-"), markers   # the fault happened, once
        assert report["identical"], (scenario, report["max_abs_diff"])
        # 600 rows per partition at batch 32 are 19 steps; tau 4 makes 5 rounds per epoch.
        assert report["rounds"] == 15

    report, markers = jobs["async-kill"]
    assert len(markers) == 1 and markers[0].startswith("kill-"), markers
    # One push per step, two partitions; the killed attempt had pushed 5 updates.
    assert report["steps"] == [19, 19, 19]
    assert report["pushes"] == [38, 38, 38], report
    assert report["duplicates"] == [0, 5, 0], report
    assert report["loss"][-1] < report["loss"][0]


def test_sync_python_worker_killed_mid_round_on_a_cluster_gives_bit_identical_weights(tmp_path):
    """On local-cluster[2,1,1024]: the executor's Python worker running round 3, partition 0 is
    killed (SIGKILL) mid-round; Spark reruns the task in a new worker, which pulls the same
    weights and recomputes the same result."""
    (report, markers), = run_job(tmp_path, "local-cluster[2,1,1024]", ["sync-kill"]).values()
    assert len(markers) == 1 and markers[0].startswith("kill-"), markers
    assert report["identical"], report["max_abs_diff"]


def test_allreduce_barrier_retries_give_bit_identical_weights_on_local_and_on_a_cluster(tmp_path):
    """transport="allreduce": the task of round 3, partition 0 raises (local[2,4]), or its
    Python worker is killed mid-round (local-cluster[2,1,1024]); Spark retries the barrier
    stage, whose fresh tasks take the driver's last state (after round 0 or an epoch's end),
    replay the rounds since with their peers and carry on: the weights equal those of a fit
    without the fault bit for bit, with int8 compression too (error feedback restarts where
    the replay starts). The hub with int8 recovers from the same fault."""
    local = tmp_path / "local"
    cluster = tmp_path / "cluster"
    local.mkdir()
    cluster.mkdir()
    jobs = {**run_job(local, "local[2,4]", ["allreduce-raise", "allreduce-int8-raise", "sync-int8-raise"]),
            **run_job(cluster, "local-cluster[2,1,1024]", ["allreduce-kill"])}
    for scenario, fault in (("allreduce-raise", "raise-"), ("allreduce-kill", "kill-"),
                            ("allreduce-int8-raise", "raise-"), ("sync-int8-raise", "raise-")):
        report, markers = jobs[scenario]
        assert len(markers) == 1 and markers[0].startswith(fault), (scenario, markers)
        assert report["rounds"] == 15 and report["execution"] == "one job per fit"
        if scenario == "sync-int8-raise":
            # The hub's tasks keep their error feedback in memory: the retried stage starts it
            # from zero, so the fit recovers and learns as well, without the same bits.
            faulty, clean = report["accuracy"]
            assert faulty > 0.85 and abs(faulty - clean) < 0.03, report
        else:
            assert report["identical"], (scenario, report["max_abs_diff"])


def test_a_failed_shard_host_retries_the_stage_and_the_epoch_runs_again_from_the_drivers_model(tmp_path):
    """num_servers >= 1 on local[2,4]: the task hosting a parameter server shard raises in
    epoch 2; Spark retries the barrier stage, whose new shards start from the driver's model
    after epoch 1, and the driver runs epoch 2 again whole. One worker on one shard ends with
    the weights of a fit without the fault bit for bit; two workers on two shards apply one
    epoch's pushes per epoch, none twice."""
    jobs = run_job(tmp_path, "local[2,4]", ["shards-raise", "shards2-raise"])
    for scenario, pushes in (("shards-raise", 10), ("shards2-raise", 10)):
        report, markers = jobs[scenario]
        assert len(markers) == 1 and markers[0].startswith("raise-"), (scenario, markers)
        assert report["execution"] == "one job per fit"
        # 1,200 rows at batch 32 in one or two partitions, a push every 4 steps.
        assert report["pushes"] == [pushes] * 3 and report["duplicates"] == [0, 0, 0], (scenario, report)
        assert report["loss"][-1] < report["loss"][0], (scenario, report)
    assert jobs["shards-raise"][0]["identical"]


def test_a_failed_shard_host_of_sync_rounds_retries_the_stage_and_the_rounds_are_replayed(tmp_path):
    """Sync gradient rounds on two shards (num_servers=2, Adam) on local[2,4]: the host of
    shard 1 raises in round 7, the second of epoch 2; Spark retries the barrier stage, whose
    new shards start from the driver's model and Adam's slots after epoch 1, and the driver
    replays rounds 6 and 7 from there: the fit ends with the weights of a fit without the
    fault, bit for bit."""
    report, markers = run_job(tmp_path, "local[2,4]", ["sync-shards-raise"])["sync-shards-raise"]
    assert len(markers) == 1 and markers[0].startswith("raise-"), markers
    assert report["execution"] == "one job per fit"
    assert report["rounds"] == 15        # 600 rows per partition at batch 32: 19 steps, tau 4
    assert report["identical"], report
    assert report["loss"][-1] < report["loss"][0], report


def test_divergence_stops_fit_naming_round_and_partition_and_keeps_last_good_weights(spark):
    good, _ = faults.train(spark, epochs=1)          # rounds 1-5 of a fit that would go on
    from sparkdl.spark import SparkModel
    net = faults.model(fault="nan", job="sparkdl round 6/", partition=1, after=1)
    spark_model = SparkModel(net, frequency=4, num_workers=2, seed=0)
    with pytest.raises(FloatingPointError, match=r"round 6.*partition 1"):
        spark_model.fit(faults.digits_frame(spark), epochs=3, batch_size=32, verbose=0)
    np.testing.assert_array_equal(net.get_flat_weights(), good.get_flat_weights())
    assert len(spark_model.history.rounds) == 5


def test_driver_killed_mid_fit_resumes_from_its_checkpoints_to_identical_weights(spark, tmp_path):
    """spark-submit a 6-epoch fit that checkpoints every round, SIGKILL the whole job (driver
    JVM, driver Python, workers) once epoch 3 has ended, truncate the newest checkpoint as a
    crash mid-write on a file system without atomic rename would, resume: the fit warns,
    falls back to the previous checkpoint, and ends with the weights of an uninterrupted fit."""
    checkpoints = tmp_path / "checkpoints"
    out = tmp_path / "reports.json"
    submit = [str(Path(sys.executable).with_name("spark-submit")), "--properties-file",
              str(ROOT / "spark-defaults.conf"), "--master", "local[2]", JOB, "--scenario", "checkpoint",
              "--checkpoint-dir", str(checkpoints), "--out", str(out)]
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    with open(tmp_path / "killed.err", "w") as err:
        job = subprocess.Popen(submit, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                               start_new_session=True)
        seen = []
        for line in job.stdout:
            seen.append(line.strip())
            if line.strip() == "epoch 3 done":
                os.killpg(job.pid, signal.SIGKILL)
                break
        job.stdout.close()
        job.wait(timeout=60)
    assert "epoch 3 done" in seen, (seen, (tmp_path / "killed.err").read_text()[-3000:])
    assert job.returncode == -signal.SIGKILL and not out.exists()
    # The newest 3 are kept (the kill may also have cut a write short: its temporary file
    # is never taken for a checkpoint, and the next save removes it).
    files = sorted(p.name for p in checkpoints.iterdir() if p.name.endswith(".sdlckpt"))
    assert len(files) == 3, sorted(p.name for p in checkpoints.iterdir())
    newest = checkpoints / files[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    run = subprocess.run(submit + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    printed = run.stdout + run.stderr      # spark-submit merges the Python driver's stderr into stdout
    assert f"checkpoint {files[-1]} is unreadable" in printed and f"using {files[-2]}" in printed, printed
    report = json.loads(out.read_text())["checkpoint"]
    resumed_from = int(files[-2][5:13])
    assert report["resumed_from"] == resumed_from and 10 <= resumed_from < 30   # mid-run (epoch 3 ended)
    assert report["rounds"] == list(range(1, 31))                            # the history is whole

    assert all(p.name.endswith(".sdlckpt") for p in checkpoints.iterdir()), list(checkpoints.iterdir())
    uninterrupted, _ = faults.train(spark, epochs=6)
    np.testing.assert_array_equal(np.asarray(report["weights"], np.float32), uninterrupted.get_flat_weights())


def test_a_round_that_hangs_is_cancelled_after_round_timeout(spark):
    """A task that never finishes: with round_timeout the driver cancels the round's job and
    raises TimeoutError naming the round and the partition it waited for; the model keeps the
    weights of the rounds before."""
    from sparkdl.spark import SparkModel
    good, _ = faults.train(spark, epochs=1)          # rounds 1-5
    net = faults.model(fault="hang", job="sparkdl round 6/", partition=0, after=0)
    spark_model = SparkModel(net, frequency=4, num_workers=2, seed=0, round_timeout=5)
    with pytest.raises(TimeoutError, match=r"round 6/15 did not finish within round_timeout=5.0 s \(no report from "
                                            r"partition 0\); the fit's Spark job was cancelled$"):
        spark_model.fit(faults.digits_frame(spark), epochs=3, batch_size=32, verbose=0)
    np.testing.assert_array_equal(net.get_flat_weights(), good.get_flat_weights())
    # The session is still usable: the next fit runs.
    again, _ = faults.train(spark, epochs=1)
    np.testing.assert_array_equal(again.get_flat_weights(), good.get_flat_weights())


@pytest.mark.parametrize("mode, optimizer, frequency", [
    ("async", "plain-sgd", "batch"), ("async", "sgd", "batch"), ("async", "adam", "epoch"),
    ("easgd-async", "sgd", "batch"), ("adag", "sgd", 4)])
def test_async_fit_resumes_from_its_epoch_checkpoints(spark, tmp_path, mode, optimizer, frequency):
    """In the async modes a checkpoint is taken per epoch with the server's weights and each
    partition's worker state (momentum, Adam moments, iterations; in EASGD the worker's own
    weights too); the resumed fit hands the state back to the worker of that partition. With
    one worker the pushes are sequential, so the resumed fit must end exactly where a straight
    one does."""
    from sparkdl.spark import SparkModel
    frame = faults.digits_frame(spark)
    options = {"mode": "easgd", "variant": "async"} if mode == "easgd-async" else {"mode": mode}

    def fit(epochs, **fit_options):
        net = faults.model(optimizer=optimizer)
        spark_model = SparkModel(net, frequency=frequency, num_workers=1, seed=0, **options)
        history = spark_model.fit(frame, epochs=epochs, batch_size=32, verbose=0, **fit_options)
        return net, history

    folder = str(tmp_path / "async")
    fit(2, checkpoint_dir=folder)
    resumed, history = fit(3, checkpoint_dir=folder, resume=True)
    straight, expected = fit(3)
    assert history.resumed_from == 2 and [r["round"] for r in history.rounds] == [1, 2, 3]
    assert history.history == expected.history
    np.testing.assert_array_equal(resumed.get_flat_weights(), straight.get_flat_weights())


def test_sync_easgd_resumes_mid_epoch_with_every_workers_own_weights(spark, tmp_path):
    """Synchronous EASGD with two workers is deterministic: a checkpoint inside an epoch keeps
    the center and each worker's own weights and momentum, and the resumed fit ends on the
    straight fit's weights bit for bit."""
    folder = tmp_path / "easgd"
    options = {"mode": "easgd", "frequency": 4}
    faults.train(spark, epochs=1, fit_options={"checkpoint_dir": str(folder), "checkpoint_every": 3}, **options)
    # As if the fit had stopped in round 4: only the checkpoint of round 3 is there.
    newest = sorted(folder.iterdir())
    assert [p.name for p in newest] == ["ckpt-00000003.sdlckpt", "ckpt-00000005.sdlckpt"]
    newest[-1].unlink()
    resumed, history = faults.train(spark, epochs=2, fit_options={"checkpoint_dir": str(folder), "resume": True},
                                    **options)
    straight, expected = faults.train(spark, epochs=2, **options)
    assert history.resumed_from == 3 and len(history.rounds) == 10      # 5 rounds per epoch
    np.testing.assert_array_equal(resumed.get_flat_weights(), straight.get_flat_weights())
    assert history.history == expected.history


def test_async_divergence_names_epoch_and_partition_and_keeps_the_last_epochs_weights(spark):
    """A worker whose update turns NaN pushes nothing more; fit stops after that epoch's job
    naming the epoch and partition, and the model keeps the weights of the epoch before."""
    from sparkdl.engine.callbacks import Callback
    from sparkdl.spark import SparkModel

    class Keep(Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.weights = self.model.get_flat_weights()

    keep = Keep()
    net = faults.model(optimizer="plain-sgd", fault="nan", job="sparkdl async epoch 2/", partition=1, after=3)
    spark_model = SparkModel(net, mode="async", frequency="batch", num_workers=2, seed=0)
    with pytest.raises(FloatingPointError, match=r"diverged in epoch 2 \(partition 1: .*\(push 4\)\)"):
        spark_model.fit(faults.digits_frame(spark), epochs=3, batch_size=32, verbose=0, callbacks=[keep])
    assert len(spark_model.history.rounds) == 1
    np.testing.assert_array_equal(net.get_flat_weights(), keep.weights)
