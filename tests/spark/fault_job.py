"""Fault jobs run through spark-submit by test_faults.py (on masters that retry failed tasks).

    spark-submit tests/spark/fault_job.py --scenario NAME[,NAME...] --marker-dir DIR --out FILE.json

Each scenario's report goes into FILE.json under its name; its fault markers into DIR/NAME.

Scenarios:
  sync-raise   a sync fit whose task (round 3, partition 0, attempt 0) raises, and the same fit
               without the fault; reports whether the final weights are bit-identical
  sync-kill    the same with that task's Python worker killed (SIGKILL) mid-round
  sync-kill-executor  the same with the JVM of that task's executor killed (SIGKILL) mid-round
               (on a cluster master: standalone or local-cluster)
  sync-kill-worker  that task's standalone worker daemon killed with its executor, with
               round_timeout=20 s and timeout=6 s: reports the error the fit ends with
  allreduce-raise  as sync-raise with transport="allreduce": the retried barrier stage takes
               the driver's last state, replays the rounds since with its peers, and ends
               bit-identical
  allreduce-kill  the same with that task's Python worker killed (SIGKILL) mid-round
  allreduce-int8-raise, sync-int8-raise  as allreduce-raise and sync-raise with
               compression="int8" (the ring's error feedback restarts where the replay starts;
               the hub's tasks keep theirs in memory, and a retried stage starts it from zero)
  easgd-raise  as sync-raise in synchronous EASGD: the retried tasks take back their own
               weights and momentum (from the driver) and the fit ends bit-identical
  async-kill   an async fit (a push per step) whose task (epoch 2, partition 0, attempt 0) is
               killed after 5 steps; reports the pushes applied and dropped per epoch
  shards-raise  an async fit of one worker on one parameter server shard (num_servers=1) whose
               task, the shard's host, raises in epoch 2 (attempt 0), and the same fit without the
               fault: the retried stage's shard starts from the driver's model after epoch 1 and
               the epoch runs again; reports whether the final weights are bit-identical
  shards2-raise  two workers on two shards, the host of shard 1 raising in epoch 2: reports
               the pushes applied and dropped per epoch and the loss
  sync-shards-raise  sync rounds of gradients (Adam) of two workers on two shards (num_servers=2),
               the host of shard 1 raising in round 7 (epoch 2), and the same fit without the fault:
               the driver replays epoch 2's rounds from its model and Adam's slots after epoch 1; reports whether
               the final weights are bit-identical, the rounds and the loss
  checkpoint   a sync fit writing a checkpoint every round, printing "epoch N done" after each
               epoch (the test kills the whole job there); with --resume it resumes
"""
import argparse
import json
import os
import sys

import cloudpickle
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faults  # noqa: E402

cloudpickle.register_pickle_by_value(faults)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", required=True,
                        help="sync-raise, sync-kill, sync-kill-executor, sync-kill-worker, easgd-raise, "
                             "allreduce-raise, allreduce-kill, "
                             "async-kill or checkpoint")
    parser.add_argument("--marker-dir")
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    from sparkdl.spark import get_session
    spark = get_session(app_name=f"sparkdl-fault-{args.scenario}")
    spark.sparkContext.setLogLevel("ERROR")
    reports = {}
    for scenario in args.scenario.split(","):
        markers = os.path.join(args.marker_dir, scenario) if args.marker_dir else None
        if markers:
            os.makedirs(markers, exist_ok=True)
        reports[scenario] = run(spark, scenario, markers, args)
    with open(args.out, "w") as f:
        json.dump(reports, f)
    spark.stop()


def run(spark, scenario, markers, args) -> dict:
    report = {"master": spark.sparkContext.master}
    if scenario in ("sync-raise", "sync-kill", "sync-kill-executor", "easgd-raise", "allreduce-raise",
                    "allreduce-kill", "allreduce-int8-raise", "sync-int8-raise"):
        mode, fault = scenario.split("-", 1)
        options = {}
        if fault.startswith("int8-"):
            fault, options = fault[5:], {"compression": "int8"}
        if mode == "allreduce":
            mode, options = "sync", dict(options, transport="allreduce")
        clean, clean_history = faults.train(spark, mode=mode, mode_options=options)
        faulty, history = faults.train(spark, mode=mode, fault=fault, job="sparkdl round 3/", partition=0,
                                       after=2, marker_dir=markers, mode_options=options)
        report.update(identical=all(np.array_equal(a, b) for a, b in
                                    zip(clean.get_weights(), faulty.get_weights())),
                      max_abs_diff=float(np.abs(clean.get_flat_weights() - faulty.get_flat_weights()).max()),
                      rounds=len(history.rounds), execution=history.settings["execution"],
                      accuracy=[history.history["accuracy"][-1], clean_history.history["accuracy"][-1]])
    elif scenario == "sync-kill-worker":
        try:
            faults.train(spark, mode="sync", fault="kill-worker", job="sparkdl round 3/", partition=0, after=2,
                         marker_dir=markers, mode_options={"round_timeout": 20.0, "timeout": 6.0})
        except Exception as error:  # noqa: BLE001 - the report names it
            report.update(error=type(error).__name__, message=str(error))
    elif scenario == "async-kill":
        _, history = faults.train(spark, mode="async", frequency="batch", fault="kill",
                                  job="sparkdl async epoch 2/", partition=0, after=5, marker_dir=markers)
        report.update(pushes=[r["pushes"] for r in history.rounds],
                      duplicates=[r["duplicate_pushes"] for r in history.rounds],
                      steps=[r["steps"] for r in history.rounds],
                      loss=history.history["loss"])
    elif scenario in ("shards-raise", "shards2-raise"):
        k = 1 if scenario == "shards-raise" else 2
        fault = {"fault": "raise", "job": "sparkdl async epoch 2/", "partition": k - 1, "after": 3,
                 "marker_dir": markers}
        clean, _ = faults.train_sharded(spark, workers=k, num_servers=k)
        faulty, history = faults.train_sharded(spark, workers=k, num_servers=k, **fault)
        report.update(identical=all(np.array_equal(a, b) for a, b in
                                    zip(clean.get_weights(), faulty.get_weights())),
                      pushes=[r["pushes"] for r in history.rounds],
                      duplicates=[r["duplicate_pushes"] for r in history.rounds],
                      loss=history.history["loss"], execution=history.settings["execution"])
    elif scenario == "sync-shards-raise":
        fault = {"fault": "raise", "job": "sparkdl round 7/", "partition": 1, "after": 2, "marker_dir": markers}
        # Adam: the new shards take the driver's slots as of its last take, and the rounds replay.
        from sparkdl.engine.optimizers import Adam
        clean, _ = faults.train_sharded(spark, workers=2, num_servers=2, mode="sync", optimizer=Adam(0.01))
        faulty, history = faults.train_sharded(spark, workers=2, num_servers=2, mode="sync", optimizer=Adam(0.01),
                                               **fault)
        report.update(identical=all(np.array_equal(a, b) for a, b in
                                    zip(clean.get_weights(), faulty.get_weights())),
                      rounds=len(history.rounds), loss=history.history["loss"],
                      execution=history.settings["execution"])
    elif scenario == "checkpoint":
        from sparkdl.engine.callbacks import Callback

        class Announce(Callback):
            def on_epoch_end(self, epoch, logs=None):
                print(f"epoch {epoch + 1} done", flush=True)

        net, history = faults.train(spark, epochs=6, fit_options={
            "checkpoint_dir": args.checkpoint_dir, "checkpoint_every": 1, "resume": args.resume,
            "callbacks": [Announce()]})
        report.update(weights=net.get_flat_weights().tolist(), resumed_from=history.resumed_from,
                      rounds=[r["round"] for r in history.rounds])
    else:
        raise SystemExit(f"fault_job: no scenario {scenario!r}")
    return report


if __name__ == "__main__":
    main()
