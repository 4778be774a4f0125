"""A fit as one Spark job: the tasks keep block and model between rounds and carry out the
driver's orders. The in-job path must give what the per-round path gives, bit for bit; take
callbacks between rounds; evaluate a validation DataFrame while its tasks hold every slot;
leave no task running however the fit ends; and fall back, saying why, where it cannot run."""
import numpy as np
import pytest

from sparkdl import callbacks, optimizers
from sparkdl.spark import SparkModel, from_arrays, job
from tests.helpers import compiled_mlp


@pytest.fixture(scope="module")
def frames(spark, mnist):
    x, y = mnist["x_train"][:800], mnist["y_train"][:800]
    train = from_arrays(spark, x, y, num_partitions=2).cache()
    val = from_arrays(spark, mnist["x_test"][:300], mnist["y_test"][:300], num_partitions=3).cache()
    return {"train": train, "val": val, "x": x, "y": y}


def tracker(spark):
    """Spark's status tracker once every scheduler event so far has reached it (it learns of
    jobs through the asynchronous listener bus)."""
    spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(30_000)
    return spark.sparkContext.statusTracker()


def jobs_of(spark, history):
    return tracker(spark).getJobIdsForGroup(history.settings["job_group"])


@pytest.mark.parametrize("mode, options", [("sync", {"frequency": 5}), ("sync", {"aggregate": "gradients"}),
                                           ("async", {"frequency": "batch"}), ("ssp", {"staleness": 1}),
                                           ("easgd", {"frequency": 5}), ("easgd", {"variant": "async"}),
                                           ("adag", {"frequency": 4})])
def test_a_fit_is_one_spark_job(spark, frames, mode, options):
    spark_model = SparkModel(compiled_mlp(), mode=mode, num_workers=2, **options)
    history = spark_model.fit(frames["train"], epochs=3, batch_size=32, verbose=0)
    assert history.settings["execution"] == "one job per fit"
    assert len(jobs_of(spark, history)) == 1
    assert len(history.history["loss"]) == 3 and history.history["loss"][-1] < history.history["loss"][0]
    assert not tracker(spark).getActiveJobsIds()


@pytest.mark.parametrize("options", [{"frequency": 5}, {"frequency": "epoch", "aggregate": "gradients"},
                                     {"mode": "easgd", "frequency": 5},
                                     {"mode": "easgd", "variant": "async", "frequency": 4, "num_workers": 1},
                                     {"mode": "async", "frequency": 4, "num_workers": 1}],
                         ids=["sync", "sync-gradients", "easgd", "easgd-async-one-worker", "async-one-worker"])
def test_in_job_rounds_equal_a_job_per_round_bit_for_bit(spark, frames, options):
    """The same worker code and the same partition-ordered sum: executing the rounds inside
    one job changes nothing in the numbers. Where workers keep state between rounds or epochs
    (EASGD's own weights and momentum, the async workers' momentum), it is the partition's
    on both paths: kept by the task, or by the driver and sent to whichever Python worker runs
    the partition next."""
    weights, histories = [], []
    for execution in ("auto", "rounds"):
        model = compiled_mlp(seed=2)
        history = SparkModel(model, **{"num_workers": 2, "seed": 4, "execution": execution, **options}).fit(
            frames["train"], epochs=2, batch_size=32, verbose=0)
        weights.append(model.get_flat_weights())
        histories.append(history)
    np.testing.assert_array_equal(weights[0], weights[1])
    assert histories[0].history == histories[1].history
    assert histories[0].settings["execution"] == "one job per fit"
    unit = "epoch" if options.get("mode") in ("async",) or options.get("variant") == "async" else "round"
    assert histories[1].settings["execution"] == f"one job per {unit} (execution='rounds' was asked for)"
    assert len(jobs_of(spark, histories[1])) == len(histories[1].rounds)
    assert np.abs(weights[0] - compiled_mlp(seed=2).get_flat_weights()).max() > 1e-3


def test_validation_dataframe_is_evaluated_by_the_training_tasks(spark, frames):
    """local[2], two workers holding both slots: the validation rows (in three partitions of
    their own) are zipped to the training tasks, which evaluate them at each epoch's end."""
    model = compiled_mlp(seed=1)
    spark_model = SparkModel(model, num_workers=2, seed=1)
    history = spark_model.fit(frames["train"], epochs=2, batch_size=32, verbose=0,
                              validation_data=frames["val"])
    assert history.settings["execution"] == "one job per fit" and len(jobs_of(spark, history)) == 1
    expected = spark_model.evaluate(frames["val"])       # at the final weights, a job of its own
    assert history.history["val_loss"][-1] == pytest.approx(expected["loss"], rel=1e-6)
    assert history.history["val_accuracy"][-1] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert history.history["val_loss"][0] != history.history["val_loss"][1]


class _Boom(callbacks.Callback):
    def __init__(self, error):
        super().__init__()
        self.error = error

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise self.error


@pytest.mark.parametrize("error", [RuntimeError("callback failed"), KeyboardInterrupt()])
def test_no_task_outlives_a_failed_or_interrupted_fit(spark, frames, error):
    spark_model = SparkModel(compiled_mlp(), num_workers=2)
    with pytest.raises(type(error)):
        spark_model.fit(frames["train"], epochs=5, batch_size=32, verbose=0, callbacks=[_Boom(error)])
    assert not tracker(spark).getActiveJobsIds()
    assert len(spark_model.history.rounds) == 2
    # The slots are free: the next fit runs as one job again.
    history = SparkModel(compiled_mlp(), num_workers=2).fit(frames["train"], epochs=1, batch_size=32, verbose=0)
    assert history.settings["execution"] == "one job per fit"


def test_early_stopping_and_stop_training_end_the_tasks_cleanly(spark, frames):
    class Stop(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    history = SparkModel(compiled_mlp(), num_workers=2, frequency=10).fit(
        frames["train"], epochs=6, batch_size=32, verbose=0, callbacks=[Stop()])
    assert history.epoch == [0, 1] and len(history.rounds) == 4
    job_id, = jobs_of(spark, history)
    assert tracker(spark).getJobInfo(job_id).status == "SUCCEEDED"


def test_a_learning_rate_set_between_rounds_reaches_the_next_round(spark, frames):
    """One round an epoch (tau = 40 steps of 10 rows); a callback zeroes the learning rate of
    plain SGD after epoch 1, so the later rounds leave the weights where epoch 1 left them."""
    seen = {}

    class Freeze(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = self.model.get_flat_weights()
            self.model.optimizer.learning_rate = 0.0

    model = compiled_mlp()
    model.compile(optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    SparkModel(model, num_workers=2, frequency=40).fit(frames["train"], epochs=3, batch_size=10,
                                                       verbose=0, callbacks=[Freeze()])
    assert np.abs(seen[0] - compiled_mlp().get_flat_weights()).max() > 1e-3
    np.testing.assert_array_equal(seen[1], seen[0])
    np.testing.assert_array_equal(model.get_flat_weights(), seen[0])


def test_more_workers_than_slots_falls_back_to_a_job_per_round_and_says_why(spark, frames, caplog):
    caplog.set_level("WARNING", logger="sparkdl.spark.spark_model")
    history = SparkModel(compiled_mlp(), num_workers=3).fit(frames["train"], epochs=1, batch_size=32, verbose=0)
    execution = history.settings["execution"]
    assert execution.startswith("one job per round (3 partitions train but the cluster runs 2 tasks at once")
    assert "set num_workers <= 2" in execution
    assert [r.getMessage() for r in caplog.records if "runs one job per round" in r.getMessage()]


def test_transport_spark_runs_a_job_per_round(spark, frames):
    history = SparkModel(compiled_mlp(), num_workers=2, transport="spark", frequency=10).fit(
        frames["train"], epochs=1, batch_size=40, verbose=0)
    assert history.settings["execution"].startswith("one job per round (transport='spark'")
    assert len(jobs_of(spark, history)) == len(history.rounds) == 1


class _Conf(dict):
    def get(self, key, default=None):
        return super().get(key, default)


class _FakeContext:
    def __init__(self, conf):
        self.conf = _Conf(conf)

    def getConf(self):
        return self.conf


def test_dynamic_allocation_and_unknown_slots(monkeypatch):
    monkeypatch.setattr(job, "task_slots", lambda sc: None)
    sc = _FakeContext({"spark.dynamicAllocation.enabled": "true"})
    assert "spark.dynamicAllocation.enabled=true" in job.fallback_reason(sc, 2, "socket")
    assert job.fallback_reason(_FakeContext({}), 64, "socket") is None


def test_a_job_short_of_slots_names_the_executors_lost_since_it_began(monkeypatch):
    """The wording of what a waiting fit reports (the standalone test loses one executor for real)."""
    fit_job = object.__new__(job.FitJob)          # no Spark job: only the slot and executor counts
    fit_job.sc, fit_job.executors = None, {"0", "1", "2", "10"}
    monkeypatch.setattr(job, "task_slots", lambda sc: 4)
    assert fit_job.short_of_slots(4) is None
    monkeypatch.setattr(job, "task_slots", lambda sc: 2)
    monkeypatch.setattr(job, "executor_ids", lambda sc: {"0", "2"})
    assert fit_job.short_of_slots(4) == ("its barrier stage needs 4 task slots at once and the cluster has 2: "
                                         "executors 1, 10 were lost and no executor replaced them")
    monkeypatch.setattr(job, "executor_ids", lambda sc: {"0", "2", "11"})     # one came, two slots short still
    assert fit_job.short_of_slots(4) == ("its barrier stage needs 4 task slots at once and the cluster has 2: "
                                         "executors 1, 10 were lost")
    monkeypatch.setattr(job, "executor_ids", lambda sc: None)         # Spark does not say
    assert fit_job.short_of_slots(4) == "its barrier stage needs 4 task slots at once and the cluster has 2"


def test_default_workers_are_cut_to_the_slots(monkeypatch):
    class Context:
        defaultParallelism = 8
    monkeypatch.setattr(job, "task_slots", lambda sc: 3)
    assert SparkModel(compiled_mlp())._workers(Context()) == 3
    assert SparkModel(compiled_mlp(), num_workers=5)._workers(Context()) == 5
    monkeypatch.setattr(job, "task_slots", lambda sc: None)
    assert SparkModel(compiled_mlp())._workers(Context()) == 8


def test_execution_is_checked():
    with pytest.raises(ValueError, match=r"expected execution 'auto'.*received execution='barrier'"):
        SparkModel(compiled_mlp(), execution="barrier")


def test_a_second_fit_of_the_same_dataframe_reuses_its_converted_blocks(spark, frames, monkeypatch):
    from sparkdl.spark import block_cache, release_cached_blocks
    from sparkdl.spark import spark_model as spark_model_mod
    calls = []
    convert = spark_model_mod.dataframe_blocks
    monkeypatch.setattr(spark_model_mod, "dataframe_blocks", lambda *a, **k: calls.append(a[0]) or convert(*a, **k))
    release_cached_blocks()
    weights = []
    for df in (frames["train"], frames["train"], frames["train"].select("features", "label")):
        model = compiled_mlp(seed=5)
        SparkModel(model, num_workers=2, seed=5).fit(df, epochs=1, batch_size=32, verbose=0)
        weights.append(model.get_flat_weights())
    # Converted for the first fit, reused by the second; another DataFrame object is converted anew.
    assert len(calls) == 2 and calls[0] is frames["train"]
    np.testing.assert_array_equal(weights[0], weights[1])
    np.testing.assert_array_equal(weights[0], weights[2])
    kept = block_cache._entry[2]
    assert kept.rdd.is_cached
    release_cached_blocks()
    assert not kept.rdd.is_cached and block_cache._entry is None
