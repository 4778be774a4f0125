"""``num_servers=K`` on local[2]: a small Wide & Deep trained in the async modes against K
parameter server shards hosted by the fit's tasks, with row-sparse pushes and pulls, against
the driver's whole-vector parameter server on the same data and seeds."""
import numpy as np
import pytest

from sparkdl.data.synthetic import click_data
from sparkdl.engine import optimizers, zoo
from sparkdl.engine.random import set_random_seed
from sparkdl.spark import SparkModel
from tests.helpers import compiled_mlp

NUM_IDS = 2 ** 12
ROWS = 3000


def roc_auc(y, p) -> float:
    """The area under the ROC curve: the chance a positive outscores a negative."""
    ranks = np.argsort(np.argsort(p, kind="stable")) + 1.0
    positives = y == 1
    n1, n0 = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def click_model(seed=0, momentum=0.0):
    set_random_seed(seed)
    model = zoo.wide_and_deep(num_ids=NUM_IDS, num_fields=9, num_dense=4, embedding_dim=8, hidden=(16,))
    model.compile(optimizer=optimizers.SGD(0.1, momentum=momentum), loss="binary_crossentropy")
    return model


@pytest.fixture(scope="module")
def clicks(spark):
    train, test = click_data(ROWS, seed=0, num_ids=NUM_IDS), click_data(1000, seed=0, num_ids=NUM_IDS)
    pairs = [((i, d), float(y)) for i, d, y in zip(train.ids, train.dense, train.label)]
    return {"rdd": lambda parts: spark.sparkContext.parallelize(pairs, parts),
            "x_test": [test.ids, test.dense], "y_test": test.label}


def fit(clicks, parts=2, epochs=3, momentum=0.0, **settings):
    model = click_model(momentum=momentum)
    spark_model = SparkModel(model, num_workers=parts, **settings)
    history = spark_model.fit(clicks["rdd"](parts), epochs=epochs, batch_size=32, verbose=0)
    auc = roc_auc(clicks["y_test"], model.predict(clicks["x_test"]).reshape(-1))
    return model, history, auc


@pytest.fixture(scope="module")
def whole_vector(clicks):
    return fit(clicks, mode="async", frequency=4)


@pytest.mark.parametrize("mode, k, options", [("async", 1, {}), ("async", 2, {}), ("hogwild", 2, {}),
                                              ("ssp", 2, {"staleness": 1}),
                                              ("async", 2, {"aggregate": "gradients"})])
def test_shards_in_the_tasks_learn_as_the_drivers_server_does(clicks, whole_vector, mode, k, options):
    """Against the driver's server in mode async (in gradients mode: with gradients too; each
    shard's optimizer steps the dense part and only the pushed rows)."""
    _, whole, whole_auc = whole_vector if "aggregate" not in options else \
        fit(clicks, mode="async", frequency=4, aggregate=options["aggregate"])
    model, history, auc = fit(clicks, mode=mode, frequency=4, num_servers=k, **options)
    assert history.settings["num_servers"] == k
    assert auc > 0.7 and auc >= whole_auc - 0.02, (auc, whole_auc)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # Every step of every partition, a push of 4 steps each: as many pushes as the driver's server.
    assert [r["pushes"] for r in history.rounds] == [r["pushes"] for r in whole.rounds]
    assert all(r["duplicate_pushes"] == 0 for r in history.rounds)
    if mode == "ssp":       # the widest clock gap a pull saw, within the bound (the shards measure it)
        assert all(0 <= r["staleness"] <= options["staleness"] for r in history.rounds)
    else:
        assert all("staleness" not in r for r in history.rounds)
    # A push carries the dense part and the rows 4 batches touched, not the tables.
    vector = 4 * (model.flat_weights.size + model.flat_state.size)
    per_push = [r["bytes_pushed"] / r["pushes"] for r in history.rounds]
    assert max(per_push) < vector / 5, (per_push, vector)
    assert all(r["bytes_pushed"] < w["bytes_pushed"] / 5 for r, w in zip(history.rounds, whole.rounds))


def test_validation_and_callbacks_see_the_shards_values_at_each_epochs_end(clicks):
    """The driver's model takes the shards' values before validation and the epoch's callbacks."""
    from sparkdl.engine.callbacks import Callback

    seen = []

    class Weights(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model.flat_weights.copy())

    model = click_model()
    start = model.flat_weights.copy()
    history = SparkModel(model, mode="async", frequency=4, num_workers=2, num_servers=2).fit(
        clicks["rdd"](2), epochs=2, batch_size=32, verbose=0, validation_split=0.2, callbacks=[Weights()])
    assert len(history.history["val_loss"]) == 2 and np.all(np.isfinite(history.history["val_loss"]))
    assert history.history["val_loss"][-1] < history.history["val_loss"][0]
    assert len(seen) == 2 and not np.array_equal(seen[0], start) and not np.array_equal(seen[1], seen[0])
    np.testing.assert_array_equal(seen[1], model.flat_weights)
    assert 595 <= sum(history.validation_rows_per_partition) <= 605        # a fifth of each partition


@pytest.mark.parametrize("k", [1, 2])
def test_validation_rows_in_the_tasks_are_scored_from_rows_pulled_from_the_shards(spark, k):
    """A DataFrame's validation rows stay in the tasks: each batch pulls the rows it reads from
    the shards, which hold the epoch's values; the scores are those of the driver's final model
    on the same rows (float64 sums over the partitions against the driver's batches)."""
    from pyspark.sql.types import ArrayType, DoubleType, LongType, StructField, StructType

    from sparkdl import layers
    from sparkdl.models import Sequential
    train, val = click_data(2000, seed=0, num_ids=NUM_IDS), click_data(700, seed=0, num_ids=NUM_IDS)
    set_random_seed(0)
    model = Sequential([layers.Input((9,), dtype="int64"), layers.Embedding(NUM_IDS, 4), layers.Flatten(),
                        layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=optimizers.SGD(0.1), loss="binary_crossentropy", metrics=["auc"])
    schema = StructType([StructField("features", ArrayType(LongType())), StructField("label", DoubleType())])
    frame = spark.createDataFrame([([int(i) for i in r], float(y)) for r, y in zip(val.ids, val.label)], schema)
    rdd = spark.sparkContext.parallelize([(i, float(y)) for i, y in zip(train.ids, train.label)], 2)
    history = SparkModel(model, mode="async", frequency=4, num_workers=2, num_servers=k).fit(
        rdd, epochs=2, batch_size=32, verbose=0, validation_data=frame.repartition(3))
    expected = model.evaluate(val.ids, val.label, batch_size=256, verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(expected[0], rel=1e-5)
    assert history.history["val_auc"][-1] == pytest.approx(expected[1], rel=1e-5)
    assert history.history["val_auc"][-1] > 0.6


@pytest.mark.parametrize("momentum", [0.0, 0.9], ids=["compact-worker", "whole-table-worker"])
def test_the_drivers_model_holds_the_shards_values_bit_for_bit_with_one_worker(clicks, momentum):
    """One worker, weight deltas: the row-sparse epoch pushes exactly what the whole-vector
    epoch pushes — from a compact worker with plain SGD, from the task's whole-table model with
    momentum — and the shard applies it on the same elements, so the driver's model ends with
    the whole-vector fit's weights. (A shard lives in a training task, so one worker hosts one
    shard; tests/distributed/test_sparse_worker.py checks K = 1, 2, 3.)"""
    whole, _, _ = fit(clicks, parts=1, epochs=2, momentum=momentum, mode="async", frequency=3)
    sharded, history, _ = fit(clicks, parts=1, epochs=2, momentum=momentum, mode="async", frequency=3,
                              num_servers=1)
    assert not np.array_equal(sharded.flat_weights, click_model().flat_weights)
    np.testing.assert_array_equal(sharded.flat_weights, whole.flat_weights)
    np.testing.assert_array_equal(sharded.flat_state, whole.flat_state)
    assert len(history.rounds) == 2


def test_shards_optimizer_state_lives_in_the_drivers_model_and_a_checkpoint_resumes_it(clicks, tmp_path):
    """Gradients mode with Adam: the shards step copies of the model's optimizer and hand their
    slots and steps back with their values at each epoch's end, so the driver's optimizer
    holds them, a checkpoint keeps them, and a fit resumed from epoch 1's checkpoint ends bit
    for bit where a straight two-epoch fit does (one worker: the pushes come in one order)."""
    def adam_fit(epochs, **options):
        set_random_seed(0)
        model = zoo.wide_and_deep(num_ids=NUM_IDS, num_fields=9, num_dense=4, embedding_dim=8, hidden=(16,))
        model.compile(optimizer=optimizers.Adam(0.01), loss="binary_crossentropy")
        history = SparkModel(model, mode="async", frequency=3, aggregate="gradients", num_workers=1,
                             num_servers=1).fit(clicks["rdd"](1), epochs=epochs, batch_size=32, verbose=0, **options)
        return model, history

    straight, history = adam_fit(2)
    pushes = sum(r["pushes"] for r in history.rounds)
    assert straight.optimizer.iterations == pushes > 0
    m = straight.optimizer.slots["m"]
    assert np.count_nonzero(m[:straight.dense_size]) == straight.dense_size         # every dense weight stepped
    assert 0 < np.count_nonzero(m[straight.dense_size:]) < m.size - straight.dense_size  # the touched rows only
    folder = tmp_path / "ckpt"
    adam_fit(1, checkpoint_dir=str(folder))
    resumed, history = adam_fit(2, checkpoint_dir=str(folder), resume=True)
    assert history.resumed_from == 1
    np.testing.assert_array_equal(resumed.flat_weights, straight.flat_weights)
    for name in ("m", "v"):
        np.testing.assert_array_equal(resumed.optimizer.slots[name], straight.optimizer.slots[name])
    assert resumed.optimizer.iterations == straight.optimizer.iterations


@pytest.mark.parametrize("settings, message", [
    ({"mode": "easgd", "rho": 1.0}, r"num_servers=1 shards the parameter server of modes async, hogwild, ssp, "
                                    r"and the rounds of mode 'sync' with aggregate='gradients'; received "
                                    r"mode='easgd'"),
    ({"mode": "async", "execution": "rounds"}, r"num_servers=1 runs the shards inside the fit's one barrier "
                                               r"job; received transport='socket', execution='rounds'"),
    ({"mode": "async", "compression": "fp16"}, r"num_servers=1 sends row-sparse float32 pushes and pulls; "
                                               r"received compression='fp16'"),
    ({"mode": "async", "num_servers": -1}, r"expected num_servers >= 0"),
    ({"mode": "async", "num_servers": 3, "num_workers": 2}, r"expected num_servers <= num_workers=2 \(each shard "
                                                            r"lives in a training task\), received num_servers=3"),
])
def test_settings_that_cannot_shard_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        SparkModel(click_model(), **{"num_servers": 1, **settings})


def test_a_model_without_embedding_tables_is_refused():
    with pytest.raises(ValueError, match=r"num_servers=2 shards the rows of a model's Embedding tables; "
                                         r"the model has none: use num_servers=0"):
        SparkModel(compiled_mlp(), mode="async", num_servers=2)


def test_more_shards_than_training_partitions_are_refused_before_the_fit_starts(clicks):
    spark_model = SparkModel(click_model(), mode="async", num_servers=3)       # local[2]: 2 partitions
    with pytest.raises(ValueError, match=r"expected num_servers <= 2, the partitions that train .*"
                                         r"received num_servers=3"):
        spark_model.fit(clicks["rdd"](2), epochs=1, verbose=0)
    assert spark_model.history is None


def test_num_servers_is_a_setting_that_round_trips(tmp_path):
    spark_model = SparkModel(click_model(), mode="hogwild", num_servers=2)
    assert spark_model.get_config()["num_servers"] == 2
    assert SparkModel(click_model(), **spark_model.get_config()).num_servers == 2
    spark_model.save(tmp_path / "m.zip")
    from sparkdl.spark import load_spark_model
    assert load_spark_model(tmp_path / "m.zip").num_servers == 2


def test_the_drivers_files_go_to_sparks_scratch_space_when_it_is_set(tmp_path):
    from sparkdl.spark.sharded import scratch_dir

    assert scratch_dir({"spark.local.dir": f"{tmp_path}/a, {tmp_path}/b"}) == f"{tmp_path}/a"
    assert scratch_dir({}) is None            # the system's temporary directory
