"""transport="allreduce": the tasks of the fit's barrier job keep the model and average among
themselves (``sparkdl.distributed.ring``). The weights equal the driver hub's bit for bit
(weights and gradients, the summation order being the hub's by construction); no weight
goes through the driver on ordinary rounds; checkpoints resume to the same weights; where
it cannot run, a ValueError names the alternative. Failed and killed tasks (barrier retries,
on local[2,4] and local-cluster[2,1,1024]) are in ``test_faults``."""
import json
import threading

import numpy as np
import pytest

from sparkdl.distributed import ring_task
from sparkdl.spark import SparkModel, executor
from tests.helpers import compiled_mlp, spark_submit
from tests.spark import faults


def fit(frame, transport, epochs=2, **options):
    model = compiled_mlp()
    spark_model = SparkModel(model, mode="sync", frequency=10, num_workers=2, seed=0, transport=transport, **options)
    history = spark_model.fit(frame, epochs=epochs, batch_size=64, verbose=0)
    return model, history


def test_mnist_weights_are_bit_identical_to_the_hub_and_only_epoch_ends_bring_weights_back(mnist):
    hub, hub_history = fit(mnist["train"], "socket")
    ring, history = fit(mnist["train"], "allreduce")
    assert history.settings["transport"] == "allreduce" and history.settings["execution"] == "one job per fit"
    np.testing.assert_array_equal(ring.get_flat_weights(), hub.get_flat_weights())
    assert ring.optimizer.iterations == hub.optimizer.iterations
    np.testing.assert_array_equal(ring.optimizer.slots["momentum"], hub.optimizer.slots["momentum"])
    assert history.history == hub_history.history
    # 2500 rows a partition at batch 64: 40 steps, 4 rounds of 10 an epoch. The driver sends
    # the starting state once to each task (round 1) and receives it at each epoch's end.
    state = ring.get_flat_weights().nbytes + ring.optimizer.slots["momentum"].nbytes
    assert [r["bytes"] for r in history.rounds] == [2 * state, 0, 0, state, 0, 0, 0, state]
    assert all(r["ring_bytes"] == 2 * state for r in history.rounds)
    accuracy = ring.evaluate(mnist["x_test"], mnist["y_test"])["accuracy"]
    assert accuracy > 0.85


def test_one_worker_is_a_ring_of_one_and_still_the_hubs_weights(spark):
    weights = {}
    for transport in ("socket", "allreduce"):
        net = faults.model(optimizer="adam")
        SparkModel(net, frequency=4, num_workers=1, seed=0, transport=transport).fit(
            faults.digits_frame(spark), epochs=2, batch_size=32, verbose=0)
        weights[transport] = net.get_flat_weights()
    np.testing.assert_array_equal(weights["allreduce"], weights["socket"])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_gradient_aggregation_steps_every_tasks_optimizer_to_the_hubs_weights(spark, optimizer):
    frame = faults.digits_frame(spark)
    weights = {}
    for transport in ("socket", "allreduce"):
        net, history = faults.train(spark, epochs=2, optimizer=optimizer,
                                    mode_options={"transport": transport, "aggregate": "gradients"})
        weights[transport] = (net.get_flat_weights(), net.optimizer.iterations, history.history)
    assert frame.count() == 1200
    np.testing.assert_array_equal(weights["allreduce"][0], weights["socket"][0])
    assert weights["allreduce"][1:] == weights["socket"][1:]


def test_a_checkpointed_fit_resumes_mid_epoch_to_the_weights_of_a_straight_one(spark, tmp_path):
    folder = tmp_path / "ring"
    options = {"mode_options": {"transport": "allreduce"}}
    faults.train(spark, epochs=1, fit_options={"checkpoint_dir": str(folder), "checkpoint_every": 3}, **options)
    newest = sorted(folder.iterdir())
    assert [p.name for p in newest] == ["ckpt-00000003.sdlckpt", "ckpt-00000005.sdlckpt"]
    newest[-1].unlink()             # as if the fit had stopped in round 4
    resumed, history = faults.train(spark, epochs=2, fit_options={"checkpoint_dir": str(folder), "resume": True},
                                    **options)
    straight, expected = faults.train(spark, epochs=2)          # the hub's
    assert history.resumed_from == 3 and len(history.rounds) == 10
    np.testing.assert_array_equal(resumed.get_flat_weights(), straight.get_flat_weights())
    assert history.history == expected.history


def test_callbacks_and_validation_see_the_tasks_weights_at_each_epoch_end_and_can_stop_the_fit(spark):
    from sparkdl.engine.callbacks import Callback

    class Keep(Callback):
        def __init__(self, stop_after):
            super().__init__()
            self.weights, self.stop_after = [], stop_after

        def on_epoch_end(self, epoch, logs=None):
            self.weights.append(self.model.get_flat_weights())
            self.model.stop_training = epoch + 1 == self.stop_after

    ring, hub = Keep(2), Keep(2)
    net, history = faults.train(spark, epochs=3, fit_options={"callbacks": [ring], "validation_split": 0.1},
                                mode_options={"transport": "allreduce"})
    _, expected = faults.train(spark, epochs=3, fit_options={"callbacks": [hub], "validation_split": 0.1})
    assert len(history.rounds) == len(expected.rounds) and len(ring.weights) == 2
    assert "val_loss" in history.history and history.history == expected.history
    for a, b in zip(ring.weights, hub.weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(net.get_flat_weights(), hub.weights[-1])


@pytest.mark.parametrize("options, message", [
    ({"mode": "async"}, r"transport='allreduce' averages synchronous rounds \(mode='sync'\); received mode='async'.*"
                        r"use transport='socket'"),
    ({"mode": "easgd"}, r"received mode='easgd'"),
    ({"execution": "rounds"}, r"received execution='rounds': use execution='auto', or transport='socket' or 'spark'"),
])
def test_settings_allreduce_cannot_run_are_refused_naming_the_alternative(options, message):
    with pytest.raises(ValueError, match=message):
        SparkModel(faults.model(), transport="allreduce", **options)


def test_a_fit_that_cannot_run_as_one_barrier_job_is_refused(spark):
    spark_model = SparkModel(faults.model(), transport="allreduce", num_workers=3, frequency=4)
    with pytest.raises(ValueError, match=r"transport='allreduce' needs the fit to run as one barrier job, and it "
                                         r"cannot here: 3 partitions train but the cluster runs 2 tasks at once"):
        spark_model.fit(faults.digits_frame(spark), epochs=1, batch_size=32, verbose=0)


@pytest.mark.parametrize("diverging", [6, 8])
def test_divergence_names_the_round_and_partition_and_what_the_driver_holds(spark, diverging):
    """Round 6 starts epoch 2; round 8 is inside it: either way the driver's model holds the
    state after round 5, the last epoch's end, the last state it received."""
    net = faults.model(fault="nan", job=f"sparkdl round {diverging}/", partition=1, after=1)
    good, _ = faults.train(spark, epochs=1)
    spark_model = SparkModel(net, frequency=4, num_workers=2, seed=0, transport="allreduce")
    with pytest.raises(FloatingPointError, match=rf"round {diverging} \(partition 1: .*\); the driver's model "
                                                 rf"holds the state after round 5, the last it received"):
        spark_model.fit(faults.digits_frame(spark), epochs=3, batch_size=32, verbose=0)
    np.testing.assert_array_equal(net.get_flat_weights(), good.get_flat_weights())


def fit_both(frame, epochs=1, batch_size=32, **options):
    """``{transport: (model, history)}`` of the same fit with the driver hub and with allreduce."""
    out = {}
    for transport in ("socket", "allreduce"):
        net = faults.model()
        history = SparkModel(net, seed=0, transport=transport, **options).fit(
            frame, epochs=epochs, batch_size=batch_size, verbose=0)
        out[transport] = (net, history)
    return out


def test_an_epoch_longer_than_the_replay_bound_brings_the_state_back_midway_and_keeps_the_hubs_weights(spark):
    runs = fit_both(faults.digits_frame(spark), batch_size=16, frequency="batch", num_workers=2)
    (hub, expected), (ring, history) = runs["socket"], runs["allreduce"]
    np.testing.assert_array_equal(ring.get_flat_weights(), hub.get_flat_weights())
    np.testing.assert_array_equal(ring.optimizer.slots["momentum"], hub.optimizer.slots["momentum"])
    assert ring.optimizer.iterations == hub.optimizer.iterations == 38
    assert history.history == expected.history
    # 600 rows a partition at batch 16: 38 rounds of one step. The base may lag MAX_REPLAY
    # rounds, so partition 0 pushes its state after round 32 as well as at the epoch's end.
    assert ring_task.MAX_REPLAY == 32
    state = ring.get_flat_weights().nbytes + ring.optimizer.slots["momentum"].nbytes
    assert [r["bytes"] for r in history.rounds] == [2 * state] + [0] * 30 + [state] + [0] * 5 + [state]


def test_an_empty_partition_is_reported_and_the_fit_keeps_the_hubs_weights(spark):
    from pyspark.sql import functions as F
    frame = faults.digits_frame(spark).where(F.spark_partition_id() == 0)     # partition 1 holds no row
    runs = fit_both(frame, epochs=2, frequency=4, num_workers=2)
    (hub, expected), (ring, history) = runs["socket"], runs["allreduce"]
    assert history.settings["execution"] == "one job per fit"
    assert history.rows_per_partition == [600, 0] and history.empty_partitions == [1]
    np.testing.assert_array_equal(ring.get_flat_weights(), hub.get_flat_weights())
    assert history.history == expected.history and expected.empty_partitions == [1]


def test_rings_of_three_ranks_on_local_4_keep_the_hubs_weights_around_an_empty_partition(tmp_path):
    """local[4] through spark-submit (``ranks_job.py``): three partitions, by weights and by
    gradients, and four partitions of which partition 1 is empty (ranks 0, 2, 3)."""
    out = tmp_path / "ranks.json"
    run = spark_submit(["--master", "local[4]", "tests/spark/ranks_job.py", "--out", str(out)])
    assert run.returncode == 0, run.stderr[-4000:]
    reports = json.loads(out.read_text())
    assert reports.pop("master") == "local[4]"
    for name, report in reports.items():
        assert report["identical"] and report["same_iterations"] and report["same_history"], (name, report)
        assert report["execution"] == "one job per fit", (name, report)
    assert reports["three"]["rows"] == [400, 400, 400] and reports["gap"]["rows"] == [300, 0, 300, 300]
    assert reports["gap"]["empty"] == [1]
    for name in ("three", "gap"):       # each of 3 ranks sends 2·M·2/3 bytes a round
        assert reports[name]["ring_bytes"] == 4 * reports[name]["state_bytes"], (name, reports[name])


class StuckBarrier:
    """A ``BarrierTaskContext`` whose ``allGather`` raises ``error``, or answers every task's
    message once ``release`` is set (or after 5 s, so an unbounded caller fails the test)."""

    def __init__(self, error=None):
        self.error, self.release = error, threading.Event()

    def allGather(self, message):
        if self.error is not None:
            raise self.error
        self.release.wait(5)
        return [message, "peer"]


def test_the_address_exchange_waits_timeout_seconds_not_sparks_barrier_timeout():
    stuck = StuckBarrier()
    try:
        with pytest.raises(TimeoutError, match=r"allreduce: partition 1 waited 0.05 s for every task of the fit's "
                                               r"barrier stage to tell its ring address \(allGather\)"):
            executor.all_gather(stuck, "me", 0.05, partition=1)
    finally:
        stuck.release.set()
    assert executor.all_gather(stuck, "me", 5.0, partition=1) == ["me", "peer"]
    with pytest.raises(RuntimeError, match="barrier stage failed"):
        executor.all_gather(StuckBarrier(RuntimeError("barrier stage failed")), "me", 5.0, partition=1)


def test_a_callback_watching_rounds_sees_the_tasks_weights_after_every_round(spark):
    from sparkdl.engine.callbacks import Callback

    class EveryRound(Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_batch_end(self, batch, logs=None):
            self.seen.append((batch, logs["loss"], self.model.get_flat_weights()))

    watchers = {}
    for transport in ("socket", "allreduce"):
        watchers[transport] = EveryRound()
        _, history = faults.train(spark, epochs=2, fit_options={"callbacks": [watchers[transport]]},
                                  mode_options={"transport": transport})
    ring, hub = watchers["allreduce"].seen, watchers["socket"].seen
    assert [b for b, _, _ in ring] == [0, 1, 2, 3, 4] * 2 == [b for b, _, _ in hub]
    for (_, loss, weights), (_, expected_loss, expected) in zip(ring, hub):
        assert loss == expected_loss
        np.testing.assert_array_equal(weights, expected)
    # The state comes back from partition 0 after every round, not only at the epochs' ends.
    assert all(r["bytes"] > 0 for r in history.rounds)
