"""SparkModel.fit/predict/evaluate on the inputs ``sparkdl.spark.frames`` turns into blocks:
one-hot and multi-output label columns, sparse ml vectors, Arrow batches or rows, Elephas' RDD
of pairs.

Expected values come from the single-process engine (``model.fit``/``predict``/``evaluate``)
on the same NumPy arrays, never from the Spark path itself.
"""
import numpy as np
import pytest
from pyspark.ml.linalg import Vectors

import sparkdl
from sparkdl import layers, optimizers
from sparkdl.models import Input, Sequential
from sparkdl.spark import SparkModel, from_arrays, to_simple_rdd
from tests.helpers import assert_same_weights, digits_mlp, one_hot, sparse_row, vector_frame


# ---- models ----------------------------------------------------------------------------------
def multi_output(seed=0, k=3, activation="sigmoid", loss="binary_crossentropy", metrics=("mse",)):
    sparkdl.set_random_seed(seed)
    model = Sequential([Input((64,)), layers.Dense(16, activation="tanh"),
                        layers.Dense(k, activation=activation)])
    model.compile(optimizers.SGD(0.1, momentum=0.9), loss, metrics=list(metrics))
    return model


def multi_labels(y):
    """Three yes/no properties of a digit: even, >= 5, has a closed loop (0, 4, 6, 8, 9)."""
    return np.stack([y % 2 == 0, y >= 5, np.isin(y, [0, 4, 6, 8, 9])], axis=1).astype(np.float32)


# ---- 1. one-hot labels ---------------------------------------------------------------------------
@pytest.mark.parametrize("label_as", ["vector", "sparse", "array"])
def test_one_hot_labels_one_worker_equals_engine_fit(spark, data, label_as):
    # "sparse": one-hot rows as SparseVectors, the shape pyspark.ml's OneHotEncoder produces.
    x, y = data["x"][:500], one_hot(data["y"][:500], 10)
    df = vector_frame(spark, x, y, label_as=label_as)
    expected_type = "array<double>" if label_as == "array" else "vector"
    assert df.schema["label"].dataType.simpleString() == expected_type
    if label_as == "sparse":
        assert type(df.first().label).__name__ == "SparseVector"
    local, distributed = digits_mlp(seed=4), digits_mlp(seed=4)
    np.testing.assert_array_equal(local.get_flat_weights(), distributed.get_flat_weights())
    local_history = local.fit(x, y, epochs=3, batch_size=32, seed=21, verbose=0)
    history = SparkModel(distributed, num_workers=1, seed=21).fit(df, epochs=3, batch_size=32, verbose=0)
    assert_same_weights(distributed, local, atol=1e-5)
    np.testing.assert_allclose(history.history["loss"], local_history.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(history.history["accuracy"], local_history.history["accuracy"], atol=1e-9)
    # The comparison has teeth: another seed lands elsewhere.
    other = digits_mlp(seed=4)
    other.fit(x, y, epochs=3, batch_size=32, seed=22, verbose=0)
    assert np.abs(other.get_flat_weights() - local.get_flat_weights()).max() > 1e-3


def test_one_hot_vector_labels_train_on_two_workers(spark, data):
    x, y = data["x"], data["y"]
    df = vector_frame(spark, x, one_hot(y, 10), label_as="vector", partitions=2)
    model = digits_mlp(seed=1)
    before = model.evaluate(data["x_test"], one_hot(data["y_test"], 10))
    history = SparkModel(model, num_workers=2, seed=0).fit(df, epochs=5, batch_size=32, verbose=0)
    loss = history.history["loss"]
    assert len(loss) == 5 and loss[-1] < 0.5 * loss[0]
    after = model.evaluate(data["x_test"], one_hot(data["y_test"], 10))
    assert before["accuracy"] < 0.3 and after["accuracy"] > 0.85, (before, after)
    # The same accuracy from integer class ids (independent of the one-hot encoding).
    probs = model.predict(data["x_test"])
    assert after["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == data["y_test"]), abs=1e-12)


# ---- 2. multi-output labels ------------------------------------------------------------------------
def test_multi_label_vector_column_fit_and_evaluate(spark, data):
    x, y = data["x"][:600], multi_labels(data["y"][:600])
    df = vector_frame(spark, x, y, label_as="vector")
    local, distributed = multi_output(seed=2), multi_output(seed=2)
    local.fit(x, y, epochs=4, batch_size=32, seed=5, verbose=0)
    history = SparkModel(distributed, num_workers=1, seed=5).fit(df, epochs=4, batch_size=32, verbose=0)
    assert_same_weights(distributed, local, atol=1e-5)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # evaluate on the executors (two partitions) equals the engine's on the same arrays; the
    # loss is also recomputed by hand from the predictions.
    test_df = vector_frame(spark, data["x_test"], multi_labels(data["y_test"]), label_as="vector", partitions=2)
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
    assert_same_weights(distributed, local, atol=1e-5)
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
    df = vector_frame(spark, x, one_hot(data["y"][:20] % 3, 3), label_as=label_as)
    model = digits_mlp()
    before = model.get_flat_weights().copy()
    spark_model = SparkModel(model, num_workers=1)
    with pytest.raises(ValueError, match=r"expected targets of shape \(None, 10\).*received \(20, 3\)"):
        spark_model.fit(df, epochs=1, verbose=0)
    assert spark_model.history is None
    np.testing.assert_array_equal(model.get_flat_weights(), before)
    with pytest.raises(ValueError, match=r"expected targets of shape \(None, 10\).*received \(\d+, 3\)"):
        spark_model.evaluate(df)


def test_one_hot_rows_for_a_sparse_categorical_model_are_refused(spark, data):
    x, y = data["x"][:20], data["y"][:20]
    sparse_model = digits_mlp(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError,
                       match=r"expected integer class ids of shape \(n,\).*categorical_crossentropy"):
        SparkModel(sparse_model, num_workers=1).fit(vector_frame(spark, x, one_hot(y, 10)), epochs=1, verbose=0)


def test_class_ids_for_a_categorical_model_train_as_their_one_hot_rows(spark, data):
    """A label column of class ids (what Spark's evaluators read) for a categorical_crossentropy
    model: one-hot encoded batch by batch, so the fit equals the fit on one-hot rows."""
    x, y = data["x"][:200], data["y"][:200]
    on_ids, on_rows = digits_mlp(seed=5), digits_mlp(seed=5)
    ids = SparkModel(on_ids, num_workers=1, seed=3).fit(vector_frame(spark, x, y, label_as="scalar"),
                                                        epochs=2, batch_size=32, verbose=0).history
    rows = SparkModel(on_rows, num_workers=1, seed=3).fit(vector_frame(spark, x, one_hot(y, 10)),
                                                          epochs=2, batch_size=32, verbose=0).history
    assert_same_weights(on_ids, on_rows)
    assert ids == rows and ids["loss"][-1] < ids["loss"][0]
    assert not np.array_equal(on_ids.get_flat_weights(), digits_mlp(seed=5).get_flat_weights())
    with pytest.raises(ValueError, match=r"class ids in \[0, 9\] .* received values in \[0, 12\]"):
        SparkModel(digits_mlp(), num_workers=1).fit(vector_frame(spark, x[:3], [0, 12, 1], label_as="scalar"),
                                                     epochs=1, verbose=0)


# ---- 4. sparse ml vectors as features ------------------------------------------------------------
def test_sparse_vector_features_train_like_dense_ones(spark, data):
    x, y = data["x"][:500], data["y"][:500]
    assert (x == 0).mean() > 0.3      # digits really are sparse
    sparse_df = vector_frame(spark, x, y, label_as="scalar", features_as="sparse")
    dense_df = vector_frame(spark, x, y, label_as="scalar", features_as="dense")
    assert type(sparse_df.first().features).__name__ == "SparseVector"
    on_sparse = digits_mlp(seed=6, loss="sparse_categorical_crossentropy")
    on_dense = digits_mlp(seed=6, loss="sparse_categorical_crossentropy")
    SparkModel(on_sparse, num_workers=1, seed=2).fit(sparse_df, epochs=2, batch_size=32, verbose=0)
    SparkModel(on_dense, num_workers=1, seed=2).fit(dense_df, epochs=2, batch_size=32, verbose=0)
    np.testing.assert_allclose(on_sparse.get_flat_weights(), on_dense.get_flat_weights(), rtol=0, atol=1e-6)
    # And both equal the engine on the arrays (so neither conversion dropped or moved a pixel).
    local = digits_mlp(seed=6, loss="sparse_categorical_crossentropy")
    local.fit(x, y, epochs=2, batch_size=32, seed=2, verbose=0)
    np.testing.assert_allclose(on_sparse.get_flat_weights(), local.get_flat_weights(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("features_as", ["dense", "sparse", "array", "columns"])
def test_blocks_read_from_arrow_batches_equal_the_arrays(spark, data, features_as, monkeypatch):
    """Training blocks come from Spark's Arrow batches (one RDD job); where Spark has no such
    RDD, a mapInArrow's rows carry them. Both paths hand the model the same arrays."""
    from sparkdl.spark import blocks as blocks_mod
    from sparkdl.spark import frames
    from sparkdl.spark.blocks import dataframe_blocks
    x, y = data["x"][:300, :8], data["y"][:300]
    if features_as in ("dense", "sparse"):
        df = vector_frame(spark, x, y, label_as="scalar", features_as=features_as)
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
            monkeypatch.setattr(blocks_mod, "arrow_batch_rdd", lambda df: None)
        blocks = dataframe_blocks(df, model, cols, "label", 1, "test")
        (xs, labels), = blocks.rdd.collect()
        blocks.release()
        np.testing.assert_array_equal(xs[0], x.astype(np.float32))
        np.testing.assert_array_equal(labels, y)
        got.append(xs[0])
    assert got[0].dtype == got[1].dtype == np.float32


def test_predict_on_sparse_and_mixed_rows_equals_engine_predict(spark, data):
    model = digits_mlp(seed=7, loss="sparse_categorical_crossentropy")
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


# ---- 5. Elephas' RDD of (x, y) pairs -----------------------------------------------------------------
def test_simple_rdd_with_one_hot_labels(spark, data):
    sc = spark.sparkContext
    x, y = data["x"][:500], one_hot(data["y"][:500], 10)
    local, distributed = digits_mlp(seed=12), digits_mlp(seed=12)
    local.fit(x, y, epochs=3, batch_size=32, seed=4, verbose=0)
    SparkModel(distributed, num_workers=1, seed=4).fit(to_simple_rdd(sc, x, y, num_slices=1),
                                                       epochs=3, batch_size=32, verbose=0)
    assert_same_weights(distributed, local, atol=1e-5)
    # Two workers on the full training set learn the digits.
    model = digits_mlp(seed=12)
    history = SparkModel(model, num_workers=2).fit(to_simple_rdd(sc, data["x"], one_hot(data["y"], 10)),
                                                   epochs=4, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert np.mean(model.predict(data["x_test"]).argmax(1) == data["y_test"]) > 0.85


@pytest.mark.parametrize("rows", [300, 3000])          # a local relation; Arrow batches of their own
def test_from_arrays_partitions_keep_their_rows_in_order(spark, rows):
    """A shuffle's reader takes map outputs in arrival order; from_arrays sorts each partition
    back into x's order (so a recomputed partition, or one on another master, is the same) and
    leaves only its two columns."""
    x = np.arange(rows * 64, dtype=np.float32).reshape(rows, 64)
    df = from_arrays(spark, x, np.arange(rows) % 10, num_partitions=3)
    assert df.columns == ["features", "label"]
    parts = df.rdd.glom().map(lambda part: [int(r.features[0]) // 64 for r in part]).collect()
    assert len(parts) == 3 and sorted(i for p in parts for i in p) == list(range(rows))
    assert all(p == sorted(p) and len(p) >= rows // 3 - 2 for p in parts), [p[:5] for p in parts]
