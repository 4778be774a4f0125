"""Integer (id) inputs from DataFrames: an ml Vector's active indices, or an array of ints,
become the int64 ids of a model whose single input is ``Input(shape, dtype="int64")`` (the
click-through models: embeddings of hashed ids), without a Python UDF."""
import numpy as np
import pytest

import sparkdl
from sparkdl import layers, optimizers
from sparkdl.models import Sequential
from sparkdl.spark import SparkModel, frames
from sparkdl.spark.blocks import dataframe_blocks

FIELDS, BUCKETS = 3, 8
NUM_IDS = FIELDS * BUCKETS


def click_ids(n, seed=0):
    """One id per field, each field in its own block of ids (so a row's ids are distinct and
    increasing), and labels from a logistic truth over the ids."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, BUCKETS, (n, FIELDS)) + np.arange(FIELDS) * BUCKETS
    weights = rng.normal(0, 1.5, NUM_IDS)
    p = 1 / (1 + np.exp(-weights[ids].sum(axis=1)))
    return ids.astype(np.int64), (rng.random(n) < p).astype(np.float64)


def embedding_model(seed=0):
    """Ids -> embeddings -> a small tower -> one sigmoid unit (a Sequential DNN over
    embeddings: the data path is what is tested here, not the functional graph)."""
    sparkdl.set_random_seed(seed)
    model = Sequential([
        layers.Input((FIELDS,), dtype="int64"),
        layers.Embedding(NUM_IDS, 4),
        layers.Flatten(),
        layers.Dense(8, activation="relu"),
        layers.Dense(1, activation="sigmoid"),
    ], name="ids_dnn")
    model.compile(optimizer=optimizers.Adam(learning_rate=0.02), loss="binary_crossentropy",
                  metrics=["auc"])
    return model


def id_frame(spark, ids, labels, dense_every=0, partitions=1):
    """Columns ``vec`` (sparse ml Vectors of size NUM_IDS with ones at the ids; every
    ``dense_every``-th row a dense vector instead), ``ids`` (array<long>) and ``label``."""
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import ArrayType, DoubleType, LongType, StructField, StructType
    schema = StructType([StructField("vec", VectorUDT()), StructField("ids", ArrayType(LongType())),
                         StructField("label", DoubleType())])
    rows = []
    for i, (r, y) in enumerate(zip(ids, labels)):
        # Sparse indices given out of order: the reader sorts them (Spark keeps them as given).
        vec = Vectors.sparse(NUM_IDS, {int(k): 1.0 for k in r[::-1]})
        if dense_every and i % dense_every == 0:
            vec = Vectors.dense(vec.toArray())
        rows.append((vec, [int(k) for k in r], float(y)))
    return spark.createDataFrame(rows, schema).coalesce(partitions)


def test_sparse_vector_ids_train_predict_and_evaluate_like_array_ids_and_numpy(spark):
    ids, labels = click_ids(600)
    df = id_frame(spark, ids, labels, dense_every=5).cache()
    assert dict(df.dtypes)["ids"] == "array<bigint>"

    trained = {}
    for col in ("vec", "ids"):
        spark_model = SparkModel(embedding_model(), mode="sync", frequency="epoch", num_workers=1, seed=0)
        spark_model.fit(df, epochs=3, batch_size=32, features_col=col, label_col="label")
        trained[col] = spark_model
    # The same ids in the same order: the same training, weight for weight.
    np.testing.assert_array_equal(trained["vec"].model.flat_weights, trained["ids"].model.flat_weights)

    # One worker repeats the single-process fit on the NumPy ids (up to float32 rounding).
    local = embedding_model()
    local.fit(ids, labels, epochs=3, batch_size=32, seed=0, verbose=0)
    np.testing.assert_allclose(trained["vec"].model.flat_weights, local.flat_weights, rtol=1e-4, atol=1e-5)

    expected = local.predict(ids)[:, 0]
    for col in ("vec", "ids"):
        rows = trained["vec"].predict(df, features_col=col).select("probability").collect()
        p1 = np.array([r.probability[1] for r in rows])
        np.testing.assert_allclose(p1, expected, rtol=1e-4, atol=1e-5)
    by_vec = trained["vec"].evaluate(df, features_col="vec")
    by_ids = trained["vec"].evaluate(df, features_col="ids")
    assert by_vec == pytest.approx(by_ids)
    assert by_vec == pytest.approx(local.evaluate(ids, labels), rel=1e-4, abs=1e-5)
    assert by_vec["auc"] > 0.7      # it learned something from the ids
    df.unpersist()


def test_libsvm_source_gives_zero_based_ids(spark, tmp_path):
    """Spark's libsvm reader: 1-based ``index:value`` pairs -> sparse Vectors -> ids index - 1."""
    ids, labels = click_ids(40, seed=1)
    path = tmp_path / "clicks.libsvm"
    path.write_text("".join(f"{int(y)} " + " ".join(f"{k + 1}:1" for k in r) + "\n"
                            for r, y in zip(ids, labels)))
    df = spark.read.format("libsvm").option("numFeatures", NUM_IDS).load(str(path)).coalesce(1)
    model = embedding_model()
    blocks = dataframe_blocks(df, model, "features", "label", 1, "test")
    (xs, y), = blocks.rdd.collect()
    blocks.release()
    assert xs[0].dtype == np.int64
    np.testing.assert_array_equal(xs[0], ids)
    np.testing.assert_array_equal(y.reshape(-1), labels)


def test_integer_arrays_keep_int64_precision(spark):
    """Ids above 2**24 (where float32 stops holding every integer) arrive exactly."""
    big = [[2 ** 24 + 1, 2 ** 40 + 3, 5], [2 ** 53 + 1, 2 ** 31, 16_777_219]]
    model = embedding_model()
    for type_ in ("array<long>", "array<int>"):
        rows = big if type_ == "array<long>" else [[2 ** 24 + 1, 2 ** 30 + 7, 5], [3, 2 ** 31 - 1, 16_777_219]]
        df = spark.createDataFrame([(r, 1.0) for r in rows], f"ids {type_}, label double").coalesce(1)
        blocks = dataframe_blocks(df, model, "ids", "label", 1, "test")
        (xs, _), = blocks.rdd.collect()
        blocks.release()
        assert xs[0].dtype == np.int64
        np.testing.assert_array_equal(xs[0], np.array(rows, dtype=np.int64))
    # from_arrays keeps integer arrays as array<bigint>.
    df = frames.from_arrays(spark, np.array(big, dtype=np.int64), np.ones(2))
    assert df.schema["features"].dataType.simpleString() == "array<bigint>"
    blocks = dataframe_blocks(df.coalesce(1), model, "features", "label", 1, "test")
    (xs, _), = blocks.rdd.collect()
    blocks.release()
    np.testing.assert_array_equal(xs[0], np.array(big, dtype=np.int64))
    # Several long columns, one id each.
    df = spark.createDataFrame([(2 ** 40 + 1, 7, 2 ** 24 + 1, 0.0)], "a long, b int, c long, label double")
    blocks = dataframe_blocks(df.coalesce(1), model, ["a", "b", "c"], "label", 1, "test")
    (xs, _), = blocks.rdd.collect()
    blocks.release()
    assert xs[0].dtype == np.int64 and xs[0].tolist() == [[2 ** 40 + 1, 7, 2 ** 24 + 1]]


def test_wrong_number_of_active_indices_is_a_clear_error(spark):
    from pyspark.ml.linalg import Vectors
    rows = [(Vectors.sparse(NUM_IDS, [0, 9, 17], [1.0, 1.0, 1.0]), 1.0),
            (Vectors.sparse(NUM_IDS, [2, 10], [1.0, 1.0]), 0.0),
            (Vectors.sparse(NUM_IDS, [1, 12, 20], [1.0, 1.0, 1.0]), 0.0)]
    df = spark.createDataFrame(rows, ["features", "label"]).coalesce(1)
    expected = (r"features column 'features'\): expected 3 active indices per row \(the ids of the "
                r"model's integer input\), received a row with 2")
    spark_model = SparkModel(embedding_model(), num_workers=1)
    with pytest.raises(ValueError, match=r"SparkModel\.fit \(" + expected):
        spark_model.fit(df, epochs=1, batch_size=2)
    with pytest.raises(ValueError, match=r"SparkModel\.evaluate \(" + expected):
        spark_model.evaluate(df)
    with pytest.raises(Exception, match=expected):   # predict is lazy: raised by the action
        spark_model.predict(df).collect()
