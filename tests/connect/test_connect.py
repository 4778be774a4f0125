"""sparkdl from a Spark Connect client: fits (sync, async, allreduce, shards), predictions,
evaluations and an NNClassifier in a Pipeline on a Connect server's DataFrames, against the
classic session on the same rows in the same partitions; and the clear errors for what a
Connect session cannot run."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import sparkdl
from sparkdl import layers
from sparkdl.models import Sequential
from sparkdl.spark import SparkModel, from_arrays

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    return (x / 16).astype(np.float32), y


def _frames(session, digits, train=1200, val=300):
    """Training and validation frames of the digits, in 2 partitions; a classic session's
    training frame is repartitioned as a Connect fit repartitions its input."""
    x, y = digits
    df = from_arrays(session, x[:train], y[:train], num_partitions=2)
    from sparkdl.spark.connect import is_connect
    if not is_connect(session):
        df = df.repartition(2)
    return df, from_arrays(session, x[train:train + val], y[train:train + val])


def _model(seed=7):
    sparkdl.set_random_seed(seed)
    model = Sequential([layers.Input((64,)), layers.Dense(32, activation="relu"),
                        layers.Dense(10, activation="softmax")])
    model.compile(optimizer=sparkdl.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _same_history(history, reference) -> None:
    assert sorted(history.history) == sorted(reference.history)
    for key, values in reference.history.items():
        assert history.history[key] == pytest.approx(values, rel=1e-6), key


def _fit(session, digits, epochs=4, **settings):
    df, val = _frames(session, digits)
    model = _model()
    spark_model = SparkModel(model, num_workers=2, **settings)
    history = spark_model.fit(df, epochs=epochs, batch_size=32, validation_data=val, verbose=0)
    return spark_model, history


@pytest.mark.parametrize("settings", [dict(mode="sync", frequency=4), dict(mode="async"),
                                      dict(mode="sync", frequency=4, transport="allreduce")],
                         ids=["sync", "async", "allreduce"])
def test_a_connect_fit_trains_as_the_classic_session_does(spark, remote, classic, digits, settings):
    with classic():
        reference, classic_history = _fit(spark, digits, **settings)
    connected, history = _fit(remote, digits, **settings)
    assert history.settings["execution"] == "one job per fit"
    if settings["mode"] == "async":            # pushes land in arrival order: close, not equal
        assert abs(history.history["val_accuracy"][-1] - classic_history.history["val_accuracy"][-1]) < 0.05
    else:                                       # the same rows in the same partitions: the same fit
        for a, b in zip(connected.model.get_weights(), reference.model.get_weights()):
            np.testing.assert_array_equal(a, b)
        _same_history(history, classic_history)
    assert history.history["val_accuracy"][-1] > 0.85


def test_predict_and_evaluate_on_connect_equal_the_classic_sessions(spark, remote, classic, digits):
    model = _model()
    x, y = digits
    model.fit(x[:1000], y[:1000], epochs=2, batch_size=32, verbose=0)
    spark_model = SparkModel(model)
    with classic():
        _, classic_val = _frames(spark, digits)
        classic_scores = spark_model.evaluate(classic_val)
        classic_rows = spark_model.predict(classic_val).select("prediction", "probability").collect()
    _, val = _frames(remote, digits)
    scores = spark_model.evaluate(val)
    assert scores == pytest.approx(classic_scores, rel=1e-6)
    assert scores == pytest.approx(model.evaluate(x[1200:1500], y[1200:1500], return_dict=True), rel=1e-5)
    rows = spark_model.predict(val).select("prediction", "probability").collect()
    assert [r.prediction for r in rows] == [r.prediction for r in classic_rows]
    np.testing.assert_allclose([r.probability.toArray() for r in rows],
                               model.predict(x[1200:1500]), rtol=1e-5, atol=1e-6)


def test_validation_split_on_connect_holds_out_the_classic_sessions_rows(spark, remote, classic, digits):
    histories = []
    for session, mode in ((spark, classic), (remote, contextlib.nullcontext)):
        with mode():
            df, _ = _frames(session, digits)
            spark_model = SparkModel(_model(), num_workers=2, frequency=4)
            histories.append(spark_model.fit(df, epochs=2, batch_size=32, validation_split=0.2, verbose=0))
    assert histories[1].validation_rows_per_partition == histories[0].validation_rows_per_partition
    _same_history(histories[1], histories[0])


def test_a_sharded_parameter_server_runs_on_connect(remote):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 40, size=(1200, 3))
    labels = (ids[:, 0] < 20).astype(np.float32)
    df = from_arrays(remote, ids, labels, num_partitions=2)
    sparkdl.set_random_seed(3)
    model = Sequential([layers.Input((3,), dtype="int64"), layers.Embedding(40, 4), layers.Flatten(),
                        layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=sparkdl.optimizers.Adagrad(0.3), loss="binary_crossentropy", metrics=["accuracy"])
    history = SparkModel(model, mode="async", aggregate="gradients", frequency=1, num_workers=2,
                         num_servers=2).fit(df, epochs=4, batch_size=32, verbose=0)
    assert history.settings["num_servers"] == 2
    assert history.history["accuracy"][-1] > 0.9


def test_an_nnclassifier_in_a_pipeline_on_connect(spark, remote, classic, digits):
    from pyspark.ml import Pipeline

    from sparkdl.ml import NNClassifier
    accuracies = []
    for session, mode in ((spark, classic), (remote, contextlib.nullcontext)):
        with mode():
            df, val = _frames(session, digits)
            stage = NNClassifier(model=_model(), epochs=4, batchSize=32, numWorkers=2, frequency=4)
            fitted = Pipeline(stages=[stage]).fit(df)
            predicted = fitted.transform(val).select("label", "prediction").collect()
            accuracies.append(np.mean([r.label == r.prediction for r in predicted]))
    assert accuracies[1] > 0.8
    assert accuracies[1] == pytest.approx(accuracies[0])


@pytest.mark.parametrize("settings, message", [
    (dict(transport="spark"), "transport='spark'.*does not run on Spark Connect.*transport='socket'"),
    (dict(execution="rounds"), "execution='rounds'.*does not run on Spark Connect.*execution='auto'"),
    (dict(num_workers=3), "3 partitions train but the cluster runs 2 tasks at once.*num_workers <= 2"),
])
def test_what_cannot_run_on_connect_says_so_before_any_job(remote, digits, settings, message):
    df, _ = _frames(remote, digits, train=200)
    with pytest.raises(ValueError, match=message):
        SparkModel(_model(), **settings).fit(df, epochs=1, verbose=0)
    # the server is still there (a barrier stage asking for too many slots would have stopped it)
    assert remote.range(3).count() == 3


@contextlib.contextmanager
def _unreachable_client(session):
    """The client's servers bind 127.0.0.1 but tell the executors 127.0.0.2, where nothing listens."""
    session.conf.set("spark.sparkdl.client.host", "127.0.0.2")
    session.conf.set("spark.sparkdl.client.bindAddress", "127.0.0.1")
    try:
        yield
    finally:
        session.conf.unset("spark.sparkdl.client.host")
        session.conf.unset("spark.sparkdl.client.bindAddress")


def test_fits_of_the_same_connect_dataframe_share_its_converted_blocks(remote, digits):
    from sparkdl.spark import block_cache, release_cached_blocks
    df, _ = _frames(remote, digits, train=400)
    SparkModel(_model(), num_workers=2).fit(df, epochs=1, verbose=0)
    kept = block_cache._entry[2]
    assert kept.frame.storageLevel.useMemory
    SparkModel(_model(), num_workers=2, mode="async").fit(df, epochs=1, verbose=0)
    assert block_cache._entry[2] is kept
    release_cached_blocks()
    assert block_cache._entry is None and not kept.frame.storageLevel.useMemory


def test_bad_rows_on_connect_come_back_as_one_clear_error(remote, digits):
    x, y = digits
    x = x[:200].copy()
    x[150, 3] = np.nan
    df = from_arrays(remote, x, y[:200], num_partitions=2)
    with pytest.raises(ValueError, match="features column .* contain 1 NaN or infinite values"):
        SparkModel(_model(), num_workers=2).fit(df, epochs=1, verbose=0)
    strings = remote.createDataFrame([([0.0] * 64, "a")], "features array<float>, label string")
    with pytest.raises(TypeError, match="label column 'label' has type string.*StringIndexer"):
        SparkModel(_model(), num_workers=2).fit(strings, epochs=1, verbose=0)


def test_an_rdd_of_arrays_on_connect_points_to_a_dataframe(remote, digits):
    from sparkdl.spark import to_simple_rdd
    with pytest.raises(ValueError, match=r"to_simple_rdd: an RDD does not run on Spark Connect.*from_arrays"):
        to_simple_rdd(remote, *digits)


def test_executors_that_cannot_reach_the_client_get_one_clear_error(remote, digits):
    df, _ = _frames(remote, digits, train=200)
    with _unreachable_client(remote), pytest.raises(
            ValueError, match="cannot reach this client at 127.0.0.2:.*spark.sparkdl.client.host.*allreduce"):
        SparkModel(_model(), num_workers=2).fit(df, epochs=1, verbose=0)


@pytest.mark.parametrize("validation", ["validation_data", "validation_split"])
def test_an_allreduce_fit_runs_its_loop_in_a_task_where_the_executors_cannot_reach_the_client(
        remote, digits, validation):
    df, val = _frames(remote, digits)
    held = {"validation_data": val} if validation == "validation_data" else {"validation_split": 0.2}
    fits = []
    for where in (contextlib.nullcontext, lambda: _unreachable_client(remote)):
        with where():
            spark_model = SparkModel(_model(), num_workers=2, frequency=4, transport="allreduce")
            history = spark_model.fit(df, epochs=3, batch_size=32, verbose=0, **held)
        fits.append((spark_model.model, history))
    (model, history), (reference, reference_history) = fits[1], fits[0]
    assert "its loop in partition 0's task" in history.settings["execution"]
    assert reference_history.settings["execution"] == "one job per fit"
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == reference.optimizer.iterations
    for name, slot in reference.optimizer.slots.items():
        np.testing.assert_array_equal(model.optimizer.slots[name], slot)
    _same_history(history, reference_history)
    assert [r["samples"] for r in history.rounds] == [r["samples"] for r in reference_history.rounds]
    assert history.history["val_accuracy"][-1] > 0.85


def test_an_allreduce_fit_without_the_client_refuses_what_needs_it(remote, digits, tmp_path):
    df, _ = _frames(remote, digits, train=200)
    with _unreachable_client(remote):
        with pytest.raises(ValueError, match="runs its loop in one of its tasks, where callbacks, checkpoint_dir "
                                             "cannot run.*spark.sparkdl.client.host"):
            SparkModel(_model(), num_workers=2, transport="allreduce").fit(
                df, epochs=1, verbose=0, callbacks=[sparkdl.callbacks.EarlyStopping()], checkpoint_dir=tmp_path)
        with pytest.raises(sparkdl.errors.SparkTrainingDivergedError, match="diverged"):
            model = _model()
            model.optimizer.learning_rate = 1e30
            SparkModel(model, num_workers=2, transport="allreduce").fit(df, epochs=2, verbose=0)


def test_a_connect_fits_dashboard_is_served_by_the_client(remote, digits):
    import json
    import urllib.request

    from sparkdl.dashboard import close_dashboards
    df, _ = _frames(remote, digits, train=200)
    spark_model = SparkModel(_model(), num_workers=2)
    try:
        spark_model.fit(df, epochs=1, verbose=0, dashboard="keep")
        assert spark_model.dashboard_url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(spark_model.dashboard_url + "api/state", timeout=10) as page:
            state = json.load(page)
    finally:
        close_dashboards()
    assert state["status"] == "finished" and len(state["epochs"]) == 1
