"""SparkModel.fit/predict/evaluate on less common inputs (one-hot and multi-output label
columns, sparse ml vectors, Elephas' RDD of pairs) and with the engine's callbacks.

Expected values come from the single-process engine (``model.fit``/``predict``/``evaluate``)
on the same NumPy arrays, never from the Spark path itself.
"""
import numpy as np
import pytest
from pyspark.ml.linalg import Vectors

import sparkdl
from sparkdl import callbacks, layers, optimizers
from sparkdl.data.samples import digits
from sparkdl.engine import zoo
from sparkdl.models import Input, Sequential, load_model
from sparkdl.spark import SparkModel, from_arrays, to_simple_rdd


# ---- data and models ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    x_train, y_train, x_test, y_test = digits(seed=0)
    return {"x": x_train, "y": y_train, "x_test": x_test, "y_test": y_test}


def one_hot(y, k=10):
    return np.eye(k, dtype=np.float32)[y]


def sparse_row(r):
    nz = np.flatnonzero(r)
    return Vectors.sparse(len(r), nz.tolist(), r[nz].astype(float).tolist())


def frame(spark, x, labels, label_as="vector", features_as="dense", partitions=1):
    """A DataFrame with an ml Vector features column (dense or sparse rows) and a label column
    given as ml Vectors (dense or sparse), arrays of doubles or one double per row. One
    partition keeps the rows in order, as the engine sees them."""
    def feat(r):
        return sparse_row(r) if features_as == "sparse" else Vectors.dense(r.astype(float))

    def lab(v):
        if label_as == "vector":
            return Vectors.dense(np.asarray(v, dtype=float))
        if label_as == "sparse":
            return sparse_row(np.asarray(v, dtype=float))
        if label_as == "array":
            return [float(t) for t in v]
        return float(v)
    df = spark.createDataFrame([(feat(r), lab(v)) for r, v in zip(x, labels)], ["features", "label"])
    return df.coalesce(1) if partitions == 1 else df.repartition(partitions)


def softmax_mlp(seed=0, lr=0.1, momentum=0.9, loss="categorical_crossentropy"):
    sparkdl.set_random_seed(seed)
    model = zoo.mlp(input_dim=64, hidden=(32,), num_classes=10)
    model.compile(optimizers.SGD(lr, momentum=momentum), loss, metrics=["accuracy"])
    return model


def multi_output(seed=0, k=3, activation="sigmoid", loss="binary_crossentropy", metrics=("mse",)):
    sparkdl.set_random_seed(seed)
    model = Sequential([Input((64,)), layers.Dense(16, activation="tanh"),
                        layers.Dense(k, activation=activation)])
    model.compile(optimizers.SGD(0.1, momentum=0.9), loss, metrics=list(metrics))
    return model


def multi_labels(y):
    """Three yes/no properties of a digit: even, >= 5, has a closed loop (0, 4, 6, 8, 9)."""
    return np.stack([y % 2 == 0, y >= 5, np.isin(y, [0, 4, 6, 8, 9])], axis=1).astype(np.float32)


def assert_weights_equal(a, b, atol):
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=0, atol=atol)


class Recorder(callbacks.Callback):
    """Copies of the driver's weights and learning rate at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.weights, self.rates = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_flat_weights().copy())
        self.rates.append(self.model.optimizer.learning_rate)


# ---- 1. one-hot labels ---------------------------------------------------------------------------
@pytest.mark.parametrize("label_as", ["vector", "sparse", "array"])
def test_one_hot_labels_one_worker_equals_engine_fit(spark, data, label_as):
    # "sparse": one-hot rows as SparseVectors, the shape pyspark.ml's OneHotEncoder produces.
    x, y = data["x"][:500], one_hot(data["y"][:500])
    df = frame(spark, x, y, label_as=label_as)
    expected_type = "array<double>" if label_as == "array" else "vector"
    assert df.schema["label"].dataType.simpleString() == expected_type
    if label_as == "sparse":
        assert type(df.first().label).__name__ == "SparseVector"
    local, distributed = softmax_mlp(seed=4), softmax_mlp(seed=4)
    np.testing.assert_array_equal(local.get_flat_weights(), distributed.get_flat_weights())
    local_history = local.fit(x, y, epochs=3, batch_size=32, seed=21, verbose=0)
    history = SparkModel(distributed, num_workers=1, seed=21).fit(df, epochs=3, batch_size=32, verbose=0)
    assert_weights_equal(distributed, local, atol=1e-5)
    np.testing.assert_allclose(history.history["loss"], local_history.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(history.history["accuracy"], local_history.history["accuracy"], atol=1e-9)
    # The comparison has teeth: another seed lands elsewhere.
    other = softmax_mlp(seed=4)
    other.fit(x, y, epochs=3, batch_size=32, seed=22, verbose=0)
    assert np.abs(other.get_flat_weights() - local.get_flat_weights()).max() > 1e-3


def test_one_hot_vector_labels_train_on_two_workers(spark, data):
    x, y = data["x"], data["y"]
    df = frame(spark, x, one_hot(y), label_as="vector", partitions=2)
    model = softmax_mlp(seed=1)
    before = model.evaluate(data["x_test"], one_hot(data["y_test"]))
    history = SparkModel(model, num_workers=2, seed=0).fit(df, epochs=5, batch_size=32, verbose=0)
    loss = history.history["loss"]
    assert len(loss) == 5 and loss[-1] < 0.5 * loss[0]
    after = model.evaluate(data["x_test"], one_hot(data["y_test"]))
    assert before["accuracy"] < 0.3 and after["accuracy"] > 0.85, (before, after)
    # The same accuracy from integer class ids (independent of the one-hot encoding).
    probs = model.predict(data["x_test"])
    assert after["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == data["y_test"]), abs=1e-12)


# ---- 2. multi-output labels ------------------------------------------------------------------------
def test_multi_label_vector_column_fit_and_evaluate(spark, data):
    x, y = data["x"][:600], multi_labels(data["y"][:600])
    df = frame(spark, x, y, label_as="vector")
    local, distributed = multi_output(seed=2), multi_output(seed=2)
    local.fit(x, y, epochs=4, batch_size=32, seed=5, verbose=0)
    history = SparkModel(distributed, num_workers=1, seed=5).fit(df, epochs=4, batch_size=32, verbose=0)
    assert_weights_equal(distributed, local, atol=1e-5)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # evaluate on the executors (two partitions) equals the engine's on the same arrays; the
    # loss is also recomputed by hand from the predictions.
    test_df = frame(spark, data["x_test"], multi_labels(data["y_test"]), label_as="vector", partitions=2)
    remote = SparkModel(distributed).evaluate(test_df)
    expected = distributed.evaluate(data["x_test"], multi_labels(data["y_test"]))
    assert set(remote) == {"loss", "mse"}
    assert remote["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert remote["mse"] == pytest.approx(expected["mse"], rel=1e-6)
    p = np.clip(distributed.predict(data["x_test"]).astype(np.float64), 1e-7, 1 - 1e-7)
    t = multi_labels(data["y_test"])
    by_hand = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert remote["loss"] == pytest.approx(by_hand, rel=1e-4)
    assert remote["mse"] == pytest.approx(np.mean((p - t) ** 2), rel=1e-4)


def test_multi_output_regression_array_column_fit_evaluate_predict(spark, data):
    rng = np.random.default_rng(0)
    x = data["x"][:400]
    y = (x @ rng.normal(size=(64, 2)) / 8).astype(np.float32)
    df = from_arrays(spark, x, y)              # array<float> features, array<double> labels
    assert df.schema["label"].dataType.simpleString() == "array<double>"
    local = multi_output(seed=3, k=2, activation=None, loss="mse")
    distributed = multi_output(seed=3, k=2, activation=None, loss="mse")
    local.fit(x, y, epochs=3, batch_size=40, seed=8, verbose=0)
    SparkModel(distributed, num_workers=1, seed=8).fit(df.coalesce(1), epochs=3, batch_size=40, verbose=0)
    assert_weights_equal(distributed, local, atol=1e-5)
    remote = SparkModel(distributed).evaluate(df.repartition(3))
    expected = distributed.evaluate(x, y)
    assert remote["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    by_hand = np.mean((distributed.predict(x).astype(np.float64) - y) ** 2)
    assert remote["loss"] == pytest.approx(by_hand, rel=1e-5)
    # predict on a DataFrame: one array<double> per row with the model's k outputs.
    rows = SparkModel(distributed).predict(df.coalesce(1)).collect()
    np.testing.assert_allclose(np.array([r.prediction for r in rows]), distributed.predict(x),
                               rtol=1e-6, atol=1e-6)


# ---- 3. label width and label kind that do not fit the model ----------------------------------------
@pytest.mark.parametrize("label_as", ["vector", "array"])
def test_label_rows_of_the_wrong_width_fail_before_training(spark, data, label_as):
    x = data["x"][:20]
    df = frame(spark, x, one_hot(data["y"][:20] % 3, k=3), label_as=label_as)
    model = softmax_mlp()
    before = model.get_flat_weights().copy()
    spark_model = SparkModel(model, num_workers=1)
    with pytest.raises(ValueError, match=r"expected targets of shape \(None, 10\).*received \(20, 3\)"):
        spark_model.fit(df, epochs=1, verbose=0)
    assert spark_model.history is None
    np.testing.assert_array_equal(model.get_flat_weights(), before)
    with pytest.raises(ValueError, match=r"expected targets of shape \(None, 10\).*received \(\d+, 3\)"):
        spark_model.evaluate(df)


def test_one_hot_rows_for_a_sparse_categorical_model_and_ids_for_a_categorical_one(spark, data):
    x, y = data["x"][:20], data["y"][:20]
    sparse_model = softmax_mlp(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError,
                       match=r"expected integer class ids of shape \(n,\).*categorical_crossentropy"):
        SparkModel(sparse_model, num_workers=1).fit(frame(spark, x, one_hot(y)), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"expected targets of shape \(None, 10\).*received \(20,\)"):
        SparkModel(softmax_mlp(), num_workers=1).fit(frame(spark, x, y, label_as="scalar"),
                                                     epochs=1, verbose=0)


# ---- 4. sparse ml vectors as features ------------------------------------------------------------
def test_sparse_vector_features_train_like_dense_ones(spark, data):
    x, y = data["x"][:500], data["y"][:500]
    assert (x == 0).mean() > 0.3      # digits really are sparse
    sparse_df = frame(spark, x, y, label_as="scalar", features_as="sparse")
    dense_df = frame(spark, x, y, label_as="scalar", features_as="dense")
    assert type(sparse_df.first().features).__name__ == "SparseVector"
    on_sparse = softmax_mlp(seed=6, loss="sparse_categorical_crossentropy")
    on_dense = softmax_mlp(seed=6, loss="sparse_categorical_crossentropy")
    SparkModel(on_sparse, num_workers=1, seed=2).fit(sparse_df, epochs=2, batch_size=32, verbose=0)
    SparkModel(on_dense, num_workers=1, seed=2).fit(dense_df, epochs=2, batch_size=32, verbose=0)
    np.testing.assert_allclose(on_sparse.get_flat_weights(), on_dense.get_flat_weights(), rtol=0, atol=1e-6)
    # And both equal the engine on the arrays (so neither conversion dropped or moved a pixel).
    local = softmax_mlp(seed=6, loss="sparse_categorical_crossentropy")
    local.fit(x, y, epochs=2, batch_size=32, seed=2, verbose=0)
    np.testing.assert_allclose(on_sparse.get_flat_weights(), local.get_flat_weights(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("features_as", ["dense", "sparse", "array", "columns"])
def test_blocks_read_from_arrow_batches_equal_the_arrays(spark, data, features_as, monkeypatch):
    """Training blocks come from Spark's Arrow batches (one RDD job); where Spark has no such
    RDD, a mapInArrow's rows carry them. Both paths hand the model the same arrays."""
    from sparkdl.spark import frames
    x, y = data["x"][:300, :8], data["y"][:300]
    if features_as in ("dense", "sparse"):
        df = frame(spark, x, y, label_as="scalar", features_as=features_as)
        cols = "features"
    elif features_as == "array":
        df = from_arrays(spark, x, y).coalesce(1)
        cols = "features"
    else:
        cols = [f"f{i}" for i in range(8)]
        df = spark.createDataFrame([tuple(float(v) for v in r) + (float(t),) for r, t in zip(x, y)],
                                   ", ".join(f"{c} double" for c in cols) + ", label double").coalesce(1)
    model = Sequential([Input((8,)), layers.Dense(10, activation="softmax")])
    model.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    assert frames.arrow_batch_rdd(df) is not None       # this Spark has the RDD of Arrow batches
    got = []
    for path in ("arrow batches", "rows"):
        if path == "rows":
            monkeypatch.setattr(frames, "arrow_batch_rdd", lambda df: None)
        blocks = frames.dataframe_blocks(df, model, cols, "label", 1, "test")
        (xs, labels), = blocks.rdd.collect()
        blocks.release()
        np.testing.assert_array_equal(xs[0], x.astype(np.float32))
        np.testing.assert_array_equal(labels, y)
        got.append(xs[0])
    assert got[0].dtype == got[1].dtype == np.float32


def test_predict_on_sparse_and_mixed_rows_equals_engine_predict(spark, data):
    model = softmax_mlp(seed=7, loss="sparse_categorical_crossentropy")
    model.fit(data["x"], data["y"], epochs=1, batch_size=32, seed=0, verbose=0)
    x = data["x_test"][:60].copy()
    x[5] = 0.0                                   # an all-zero row: a sparse vector with no entries
    rows = [(i, sparse_row(r) if i % 3 else Vectors.dense(r.astype(float))) for i, r in enumerate(x)]
    df = spark.createDataFrame(rows, ["id", "features"]).repartition(2)
    out = SparkModel(model).predict(df).collect()
    out.sort(key=lambda r: r.id)
    assert [r.id for r in out] == list(range(len(x)))
    probs = np.array([r.probability.toArray() for r in out])
    expected = model.predict(x)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal([r.prediction for r in out], expected.argmax(axis=1))


# ---- 5. callbacks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("monitor", ["loss", "val_loss"])
def test_early_stopping_stops_when_nothing_improves(spark, data, monitor):
    x, y = data["x"][:200], one_hot(data["y"][:200])
    df = frame(spark, x, y, partitions=2)
    model = softmax_mlp(lr=0.0, momentum=0.0)   # the weights never move
    start = model.get_flat_weights().copy()
    stopper = callbacks.EarlyStopping(monitor=monitor, patience=2, min_delta=1e-4)
    val = frame(spark, data["x_test"][:50], one_hot(data["y_test"][:50]), partitions=2)
    spark_model = SparkModel(model, num_workers=2)
    history = spark_model.fit(df, epochs=10, batch_size=32, verbose=0, callbacks=[stopper],
                              validation_data=val if monitor == "val_loss" else None)
    # Epoch 1 sets the best value; epochs 2 and 3 do not improve on it: patience 2 runs out.
    assert len(history.history["loss"]) == 3 and history.epoch == [0, 1, 2]
    assert len(history.rounds) == 3
    assert stopper.stopped_epoch == 2
    assert (monitor == "val_loss") == ("val_loss" in history.history)
    np.testing.assert_array_equal(model.get_flat_weights(), start)
    if monitor == "val_loss":
        expected = model.evaluate(data["x_test"][:50], one_hot(data["y_test"][:50]))["loss"]
        np.testing.assert_allclose(history.history["val_loss"], [expected] * 3, rtol=1e-6)


def test_early_stopping_does_not_stop_while_the_loss_improves(spark, data):
    df = frame(spark, data["x"][:300], one_hot(data["y"][:300]), partitions=2)
    stopper = callbacks.EarlyStopping(monitor="loss", patience=1)
    history = SparkModel(softmax_mlp(lr=0.05, momentum=0.0), num_workers=2).fit(
        df, epochs=4, batch_size=32, verbose=0, callbacks=[stopper])
    assert len(history.history["loss"]) == 4
    assert np.all(np.diff(history.history["loss"]) < 0)


def test_model_checkpoint_saves_each_epoch_and_loads_back(spark, data, tmp_path):
    df = frame(spark, data["x"][:300], one_hot(data["y"][:300]), partitions=2)
    model = softmax_mlp(seed=9)
    recorder = Recorder()
    checkpoint = callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.sparkdl"))
    SparkModel(model, num_workers=2).fit(df, epochs=3, batch_size=32, verbose=0,
                                         callbacks=[recorder, checkpoint])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ckpt-0{e}.sparkdl" for e in (1, 2, 3)]
    for epoch in range(3):
        loaded = load_model(tmp_path / f"ckpt-0{epoch + 1}.sparkdl")
        np.testing.assert_array_equal(loaded.get_flat_weights(), recorder.weights[epoch])
        assert loaded.loss.name == "categorical_crossentropy"
    assert np.abs(recorder.weights[0] - recorder.weights[2]).max() > 1e-3
    last = load_model(tmp_path / "ckpt-03.sparkdl")
    np.testing.assert_array_equal(last.get_flat_weights(), model.get_flat_weights())
    assert last.optimizer.iterations == model.optimizer.iterations > 0
    np.testing.assert_array_equal(last.predict(data["x_test"]), model.predict(data["x_test"]))


def test_model_checkpoint_save_best_only_on_val_loss(spark, data, tmp_path):
    df = frame(spark, data["x"][:200], one_hot(data["y"][:200]), partitions=2)
    val = frame(spark, data["x_test"][:50], one_hot(data["y_test"][:50]), partitions=2)
    model = softmax_mlp(lr=0.0, momentum=0.0)   # val_loss is the same every epoch
    checkpoint = callbacks.ModelCheckpoint(str(tmp_path / "best-{epoch}.sparkdl"), monitor="val_loss",
                                           save_best_only=True)
    SparkModel(model, num_workers=2).fit(df, epochs=3, batch_size=64, verbose=0,
                                         callbacks=[checkpoint], validation_data=val)
    assert [p.name for p in tmp_path.iterdir()] == ["best-1.sparkdl"]
    np.testing.assert_array_equal(load_model(tmp_path / "best-1.sparkdl").get_flat_weights(),
                                  model.get_flat_weights())


def lr_schedule(epoch, lr):
    return 0.1 if epoch == 0 else 0.0


@pytest.mark.parametrize("aggregate", ["gradients", "weights"])
def test_learning_rate_scheduler_zero_after_first_epoch_freezes_weights(spark, data, aggregate):
    df = frame(spark, data["x"][:300], one_hot(data["y"][:300]), partitions=2)
    model = softmax_mlp(seed=10, lr=0.1, momentum=0.0)   # no momentum: lr 0 means no step at all
    start = model.get_flat_weights().copy()
    recorder = Recorder()
    history = SparkModel(model, num_workers=2, aggregate=aggregate).fit(
        df, epochs=3, batch_size=32, verbose=0,
        callbacks=[callbacks.LearningRateScheduler(lr_schedule), recorder])
    assert recorder.rates == [0.1, 0.0, 0.0]
    assert history.history["learning_rate"] == [0.1, 0.0, 0.0]
    assert np.abs(recorder.weights[0] - start).max() > 1e-3
    np.testing.assert_array_equal(recorder.weights[1], recorder.weights[0])
    np.testing.assert_array_equal(recorder.weights[2], recorder.weights[0])


def test_learning_rate_scheduler_one_worker_equals_engine_fit(spark, data):
    x, y = data["x"][:300], one_hot(data["y"][:300])
    df = frame(spark, x, y)

    def schedule(epoch, lr):
        return [0.2, 0.05, 0.01][epoch]
    local, distributed = softmax_mlp(seed=11, momentum=0.0), softmax_mlp(seed=11, momentum=0.0)
    local_history = local.fit(x, y, epochs=3, batch_size=32, seed=3, verbose=0,
                              callbacks=[callbacks.LearningRateScheduler(schedule)])
    history = SparkModel(distributed, num_workers=1, seed=3).fit(
        df, epochs=3, batch_size=32, verbose=0, callbacks=[callbacks.LearningRateScheduler(schedule)])
    assert history.history["learning_rate"] == local_history.history["learning_rate"] == [0.2, 0.05, 0.01]
    assert_weights_equal(distributed, local, atol=1e-5)


# ---- 6. Elephas' RDD of (x, y) pairs -----------------------------------------------------------------
def test_simple_rdd_with_one_hot_labels(spark, data):
    sc = spark.sparkContext
    x, y = data["x"][:500], one_hot(data["y"][:500])
    local, distributed = softmax_mlp(seed=12), softmax_mlp(seed=12)
    local.fit(x, y, epochs=3, batch_size=32, seed=4, verbose=0)
    SparkModel(distributed, num_workers=1, seed=4).fit(to_simple_rdd(sc, x, y, num_slices=1),
                                                       epochs=3, batch_size=32, verbose=0)
    assert_weights_equal(distributed, local, atol=1e-5)
    # Two workers on the full training set learn the digits.
    model = softmax_mlp(seed=12)
    history = SparkModel(model, num_workers=2).fit(to_simple_rdd(sc, data["x"], one_hot(data["y"])),
                                                   epochs=4, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert np.mean(model.predict(data["x_test"]).argmax(1) == data["y_test"]) > 0.85
