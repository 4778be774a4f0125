"""SparkModel's Elephas surface (``sparkdl.spark.spark_model``): ``fit(validation_split=...)``
on RDD and DataFrame input, ``evaluate`` on NumPy arrays and what it returns, ``predict`` of
an RDD of feature rows, ``save`` / ``load_spark_model``, ``get_weights`` / ``set_weights`` /
``master_network``, and unknown keywords.

Expected values come from the single-process engine on the same rows, or by hand from the
model's predictions; the held-out rows are found from Spark's own partitions, never from the
code under test.
"""
import json
import os
import zipfile

import numpy as np
import pytest

import sparkdl
from sparkdl import layers, optimizers
from sparkdl.engine.scores import Scores
from sparkdl.models import Input, Sequential, load_model
from sparkdl.spark import SparkModel, from_arrays, load_spark_model, to_simple_rdd
from tests.helpers import assert_same_weights, jobs_of_failing_call, one_hot


@pytest.fixture(scope="module")
def mnist_small():
    """400 MNIST training rows (one-hot labels) and 200 test rows."""
    from sparkdl.data.samples import mnist_5k
    x, y, x_test, y_test = mnist_5k(seed=0)
    return {"x": x[:400], "y": one_hot(y[:400], 10), "x_test": x_test[:200], "y_test": one_hot(y_test[:200], 10)}


def mlp(seed=0, metrics=("accuracy",), loss="categorical_crossentropy"):
    """784-32-10, written as Elephas' example writes its model (Dense, Activation, Dropout)."""
    sparkdl.set_random_seed(seed)
    model = Sequential([Input((784,)), layers.Dense(32), layers.Activation("relu"), layers.Dropout(0.2),
                        layers.Dense(10), layers.Activation("softmax")])
    model.compile(optimizers.SGD(0.1), loss, list(metrics))
    return model


# ---- 1. fit(validation_split=...) ----------------------------------------------------------------
def test_validation_split_on_an_rdd_holds_out_the_last_rows_of_each_partition(spark, mnist_small):
    x, y = mnist_small["x"][:100], mnist_small["y"][:100]
    rdd = spark.sparkContext.parallelize(list(zip(x, y)), 2)            # rows 0-49 and 50-99
    model = mlp()
    history = SparkModel(model, num_workers=2).fit(rdd, epochs=2, batch_size=16, verbose=0,
                                                   validation_split=0.1)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["val_loss"]) == 2
    assert history.validation_rows_per_partition == [5, 5]             # 50 - int(50 * 0.9)
    assert history.rows_per_partition == [45, 45]
    assert [r["samples"] for r in history.rounds] == [90, 90]
    assert history.settings["validation_split"] == 0.1
    held = np.r_[45:50, 95:100]
    local = model.evaluate(x[held], y[held])             # the final weights, on the held-out rows
    assert history.history["val_loss"][-1] == pytest.approx(local["loss"], rel=1e-5)
    assert history.history["val_accuracy"][-1] == pytest.approx(local["accuracy"], abs=1e-9)
    # The comparison has teeth: the first 10 rows give another loss.
    assert abs(model.evaluate(x[:10], y[:10])["loss"] - local["loss"]) > 1e-3


@pytest.mark.parametrize("execution", ["auto", "rounds"])
def test_validation_split_on_a_dataframe_on_both_execution_paths(spark, mnist_small, execution):
    x, y = mnist_small["x"][:120], mnist_small["y"][:120]
    df = from_arrays(spark, x, y).repartition(2).cache()
    parts = df.rdd.glom().collect()                      # Spark's partitions, read independently
    sizes = [len(p) for p in parts]
    held_rows = [row for p in parts for row in p[int(len(p) * 0.75):]]     # Keras' split_at
    xv = np.array([r.features for r in held_rows], np.float32)
    yv = np.array([r.label for r in held_rows], np.float32)
    model = mlp(seed=1)
    history = SparkModel(model, num_workers=2, execution=execution).fit(
        df, epochs=2, batch_size=16, verbose=0, validation_split=0.25)
    assert history.settings["execution"].startswith("one job per fit" if execution == "auto" else "one job per round")
    assert history.validation_rows_per_partition == [s - int(s * 0.75) for s in sizes]
    assert sum(history.validation_rows_per_partition) == len(xv) >= 30
    assert history.rounds[-1]["samples"] == 120 - len(xv)
    local = model.evaluate(xv, yv)
    assert history.history["val_loss"][-1] == pytest.approx(local["loss"], rel=1e-5)
    assert history.history["val_accuracy"][-1] == pytest.approx(local["accuracy"], abs=1e-9)
    df.unpersist()


def test_validation_split_is_checked_before_any_job(spark, mnist_small):
    rdd = to_simple_rdd(spark.sparkContext, mnist_small["x"][:20], mnist_small["y"][:20])
    spark_model = SparkModel(mlp(), num_workers=2)
    fit = lambda **kw: lambda: spark_model.fit(rdd, epochs=1, verbose=0, **kw)  # noqa: E731
    xv, yv = mnist_small["x_test"][:5], mnist_small["y_test"][:5]
    cases = [(fit(validation_split=1), ValueError, r"expected 0 <= validation_split < 1, received validation_split=1"),
             (fit(validation_split=-0.1), ValueError, r"received validation_split=-0.1"),
             (fit(validation_split="0.1"), TypeError, r"validation_split as a number.*received validation_split='0.1'"),
             (fit(validation_split=0.1, validation_data=(xv, yv)), ValueError,
              r"expected validation_data or validation_split, not both")]
    for call, error, match in cases:
        assert jobs_of_failing_call(spark, call, error, match) == 0
    assert spark_model.history is None
    # The count has teeth: a call that fails after converting the data started a job.
    assert jobs_of_failing_call(spark, fit(validation_split=0.99), ValueError, "leaves no rows to train on") > 0


def test_a_validation_split_that_leaves_nothing_to_train_on(spark, mnist_small):
    rdd = spark.sparkContext.parallelize(list(zip(mnist_small["x"][:2], mnist_small["y"][:2])), 2)   # 1 row each
    with pytest.raises(ValueError, match=r"validation_split=0.5 leaves no rows to train on \(partitions of \[1, 1\]"):
        SparkModel(mlp(), num_workers=2).fit(rdd, epochs=1, verbose=0, validation_split=0.5)


# ---- 2. evaluate ----------------------------------------------------------------------------------
def test_evaluate_on_arrays_matches_a_hand_computation_and_the_executors(spark, mnist_small):
    model = mlp(seed=2)
    spark_model = SparkModel(model)
    x, y = mnist_small["x_test"], mnist_small["y_test"]
    p = model.predict(x).astype(np.float64)
    loss = float(np.mean(-np.sum(y * np.log(np.clip(p, 1e-7, 1)), axis=1)))
    accuracy = float(np.mean(p.argmax(axis=1) == y.argmax(axis=1)))
    scores = spark_model.evaluate(x, y, verbose=2)
    assert isinstance(scores, Scores) and list(scores) == ["loss", "accuracy"]
    assert (scores[0], scores[1]) == (pytest.approx(loss, rel=1e-5), pytest.approx(accuracy, abs=1e-12))
    assert scores == pytest.approx(model.evaluate(x, y))
    remote = spark_model.evaluate(from_arrays(spark, x, y, num_partitions=2))      # on the executors
    assert isinstance(remote, Scores) and remote == pytest.approx(scores, rel=1e-5)
    assert remote[1] == scores[1]
    plain = spark_model.evaluate(x, y, return_dict=True)
    assert type(plain) is dict and plain == scores
    assert spark_model.evaluate(x, y, return_dict=False) == [scores[0], scores[1]]
    assert spark_model.evaluate(x, y, batch_size=7, return_dict=False) == pytest.approx([loss, accuracy], rel=1e-5)


def test_evaluate_forms_without_metrics_and_bad_arguments(spark, mnist_small):
    model = mlp(seed=2, metrics=(), loss="mse")
    spark_model = SparkModel(model)
    x, y = mnist_small["x_test"][:50], mnist_small["y_test"][:50]
    expected = float(np.mean((model.predict(x).astype(np.float64) - y) ** 2))
    assert spark_model.evaluate(x, y, return_dict=False) == pytest.approx(expected, rel=1e-5)
    df = from_arrays(spark, x, y)
    assert spark_model.evaluate(df, return_dict=False) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(TypeError, match=r"a DataFrame carries its labels in label_col='label'; expected y=None"):
        spark_model.evaluate(df, y)
    with pytest.raises(ValueError, match=r"SparkModel.evaluate: expected a DataFrame, or NumPy features x "
                                         r"with their targets y; received ndarray and y=None"):
        spark_model.evaluate(x)
    with pytest.raises(TypeError, match=r"expected return_dict as True, False or None"):
        spark_model.evaluate(x, y, return_dict="yes")


# ---- 3. predict(rdd) -------------------------------------------------------------------------------
def test_predict_of_an_rdd_of_rows_equals_predict_of_the_array_in_order(spark, mnist_small):
    spark_model = SparkModel(mlp(seed=3))
    x = mnist_small["x_test"][:101]
    expected = spark_model.predict(x)
    sc = spark.sparkContext
    for rdd in (sc.parallelize(x, 3), sc.parallelize([r.tolist() for r in x], 2)):
        out = spark_model.predict(rdd)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (101, 10)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
    # The order is the RDD's: reversed rows give reversed predictions.
    np.testing.assert_allclose(spark_model.predict(sc.parallelize(x[::-1], 4)), expected[::-1], rtol=1e-5, atol=1e-7)
    assert spark_model.predict(sc.parallelize([], 2)).shape == (0, 10)


def test_predict_of_an_rdd_of_pairs_or_ragged_rows_is_a_clear_error(spark, mnist_small):
    spark_model = SparkModel(mlp())
    pairs = to_simple_rdd(spark.sparkContext, mnist_small["x"][:4], mnist_small["y"][:4])
    with pytest.raises(ValueError, match=r"expected each element of the RDD to be one example's features "
                                         r"\(inputs of shape \(None, 784\)\)"):
        spark_model.predict(pairs)
    short = spark.sparkContext.parallelize([np.zeros(784), np.zeros(783)], 1)
    with pytest.raises(ValueError, match="one example's features"):
        spark_model.predict(short)
    wrong_width = spark.sparkContext.parallelize([np.zeros(10)], 1)
    with pytest.raises(ValueError, match=r"expected x of shape \(None, 784\), received \(1, 10\)"):
        spark_model.predict(wrong_width)


# ---- 4. save / load, weights, master_network ------------------------------------------------------
@pytest.mark.parametrize("form", ["file", "directory"])
def test_save_and_load_spark_model_round_trip(spark, mnist_small, tmp_path, form):
    model = mlp(seed=4)
    # Trained a little, so the optimizer has state to save.
    model.fit(mnist_small["x"][:64], mnist_small["y"][:64], epochs=1, batch_size=16, seed=0, verbose=0)
    spark_model = SparkModel(model, mode="ssp", staleness=2, frequency=3, num_workers=2, aggregate="gradients",
                             seed=7, transport="spark", port=4321, timeout=30.0, round_timeout=600.0,
                             execution="rounds", parameter_server_mode="http", compression="int8")
    path = tmp_path / "saved.sparkdl"
    if form == "directory":
        path.mkdir()
    spark_model.save(path)
    if form == "directory":
        assert sorted(os.listdir(path)) == ["model.json", "spark_model.json", "weights.npz"]
    else:
        assert sorted(zipfile.ZipFile(path).namelist()) == ["model.json", "spark_model.json", "weights.npz"]
    loaded = sparkdl.load_spark_model(str(path))
    assert isinstance(loaded, SparkModel) and loaded is not spark_model
    assert loaded.get_config() == {"mode": "ssp", "staleness": 2, "frequency": 3, "num_workers": 2,
                                   "aggregate": "gradients", "seed": 7, "transport": "spark", "port": 4321,
                                   "timeout": 30.0, "round_timeout": 600.0, "execution": "rounds",
                                   "parameter_server_mode": "http", "compression": "int8", "overlap": False,
                                   "num_servers": 0}
    assert loaded.get_config() == spark_model.get_config()
    assert_same_weights(loaded.model, model)
    assert loaded.model.optimizer.iterations == model.optimizer.iterations == 4
    np.testing.assert_array_equal(loaded.predict(mnist_small["x_test"]), spark_model.predict(mnist_small["x_test"]))
    x_test, y_test = mnist_small["x_test"], mnist_small["y_test"]
    assert loaded.evaluate(x_test, y_test) == spark_model.evaluate(x_test, y_test)
    assert_same_weights(load_model(path), model)              # the engine reads the model of a SparkModel save


def test_saved_settings_rebuild_every_mode_with_its_options(tmp_path):
    for kwargs in ({"mode": "synchronous"}, {"mode": "asynchronous"}, {"mode": "easgd", "rho": 2.0, "variant": "async"},
                   {"mode": "hogwild", "frequency": "batch"}):
        spark_model = SparkModel(mlp(), **kwargs)
        path = tmp_path / f"{kwargs['mode']}.sparkdl"
        spark_model.save(path)
        loaded = load_spark_model(path)
        assert loaded.get_config() == spark_model.get_config()
        assert loaded.strategy.options() == spark_model.strategy.options()
        assert type(loaded.strategy) is type(spark_model.strategy)


def test_loading_a_plain_model_or_mixed_settings_is_refused(tmp_path):
    model = mlp()
    plain = tmp_path / "plain.sparkdl"
    model.save(plain)
    with pytest.raises(ValueError, match=r"holds a model but no SparkModel settings \(expected spark_model.json"):
        load_spark_model(plain)
    with pytest.raises(FileNotFoundError):
        load_spark_model(tmp_path / "missing.sparkdl")
    # A directory whose model was saved again without its settings: the settings are another save's.
    directory = tmp_path / "dir"
    directory.mkdir()
    SparkModel(model).save(directory)
    other = mlp(seed=9)
    other.compile(optimizers.Adam(0.01), "categorical_crossentropy", ["accuracy"])
    other.save(directory)
    with pytest.raises(ValueError, match="belong to another save of its model.json"):
        load_spark_model(directory)
    settings = directory / "spark_model.json"
    doc = json.loads(settings.read_text())
    settings.write_text(json.dumps(dict(doc, version=99)))
    with pytest.raises(ValueError, match="SparkModel format version 99"):
        load_spark_model(directory)
    settings.write_text("{not json")
    with pytest.raises(ValueError, match=r"spark_model.json in .* is corrupted \(invalid JSON"):
        load_spark_model(directory)


def test_weights_and_master_network(mnist_small):
    model = mlp()
    spark_model = SparkModel(model)
    assert spark_model.master_network is model
    with pytest.raises(AttributeError):
        spark_model.master_network = mlp()
    weights = spark_model.get_weights()
    assert [w.shape for w in weights] == [(784, 32), (32,), (32, 10), (10,)]
    weights[0][...] = 0                                   # copies: the model is unchanged
    assert np.abs(model.get_weights()[0]).max() > 0
    new = [np.full_like(w, 0.01 * (i + 1)) for i, w in enumerate(weights)]
    spark_model.set_weights(new)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), new))
    with pytest.raises(ValueError, match="expects 4 arrays, received 1"):
        spark_model.set_weights(new[:1])


# ---- 5. unknown keywords --------------------------------------------------------------------------
def test_unknown_keywords_are_type_errors_naming_them(spark, mnist_small):
    model = mlp()
    with pytest.raises(TypeError, match=r"^SparkModel: unexpected keyword argument 'custom_objects'; SparkModel "
                                        r"takes model, mode, frequency, .*parameter_server_mode, compression, "
                                        r"overlap, num_servers, and mode 'sync' takes no options$"):
        SparkModel(model, custom_objects={})
    with pytest.raises(TypeError, match=r"unexpected keyword arguments 'batch_size', 'tau'; .* mode 'ssp' takes "
                                        r"staleness$"):
        SparkModel(model, mode="ssp", staleness=1, tau=2, batch_size=32)
    with pytest.raises(TypeError, match=r"'staleness'.*mode 'asynchronous' takes no options"):
        SparkModel(model, mode="asynchronous", staleness=1)
    with pytest.raises(TypeError, match=r"'tau'.*mode 'easgd' takes rho, variant"):
        SparkModel(model, mode="easgd", rho=1.0, tau=2)
    assert SparkModel(model, mode="ssp", staleness=1).strategy.staleness == 1
    assert SparkModel(model, mode="easgd", rho=1.0, variant="async").strategy.options() == \
        {"rho": 1.0, "variant": "async"}
    for ps_mode in (None, "http", "socket"):
        assert SparkModel(model, mode="asynchronous", parameter_server_mode=ps_mode).parameter_server_mode == ps_mode
    with pytest.raises(ValueError, match=r"parameter_server_mode in \(None, 'socket', 'http'\), "
                                         r"received parameter_server_mode='zmq'"):
        SparkModel(model, parameter_server_mode="zmq")
    spark_model = SparkModel(model)
    rdd = to_simple_rdd(spark.sparkContext, mnist_small["x"][:8], mnist_small["y"][:8])
    with pytest.raises(TypeError, match="'nb_epoch'"):
        spark_model.fit(rdd, nb_epoch=1)
    with pytest.raises(TypeError, match="'show_accuracy'"):
        spark_model.evaluate(mnist_small["x"][:8], mnist_small["y"][:8], show_accuracy=True)
    with pytest.raises(TypeError, match="'steps'"):
        spark_model.predict(mnist_small["x"][:8], steps=1)
    assert spark_model.history is None
