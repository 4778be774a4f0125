"""Bad input to SparkModel: a clear ValueError/TypeError before any training job runs, or a
documented behaviour (short partitions train on what they have and the history says so)."""
import numpy as np
import pytest
from pyspark.ml.linalg import Vectors

import sparkdl
from sparkdl.engine import optimizers, zoo
from sparkdl.spark import SparkModel, from_arrays


@pytest.fixture(scope="module")
def model():
    sparkdl.set_random_seed(0)
    m = zoo.mlp(input_dim=4, hidden=(8,), num_classes=3)
    m.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


@pytest.fixture(scope="module")
def good(spark):
    rng = np.random.default_rng(0)
    return from_arrays(spark, rng.random((40, 4), dtype=np.float32), rng.integers(0, 3, 40), num_partitions=2)


def test_missing_columns_are_named(model, good):
    with pytest.raises(ValueError, match=r"no features column 'pixels'.*columns: \['features', 'label'\]"):
        SparkModel(model).fit(good, features_col="pixels", epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"no label column 'target'"):
        SparkModel(model).fit(good, label_col="target", epochs=1, verbose=0)


def test_column_of_the_wrong_type(spark, model):
    df = spark.createDataFrame([("a", 1.0), ("b", 0.0)], ["features", "label"])
    with pytest.raises(TypeError, match=r"features column 'features' has type string; expected an ml Vector"):
        SparkModel(model).fit(df, epochs=1, verbose=0)


def test_column_of_the_wrong_width(spark, model):
    df = spark.createDataFrame([(Vectors.dense([1.0, 2.0, 3.0]), 1.0)] * 4, ["features", "label"])
    with pytest.raises(ValueError, match=r"expected vectors of size 4, received a dense vector of size 3"):
        SparkModel(model, num_workers=1).fit(df, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"model expects 4 features values, received 2 columns"):
        SparkModel(model).fit(spark.createDataFrame([(1.0, 2.0, 0.0)], ["a", "b", "label"]),
                              features_col=["a", "b"], epochs=1, verbose=0)


def test_non_finite_features(spark, model):
    df = spark.createDataFrame([(Vectors.dense([1.0, float("nan"), 0.0, 1.0]), 1.0)] * 4, ["features", "label"])
    with pytest.raises(ValueError, match=r"contain 4 NaN or infinite values"):
        SparkModel(model, num_workers=1).fit(df, epochs=1, verbose=0)


def test_bad_values_found_by_the_tasks_end_the_job_cleanly(spark, model):
    """A NaN, a null label or an unknown class id is found while the tasks convert their
    partitions: the task hands the refusal back as its result, so the job ends normally (no
    executor logs a stack trace per attempt) and the driver raises one exception of its own,
    not one chained to Spark's."""
    nan = spark.createDataFrame([(Vectors.dense([1.0, float("nan"), 0.0, 1.0]), 1.0)] * 4, ["features", "label"])
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType
    schema = StructType([StructField("features", VectorUDT()), StructField("y", DoubleType())])
    null_label = spark.createDataFrame([(Vectors.dense([1.0, 0.0, 0.0, 1.0]), None)] * 3 +
                                       [(Vectors.dense([1.0, 0.0, 0.0, 1.0]), 1.0)], schema)
    tracker = spark.sparkContext.statusTracker()
    null_message = r"column 'y' has 3 null values; expected none \(drop or fill them first, e\.g\. " \
                   r"df\.na\.drop\(subset=\['y'\]\)\)"
    for df, options, match in [(nan, {}, "contain 4 NaN"), (null_label, {"label_col": "y"}, null_message)]:
        spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(30_000)
        before = set(tracker.getJobIdsForGroup(None))
        with pytest.raises(ValueError, match=match) as error:
            SparkModel(model, num_workers=1).fit(df, epochs=1, verbose=0, **options)
        assert error.value.__cause__ is None and error.value.__context__ is None
        spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(30_000)
        jobs = set(tracker.getJobIdsForGroup(None)) - before
        assert jobs and all(tracker.getJobInfo(j).status == "SUCCEEDED" for j in jobs)


def test_string_labels_suggest_a_string_indexer(spark, model):
    df = spark.createDataFrame([(Vectors.dense([1.0, 0.0, 0.0, 1.0]), "cat")] * 2, ["features", "label"])
    with pytest.raises(TypeError, match=r"label column 'label' has type string.*pyspark\.ml\.feature\.StringIndexer"):
        SparkModel(model).fit(df, epochs=1, verbose=0)


def test_labels_outside_the_models_classes(spark, model):
    df = spark.createDataFrame([(Vectors.dense([1.0, 0.0, 0.0, 1.0]), 7.0)] * 4, ["features", "label"])
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\].*received values in \[7, 7\]"):
        SparkModel(model, num_workers=1).fit(df, epochs=1, verbose=0)


def test_empty_dataframe_and_too_many_workers(spark, model, good):
    with pytest.raises(ValueError, match="DataFrame is empty"):
        SparkModel(model, num_workers=1).fit(good.limit(0), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"8 workers but only 3 rows"):
        SparkModel(model, num_workers=8).fit(good.limit(3), epochs=1, verbose=0)


def test_arguments_are_checked_before_any_job(model):
    with pytest.raises(ValueError, match="frequency"):
        SparkModel(model, frequency="sometimes")
    with pytest.raises(ValueError, match="aggregate"):
        SparkModel(model, aggregate="median")
    with pytest.raises(ValueError, match="num_workers"):
        SparkModel(model, num_workers=0)
    uncompiled = zoo.mlp(input_dim=4, hidden=(8,), num_classes=3)
    with pytest.raises(ValueError, match="compiled model"):
        SparkModel(uncompiled)


def test_short_partitions_train_on_what_they_have_and_history_says_so(model, good):
    history = SparkModel(model, num_workers=2).fit(good, epochs=1, batch_size=32, verbose=0)
    assert sorted(history.rows_per_partition) == [20, 20]
    assert sorted(r for _, r in history.short_partitions) == [20, 20]
    assert history.rounds[0]["samples"] == 40


def test_bad_checkpoint_options_and_checkpoints_of_another_run(model, good, tmp_path):
    fit = lambda m, **kw: SparkModel(m, num_workers=2).fit(good, epochs=1, batch_size=8, verbose=0, **kw)
    with pytest.raises(ValueError, match=r"checkpoint_every >= 1 .* received checkpoint_every=0"):
        fit(model, checkpoint_dir=str(tmp_path), checkpoint_every=0)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        fit(model, resume=True)
    with pytest.raises(TypeError, match="resume as a bool"):
        fit(model, checkpoint_dir=str(tmp_path), resume="yes")
    with pytest.raises(ValueError, match="hdfs"):
        fit(model, checkpoint_dir="hdfs://namenode/checkpoints")
    assert list(tmp_path.iterdir()) == []                 # nothing written by the refused fits
    # Checkpoints written with batch size 8 cannot resume a fit with batch size 4.
    sparkdl.set_random_seed(1)
    other = zoo.mlp(input_dim=4, hidden=(8,), num_classes=3)
    other.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    fit(other, checkpoint_dir=str(tmp_path))
    before = model.get_flat_weights()
    with pytest.raises(ValueError, match=r"come from another run .*batch_size: checkpoint 8, this fit 4"):
        SparkModel(model, num_workers=2).fit(good, epochs=1, batch_size=4, verbose=0,
                                             checkpoint_dir=str(tmp_path), resume=True)
    np.testing.assert_array_equal(model.get_flat_weights(), before)
