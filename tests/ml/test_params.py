"""The stages' Params (``sparkdl.ml.params``): a setter and a getter for each, as Spark's
``LogisticRegression`` has them; defaults written once; unset Params instead of special
values; every value checked by its rule whichever way it is set."""
import inspect

import pytest
from pyspark.ml.classification import (LogisticRegression, LogisticRegressionModel,
                                       ProbabilisticClassificationModel, ProbabilisticClassifier)

from sparkdl.ml import NNClassifier, NNClassifierModel, NNEstimator, NNModel
from tests.helpers import digits_mlp

STAGES = (NNEstimator, NNModel, NNClassifier, NNClassifierModel)

#: a valid value, other than the default, for every Param of the classifier
VALUES = {"featuresCol": "f", "labelCol": "y", "predictionCol": "p", "probabilityCol": "prob",
          "rawPredictionCol": "raw", "thresholds": [0.5] + [1.0] * 9, "epochs": 3, "batchSize": 16,
          "mode": "hogwild", "frequency": "batch", "staleness": 1, "aggregate": "gradients", "numWorkers": 2,
          "numServers": 1, "learningRate": 0.5, "predictBatchSize": 7, "seed": 9, "checkpointDir": "/tmp/ckpt",
          "checkpointInterval": 3, "resume": True}

#: the defaults, written out here rather than read from the code
DEFAULTS = {"featuresCol": "features", "labelCol": "label", "predictionCol": "prediction",
            "probabilityCol": "probability", "rawPredictionCol": "rawPrediction", "epochs": 10,
            "batchSize": 64, "mode": "sync", "frequency": "epoch", "staleness": 2, "aggregate": "weights",
            "numServers": 0, "predictBatchSize": 1024, "seed": 0, "checkpointInterval": 1, "resume": False}
UNSET = {"numWorkers", "learningRate", "checkpointDir", "thresholds"}


def classifier(**kwargs):
    return NNClassifier(model=digits_mlp(loss="sparse_categorical_crossentropy"), **kwargs)


def cap(name):
    return name[0].upper() + name[1:]


def test_the_classifier_has_exactly_the_params_listed_here():
    assert {p.name for p in classifier().params} == set(VALUES) == set(DEFAULTS) | UNSET


@pytest.mark.parametrize("name", sorted(VALUES))
def test_every_estimator_param_has_a_setter_and_a_getter(name):
    clf = classifier()
    assert getattr(clf, f"set{cap(name)}")(VALUES[name]) is clf
    assert getattr(clf, f"get{cap(name)}")() == VALUES[name]
    assert clf.isSet(name)
    if name in {"featuresCol", "labelCol", "predictionCol", "epochs", "seed", "numWorkers"}:
        estimator = NNEstimator()
        getattr(estimator, f"set{cap(name)}")(VALUES[name])
        assert getattr(estimator, f"get{cap(name)}")() == VALUES[name]


def test_models_set_their_inference_params_as_logistic_regression_model_does(spark):
    """The fitted model's setters: those LogisticRegressionModel has for Params we share, and
    predictBatchSize; getters for every Param."""
    shared = {p.name for p in NNClassifierModel().params} & {p.name for p in LogisticRegression().params}
    spark_setters = {n[3:] for n in dir(LogisticRegressionModel) if n.startswith("set") and n[3:4].isupper()}
    ours = {"FeaturesCol", "PredictionCol", "ProbabilityCol", "RawPredictionCol", "Thresholds"}
    assert {cap(n) for n in shared} & spark_setters == ours
    model = NNClassifierModel(model=digits_mlp())
    for name in sorted(ours) + ["PredictBatchSize"]:
        value = VALUES[name[0].lower() + name[1:]]
        assert getattr(model, f"set{name}")(value) is model and getattr(model, f"get{name}")() == value
    for p in model.params:
        assert callable(getattr(model, f"get{cap(p.name)}")), p.name
    assert not hasattr(model, "setEpochs")          # training Params are the estimator's to set
    regressor = NNModel().setFeaturesCol("f").setPredictionCol("p").setPredictBatchSize(5)
    assert (regressor.getFeaturesCol(), regressor.getPredictionCol(), regressor.getPredictBatchSize()) == ("f", "p", 5)


def test_setters_and_getters_of_shared_params_exist_where_logistic_regression_has_them(spark):
    for spark_class, ours in ((LogisticRegression, NNClassifier), (LogisticRegressionModel, NNClassifierModel)):
        spark_params = {p.name for p in (LogisticRegression().params)}
        for name in spark_params & {p.name for p in ours().params}:
            for prefix in ("set", "get"):
                if hasattr(spark_class, f"{prefix}{cap(name)}"):
                    assert hasattr(ours, f"{prefix}{cap(name)}"), (ours.__name__, prefix, name)
        for member in ("numClasses", "numFeatures", "predict", "predictRaw", "predictProbability"):
            assert hasattr(spark_class, member) == hasattr(ours, member), member
    assert issubclass(NNClassifier, ProbabilisticClassifier)
    assert issubclass(NNClassifierModel, ProbabilisticClassificationModel)


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.__name__)
def test_defaults_are_set_once_and_keyword_defaults_are_none(stage):
    instance = stage()
    for p in instance.params:
        if p.name in DEFAULTS:
            assert instance.hasDefault(p) and instance.getOrDefault(p) == DEFAULTS[p.name], p.name
            assert not instance.isSet(p)
        else:
            assert p.name in UNSET and not instance.hasDefault(p) and not instance.isDefined(p), p.name
    # No signature repeats a default: every keyword defaults to None ("not given").
    for method in (stage.__init__, getattr(stage, "setParams", None)):
        if method is not None:
            params = inspect.signature(method).parameters.values()
            assert {p.default for p in params if p.name != "self"} == {None}, method


def test_unset_params_mean_not_given_and_real_values_are_kept():
    clf = classifier()
    with pytest.raises(KeyError):
        clf.getNumWorkers()
    given = classifier(numWorkers=1, learningRate=0.0, checkpointDir="/tmp/c")
    assert (given.getNumWorkers(), given.getLearningRate(), given.getCheckpointDir()) == (1, 0.0, "/tmp/c")
    assert given.isSet(given.learningRate)       # 0.0 is a learning rate, not "keep the optimizer's"
    back = given.copy()
    back.clear(back.learningRate)
    assert not back.isDefined(back.learningRate)
    assert classifier(numWorkers=None).isSet("numWorkers") is False    # None: not given
    assert classifier(frequency=4).getFrequency() == "4"


@pytest.mark.parametrize("name, value, error, match", [
    ("epochs", -1, ValueError, r"expected epochs >= 0 \(an int\), received epochs=-1"),
    ("batchSize", 0, ValueError, "batchSize >= 1"),
    ("numWorkers", 0, ValueError, "numWorkers >= 1"),
    ("numServers", -1, ValueError, r"expected numServers >= 0 \(an int\), received numServers=-1"),
    ("numServers", "two", TypeError, "expected numServers as an int, received str: 'two'"),
    ("numServers", 1.5, TypeError, "expected numServers as an int, received float: 1.5"),
    ("checkpointInterval", 0, ValueError, "checkpointInterval >= 1"),
    ("learningRate", -0.1, ValueError, "learningRate >= 0"),
    ("checkpointDir", "", ValueError, "expected checkpointDir a directory path, received checkpointDir=''"),
    ("mode", "fast", ValueError, "unknown mode 'fast'"),
    ("frequency", "often", ValueError, "frequency 'epoch', 'batch'"),
    ("aggregate", "mean", ValueError, "aggregate 'weights' or 'gradients'"),
    ("thresholds", [0.0, 0.0] + [1.0] * 8, ValueError, "at most one of them 0"),
    ("epochs", "ten", TypeError, "expected epochs as an int, received str: 'ten'"),
    ("resume", "yes", TypeError, "expected resume as a bool"),
])
def test_bad_values_are_refused_by_constructor_setter_and_set_params(name, value, error, match):
    clf = classifier()
    for attempt in (lambda: classifier(**{name: value}), lambda: getattr(clf, f"set{cap(name)}")(value),
                    lambda: clf.setParams(**{name: value})):
        with pytest.raises(error, match=f"^NNClassifier: .*{match}"):
            attempt()
    assert not clf.isSet(name)      # a refused value is not kept


def test_rules_between_params_are_checked_when_given_together_and_before_fit(digits_df):
    with pytest.raises(ValueError, match="resume=True needs checkpointDir"):
        classifier(resume=True)
    with pytest.raises(ValueError, match="hogwild adds weight deltas without a lock"):
        classifier(mode="hogwild", aggregate="gradients")
    with pytest.raises(ValueError, match=r"expected thresholds of length 10 \(the model's classes\), received 2"):
        classifier(thresholds=[0.5, 0.5])
    # One at a time, a setter cannot know what comes next; a ParamGridBuilder map reaches the
    # stage through copy(), no setter at all. fit checks them all before any Spark job.
    train, _ = digits_df
    staged = classifier().setResume(True)
    with pytest.raises(ValueError, match="resume=True needs checkpointDir"):
        staged.fit(train)
    clf = classifier()
    with pytest.raises(ValueError, match="expected epochs >= 0"):
        clf.fit(train, {clf.epochs: -2})
