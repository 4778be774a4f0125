"""The pyspark.ml stages (``sparkdl.ml.stages``): Pipelines, CrossValidator, every Param
reaching SparkModel, the output columns next to Spark's own LogisticRegression (order, margins,
evaluators, one-vector predictions, thresholds), bad input. The Params themselves are in
test_params.py; saving and loading a stage alone in test_persistence.py."""
import functools
import os

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.evaluation import BinaryClassificationEvaluator, MulticlassClassificationEvaluator
from pyspark.ml.feature import OneHotEncoder, StandardScaler, VectorAssembler
from pyspark.ml.linalg import Vectors
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

import sparkdl
from sparkdl.engine import optimizers, zoo
from sparkdl.ml import NNClassifier, NNClassifierModel, NNEstimator, NNModel
from sparkdl import layers
from sparkdl.models import Input, Sequential
from tests import helpers
from tests.helpers import PIXELS, assembled, exact_auc, softmax

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


def test_binary_classifier_margins_and_the_binary_evaluator(digits_df):
    """One sigmoid output, as Spark's binary LogisticRegression: rawPrediction [-m, m] with m
    the logit (computed here from the weights), probability [1 - p, p] with p = sigmoid(m),
    numClasses 2; BinaryClassificationEvaluator's AUC on rawPrediction is the exact AUC of m,
    and the model learnt to tell digits >= 5 apart."""
    train, test = digits_df
    sparkdl.set_random_seed(1)
    model = zoo.mlp(input_dim=64, hidden=(16,), num_classes=1)
    model.compile(optimizers.SGD(0.05, momentum=0.9), "binary_crossentropy")

    def frame(df):      # pixels scaled to [0, 1]: raw 0-16 values saturate the sigmoid
        scaled = df.selectExpr(*[f"{p} / 16 AS {p}" for p in PIXELS], "label", "id")
        return assembled(scaled).selectExpr("features", "id", "CAST(label >= 5 AS DOUBLE) AS label")
    fitted = NNClassifier(model=model, epochs=3, numWorkers=2, seed=1).fit(frame(train))
    assert fitted.numClasses == 2
    out = fitted.transform(frame(test))
    auc = BinaryClassificationEvaluator(rawPredictionCol="rawPrediction").evaluate(out)
    rows = out.orderBy("id").collect()
    x = np.array([r.features.toArray() for r in rows])
    w1, b1, w2, b2 = [w.astype(np.float64) for w in fitted.getModel().get_weights()]
    m = (np.maximum(x @ w1 + b1, 0) @ w2 + b2)[:, 0]
    raw = np.array([r.rawPrediction.toArray() for r in rows])
    np.testing.assert_allclose(raw, np.stack([-m, m], axis=1), rtol=1e-4, atol=1e-5)
    p = 1 / (1 + np.exp(-raw[:, 1]))
    np.testing.assert_allclose(probabilities(out), np.stack([1 - p, p], axis=1), rtol=1e-5, atol=1e-6)
    assert auc == pytest.approx(float(exact_auc([r.label for r in rows], raw[:, 1])), abs=1e-9)
    # Measured with set_random_seed(s) and NNClassifier(seed=s) for s in 0-4: AUC 0.911-0.928
    # (on unscaled pixels it was 0.61-0.90). Chance is 0.5.
    assert auc > 0.88


# ---- next to Spark's LogisticRegression ----------------------------------------------------------
def one_layer_softmax(seed=0):
    """64 -> 10 softmax, categorical_crossentropy (so the label column of class ids is one-hot
    encoded on the fly): its logits are x @ W + b."""
    sparkdl.set_random_seed(seed)
    model = Sequential([Input((64,)), layers.Dense(10, activation="softmax")])
    model.compile(optimizers.SGD(0.01, momentum=0.9), "categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def softmax_fit(digits_df):
    """A one-layer softmax classifier fitted on the training digits, its output on the test
    digits (cached) and that output's rows in id order."""
    train, test = digits_df
    fitted = NNClassifier(model=one_layer_softmax(), epochs=3, batchSize=32, numWorkers=2).fit(assembled(train))
    out = fitted.transform(assembled(test)).cache()
    return fitted, out, out.orderBy("id").collect()


def test_columns_types_and_sizes_are_those_of_logistic_regression(digits_df, softmax_fit):
    train, test = digits_df
    spark_model = LogisticRegression(maxIter=3).fit(assembled(train))
    fitted, ours, _ = softmax_fit
    theirs = spark_model.transform(assembled(test))
    added = [c for c in theirs.columns if c not in assembled(test).columns]
    assert added == ["rawPrediction", "probability", "prediction"]
    assert [c for c in ours.columns if c not in assembled(test).columns] == added
    assert {c: t for c, t in ours.dtypes if c in added} == {c: t for c, t in theirs.dtypes if c in added}
    assert (fitted.numClasses, fitted.numFeatures) == (spark_model.numClasses, spark_model.numFeatures) == (10, 64)
    v = Vectors.dense(np.linspace(0, 1, 64))
    assert type(fitted.predictRaw(v)) is type(spark_model.predictRaw(v))
    assert fitted.predictRaw(v).size == spark_model.predictRaw(v).size == 10
    assert fitted.predictProbability(v).size == spark_model.predictProbability(v).size == 10
    assert isinstance(fitted.predict(v), float) and isinstance(spark_model.predict(v), float)
    # An empty column name leaves the column out, as in Spark.
    assert "rawPrediction" not in fitted.copy({fitted.rawPredictionCol: ""}).transform(assembled(test)).columns


def test_raw_prediction_is_the_logits_and_softmax_of_it_the_probability(softmax_fit):
    fitted, _, rows = softmax_fit
    x = np.array([r.features.toArray() for r in rows])
    kernel, bias = [w.astype(np.float64) for w in fitted.getModel().get_weights()]
    raw = np.array([r.rawPrediction.toArray() for r in rows])
    np.testing.assert_allclose(raw, x @ kernel + bias, rtol=1e-4, atol=1e-5)
    prob = np.array([r.probability.toArray() for r in rows])
    np.testing.assert_allclose(softmax(raw), prob, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal([r.prediction for r in rows], prob.argmax(axis=1))
    assert not np.allclose(raw, prob, atol=0.1)        # margins, not probabilities


def test_evaluators_on_the_output(softmax_fit):
    """MulticlassClassificationEvaluator reads the class-id label column the model trained on:
    its accuracy is the share of right predictions, counted here."""
    fitted, out, rows = softmax_fit
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(out)
    assert accuracy == pytest.approx(np.mean([r.prediction == r.label for r in rows]))
    assert accuracy > 0.85, accuracy
    assert fitted.history.history["accuracy"][-1] > 0.85


def test_predict_predict_raw_and_predict_probability_on_one_vector(softmax_fit):
    fitted, _, rows = softmax_fit
    for r in rows[:5]:
        assert fitted.predict(r.features) == r.prediction
        # One row at a time or a batch of them: float32 sums may round apart in the last bit.
        np.testing.assert_allclose(fitted.predictRaw(r.features).toArray(), r.rawPrediction.toArray(),
                                   rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(fitted.predictProbability(r.features).toArray(), r.probability.toArray(),
                                   rtol=1e-5, atol=1e-7)
    dense = rows[0].features.toArray()
    sparse = Vectors.sparse(64, np.flatnonzero(dense).tolist(), dense[dense != 0].tolist())
    np.testing.assert_array_equal(fitted.predictRaw(sparse).toArray(), fitted.predictRaw(rows[0].features).toArray())
    with pytest.raises(TypeError, match=r"NNClassifierModel.predict: expected an ml Vector .*received list"):
        fitted.predict(list(dense))
    with pytest.raises(ValueError, match="expected vectors of size 64"):
        fitted.predictRaw(Vectors.dense([1.0, 2.0]))


def test_thresholds_scale_the_probabilities_as_in_spark(softmax_fit, digits_df):
    """prediction = argmax(probability / thresholds); a threshold of 0 always wins."""
    fitted, _, rows = softmax_fit
    _, test = digits_df
    prob = np.array([r.probability.toArray() for r in rows])
    thresholds = [1.0, 1e-9] + [1.0] * 8       # the model is confident: class 1 needs a big push
    scaled = fitted.copy({fitted.thresholds: thresholds}).transform(assembled(test)).orderBy("id").collect()
    np.testing.assert_array_equal([r.prediction for r in scaled], (prob / thresholds).argmax(axis=1))
    assert sum(r.prediction == 1 for r in scaled) > sum(r.prediction == 1 for r in rows)
    zero = fitted.copy().setThresholds([1.0] * 9 + [0.0])
    assert zero.predict(rows[0].features) == 9.0
    with pytest.raises(ValueError, match="expected thresholds of length 10"):
        fitted.copy({fitted.thresholds: [0.5, 0.5]}).transform(assembled(test))


def test_class_ids_and_one_hot_labels_train_to_the_same_weights(digits_df):
    """categorical_crossentropy on the class-id label column and on its one-hot vectors (Spark's
    OneHotEncoder with dropLast=False) gives the same weights, bit for bit."""
    train, _ = digits_df
    df = OneHotEncoder(inputCol="label", outputCol="onehot", dropLast=False).fit(train).transform(
        assembled(train.filter("id < 400"))).cache()
    fit = lambda col: NNClassifier(model=one_layer_softmax(seed=2), labelCol=col, epochs=2, numWorkers=2)\
        .fit(df).getModel().get_flat_weights()
    on_ids, on_one_hot = fit("label"), fit("onehot")
    np.testing.assert_array_equal(on_ids, on_one_hot)
    assert np.abs(on_ids - one_layer_softmax(seed=2).get_flat_weights()).max() > 1e-3


# ---- every Param reaches SparkModel -----------------------------------------------------------------
@pytest.fixture
def spy(monkeypatch):
    """Records what the stage hands to SparkModel (constructor and fit) and to predict_frame."""
    import sparkdl.spark as spark_pkg
    from sparkdl.spark import inference
    calls = {}
    real_model, real_predict = spark_pkg.SparkModel, inference.predict_frame

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
    monkeypatch.setattr(inference, "predict_frame", predict)
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
    kept = NNClassifier(model=template, epochs=0).fit(assembled(train))       # learningRate unset: keep
    assert kept.getModel().optimizer.learning_rate == pytest.approx(0.05)
    assert spy["init"]["num_workers"] is None                                  # numWorkers unset
    frozen = NNClassifier(model=template, epochs=1, learningRate=0.0).fit(assembled(train))
    assert frozen.getModel().optimizer.learning_rate == 0.0
    np.testing.assert_array_equal(frozen.getModel().get_flat_weights(), template.get_flat_weights())


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
    rows = out.orderBy("id").collect()
    a = [r.prediction for r in rows]
    b = [r.prediction for r in loaded.transform(assembled(test)).orderBy("id").collect()]
    assert a == b
    assert loaded.numFeatures == 64
    assert loaded.predict(rows[0].features) == pytest.approx(rows[0].prediction, rel=1e-6)
    two = Sequential([Input((64,)), layers.Dense(2)])
    two.compile("sgd", "mse")
    with pytest.raises(ValueError, match="NNModel.predict: expected a model with one output .* 2 outputs"):
        NNModel(model=two).predict(rows[0].features)


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


def test_features_of_the_wrong_width(spark, digits_df):
    train, _ = digits_df
    narrow = VectorAssembler(inputCols=PIXELS[:10], outputCol="features").transform(train)
    clf = NNClassifier(model=digits_mlp(), epochs=1)
    with pytest.raises(ValueError, match="expects 64 feature values.*received rows of 10|expected vectors of size 64"):
        clf.fit(narrow)
