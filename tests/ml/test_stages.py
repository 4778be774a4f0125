"""The pyspark.ml stages (``sparkdl.ml.stages``): Params, Pipelines, CrossValidator,
evaluators, bad input. Saving and loading a stage alone is in test_persistence.py."""
import functools
import os

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import BinaryClassificationEvaluator, MulticlassClassificationEvaluator
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

import sparkdl
from sparkdl.engine import optimizers, zoo
from sparkdl.ml import NNClassifier, NNClassifierModel, NNEstimator, NNModel
from sparkdl import layers
from sparkdl.models import Input, Sequential
from tests import helpers
from tests.helpers import PIXELS, assembled, exact_auc

# The stages' template: 64 -> 64 (relu) -> 10 (softmax), SGD(0.05, momentum 0.9).
digits_mlp = functools.partial(helpers.digits_mlp, lr=0.05, hidden=(64,), loss="sparse_categorical_crossentropy")


def pipeline(clf):
    return Pipeline(stages=[VectorAssembler(inputCols=PIXELS, outputCol="raw"),
                            StandardScaler(inputCol="raw", outputCol="features"), clf])


def probabilities(df, col="probability"):
    return np.array([r[col].toArray() for r in df.orderBy("id").collect()])


# ---- the whole story -----------------------------------------------------------------------------
def test_pipeline_reaches_095_and_the_saved_pipeline_predicts_the_same(digits_df, tmp_path):
    train, test = digits_df
    fitted = pipeline(NNClassifier(model=digits_mlp(), epochs=20, batchSize=32, numWorkers=2)).fit(train)
    out = fitted.transform(test)
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(out)
    # Measured with digits_mlp(seed=s) and NNClassifier(seed=s) for s in 0-4: 0.964-0.978.
    assert accuracy >= 0.95, accuracy
    assert dict(out.dtypes)["prediction"] == "double"
    path = str(tmp_path / "pipeline")
    fitted.write().overwrite().save(path)
    assert os.path.exists(os.path.join(path, "stages"))
    loaded = PipelineModel.load(path)
    assert isinstance(loaded.stages[-1], NNClassifierModel)
    np.testing.assert_array_equal(probabilities(loaded.transform(test)), probabilities(out))
    # The saved weights are a binary array file beside a JSON architecture, not JSON lists.
    stage_dir = next(p for p in os.listdir(os.path.join(path, "stages")) if "NNClassifierModel" in p)
    files = set(os.listdir(os.path.join(path, "stages", stage_dir, "model")))
    assert {"model.json", "weights.npz"} <= files


def test_the_template_model_is_never_trained_in_place(digits_df):
    train, _ = digits_df
    template = digits_mlp()
    before = template.get_flat_weights().copy()
    clf = NNClassifier(model=template, featuresCol="features", epochs=1, numWorkers=2)
    first = clf.fit(assembled(train))
    second = clf.fit(assembled(train))
    np.testing.assert_array_equal(template.get_flat_weights(), before)
    np.testing.assert_array_equal(first.getModel().get_flat_weights(), second.getModel().get_flat_weights())


def test_cross_validator_over_learning_rate_and_epochs(digits_df):
    train, test = digits_df
    clf = NNClassifier(model=digits_mlp(), batchSize=32, numWorkers=2)
    grid = ParamGridBuilder().addGrid(clf.learningRate, [0.001, 0.05]).addGrid(clf.epochs, [1, 4]).build()
    cv = CrossValidator(estimator=pipeline(clf), estimatorParamMaps=grid, numFolds=2, seed=3,
                        evaluator=MulticlassClassificationEvaluator(metricName="accuracy"))
    model = cv.fit(train)
    metrics = dict(zip([(m[clf.learningRate], m[clf.epochs]) for m in grid], model.avgMetrics))
    # More epochs at the larger rate win, and the tiny rate for one epoch is the worst.
    assert max(metrics, key=metrics.get) == (0.05, 4), metrics
    assert min(metrics, key=metrics.get) == (0.001, 1), metrics
    best = model.bestModel.stages[-1]
    assert best.getLearningRate() == 0.05 and best.getEpochs() == 4
    assert best.getModel().optimizer.learning_rate == pytest.approx(0.05)
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(model.transform(test))
    assert accuracy > 0.9


def test_binary_classification_evaluator_reads_raw_prediction(digits_df):
    """One sigmoid output: probability and rawPrediction are [1 - p, p]; the evaluator's AUC
    equals the exact AUC of p, and the model learnt to tell digits >= 5 apart."""
    train, test = digits_df
    sparkdl.set_random_seed(1)
    model = zoo.mlp(input_dim=64, hidden=(16,), num_classes=1)
    model.compile(optimizers.SGD(0.05, momentum=0.9), "binary_crossentropy")

    def frame(df):      # pixels scaled to [0, 1]: raw 0-16 values saturate the sigmoid
        scaled = df.selectExpr(*[f"{p} / 16 AS {p}" for p in PIXELS], "label", "id")
        return assembled(scaled).selectExpr("features", "id", "CAST(label >= 5 AS DOUBLE) AS label")
    out = NNClassifier(model=model, epochs=3, numWorkers=2, seed=1).fit(frame(train)).transform(frame(test))
    auc = BinaryClassificationEvaluator().evaluate(out)
    rows = out.orderBy("id").collect()
    p = np.array([r.rawPrediction[1] for r in rows])
    np.testing.assert_allclose(np.array([r.probability[0] for r in rows]), 1 - p, rtol=1e-12)
    assert auc == pytest.approx(float(exact_auc([r.label for r in rows], p)), abs=1e-9)
    # Measured with set_random_seed(s) and NNClassifier(seed=s) for s in 0-4: AUC 0.911-0.928
    # (on unscaled pixels it was 0.61-0.90). Chance is 0.5.
    assert auc > 0.88


# ---- every Param reaches SparkModel -----------------------------------------------------------------
@pytest.fixture
def spy(monkeypatch):
    """Records what the stage hands to SparkModel (constructor and fit) and to predict_frame."""
    import sparkdl.spark as spark_pkg
    from sparkdl.spark import frames
    calls = {}
    real_model, real_predict = spark_pkg.SparkModel, frames.predict_frame

    class Recording(real_model):
        def __init__(self, model, **kwargs):
            calls["init"] = kwargs
            super().__init__(model, **kwargs)

        def fit(self, data, **kwargs):
            calls["fit"] = kwargs
            return super().fit(data, **kwargs)

    def predict(*args, **kwargs):
        calls["predict"] = (args, kwargs)
        return real_predict(*args, **kwargs)
    monkeypatch.setattr(spark_pkg, "SparkModel", Recording)
    monkeypatch.setattr(frames, "predict_frame", predict)
    return calls


@pytest.mark.parametrize("param, value, where, key, expected", [
    ("epochs", 2, "fit", "epochs", 2),
    ("batchSize", 16, "fit", "batch_size", 16),
    ("mode", "hogwild", "init", "mode", "hogwild"),
    ("frequency", "3", "init", "frequency", 3),
    ("frequency", "batch", "init", "frequency", "batch"),
    ("aggregate", "gradients", "init", "aggregate", "gradients"),
    ("numWorkers", 1, "init", "num_workers", 1),
    ("seed", 7, "init", "seed", 7),
    ("labelCol", "target", "fit", "label_col", "target"),
    ("featuresCol", "pixels", "fit", "features_col", "pixels"),
])
def test_each_training_param_reaches_spark_model(digits_df, spy, param, value, where, key, expected):
    train, _ = digits_df
    df = assembled(train).withColumnRenamed("label", "target" if param == "labelCol" else "label")
    if param == "featuresCol":
        df = df.withColumnRenamed("features", "pixels")
    clf = NNClassifier(model=digits_mlp(), **{"epochs": 1, param: value})
    fitted = clf.fit(df)
    assert spy[where][key] == expected
    assert fitted.getOrDefault(getattr(fitted, param)) == value    # copied onto the fitted model


def test_ssp_staleness_and_learning_rate_params(digits_df, spy):
    train, _ = digits_df
    template = digits_mlp(lr=0.05)
    fitted = NNClassifier(model=template, mode="ssp", staleness=1, frequency="batch", epochs=1,
                          learningRate=0.02).fit(assembled(train))
    assert spy["init"]["mode"] == "ssp" and spy["init"]["staleness"] == 1
    assert fitted.history.settings["staleness"] == 1
    assert fitted.getModel().optimizer.learning_rate == pytest.approx(0.02)
    assert template.optimizer.learning_rate == pytest.approx(0.05)
    kept = NNClassifier(model=template, epochs=0).fit(assembled(train))       # learningRate 0: keep
    assert kept.getModel().optimizer.learning_rate == pytest.approx(0.05)


def test_checkpoint_params_checkpoint_and_resume_the_fit(digits_df, spy, tmp_path):
    """checkpointDir, checkpointInterval and resume reach SparkModel.fit; a stage resuming a
    3-epoch fit from the checkpoints of a 2-epoch one ends with the weights of a 3-epoch fit."""
    train, _ = digits_df
    df = assembled(train)
    folder = str(tmp_path / "checkpoints")
    stage = lambda **kw: NNClassifier(model=digits_mlp(), numWorkers=2, frequency="4", **kw)
    stage(epochs=2, checkpointDir=folder, checkpointInterval=3).fit(df)
    assert spy["fit"]["checkpoint_dir"] == folder and spy["fit"]["checkpoint_every"] == 3
    assert spy["fit"]["resume"] is False
    assert sorted(os.listdir(folder))[-1].startswith("ckpt-")
    resumed = stage(epochs=3, checkpointDir=folder, checkpointInterval=3, resume=True).fit(df)
    assert spy["fit"]["resume"] is True and resumed.history.resumed_from > 0
    straight = stage(epochs=3).fit(df)
    assert spy["fit"]["checkpoint_dir"] is None
    np.testing.assert_array_equal(resumed.getModel().get_flat_weights(), straight.getModel().get_flat_weights())
    assert resumed.history.history == straight.history.history


def test_output_params_and_predict_batch_size(digits_df, spy):
    train, test = digits_df
    fitted = NNClassifier(model=digits_mlp(), epochs=1, predictionCol="cls", probabilityCol="p",
                          rawPredictionCol="raw", predictBatchSize=7).fit(assembled(train))
    out = fitted.transform(assembled(test))
    assert {"cls", "p", "raw"} <= set(out.columns) and "prediction" not in out.columns
    assert spy["predict"][1]["batch_size"] == 7
    small = probabilities(out, "p")
    big = probabilities(fitted.copy({fitted.predictBatchSize: 1000}).transform(assembled(test)), "p")
    np.testing.assert_allclose(small, big, rtol=1e-6, atol=1e-7)


def test_epochs_and_seed_change_the_model(digits_df):
    train, _ = digits_df
    df = assembled(train)
    fit = lambda **kw: NNClassifier(model=digits_mlp(), numWorkers=2, **kw).fit(df).getModel().get_flat_weights()
    np.testing.assert_array_equal(fit(epochs=0), digits_mlp().get_flat_weights())
    a, b, c = fit(epochs=1, seed=1), fit(epochs=1, seed=1), fit(epochs=1, seed=2)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4


# ---- regression ------------------------------------------------------------------------------------
def test_nn_estimator_regression_and_save_load(digits_df, tmp_path):
    train, test = digits_df
    sparkdl.set_random_seed(2)
    model = Sequential([Input((64,)), layers.Dense(16, activation="relu"), layers.Dense(1)])
    model.compile(optimizers.Adam(0.01), "mse")
    fitted = NNEstimator(model=model, epochs=5, numWorkers=2).fit(assembled(train))
    out = fitted.transform(assembled(test))
    assert dict(out.dtypes)["prediction"] == "double" and "probability" not in out.columns
    fitted.write().overwrite().save(str(tmp_path / "reg"))
    loaded = NNModel.load(str(tmp_path / "reg"))
    assert loaded.getEpochs() == 5
    a = [r.prediction for r in out.orderBy("id").collect()]
    b = [r.prediction for r in loaded.transform(assembled(test)).orderBy("id").collect()]
    assert a == b


# ---- bad input ---------------------------------------------------------------------------------------
def test_a_model_without_a_loss_is_refused():
    model = Sequential([Input((64,)), layers.Dense(10, activation="softmax")])
    with pytest.raises(ValueError, match="no loss; compile it first"):
        NNClassifier(model=model)
    with pytest.raises(TypeError, match="expected model=<a compiled sparkdl model>, received str"):
        NNEstimator(model="mlp")


def test_probability_columns_belong_to_classifiers():
    sparkdl.set_random_seed(0)
    regressor = Sequential([Input((64,)), layers.Dense(1)])
    regressor.compile("sgd", "mse")
    with pytest.raises(ValueError, match="expected a classifier .* loss 'mse'; use NNEstimator"):
        NNClassifier(model=regressor)
    with pytest.raises(TypeError, match="probabilityCol"):
        NNEstimator(model=regressor, probabilityCol="p")


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": -1}, "epochs >= 0"), ({"batchSize": 0}, "batchSize >= 1"),
    ({"mode": "fast"}, "unknown mode 'fast'"), ({"frequency": "often"}, "frequency 'epoch', 'batch'"),
    ({"aggregate": "mean"}, "aggregate 'weights' or 'gradients'"), ({"learningRate": -0.1}, "learningRate >= 0"),
    ({"checkpointInterval": 0}, "checkpointInterval >= 1"), ({"resume": True}, "resume=True needs checkpointDir"),
])
def test_bad_param_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NNClassifier(model=digits_mlp(), **kwargs)


def test_features_of_the_wrong_width(spark, digits_df):
    train, _ = digits_df
    narrow = VectorAssembler(inputCols=PIXELS[:10], outputCol="features").transform(train)
    clf = NNClassifier(model=digits_mlp(), epochs=1)
    with pytest.raises(ValueError, match="expects 64 feature values.*received rows of 10|expected vectors of size 64"):
        clf.fit(narrow)
