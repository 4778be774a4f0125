"""pyspark.ml stages around a compiled sparkdl model: ``NNEstimator`` -> ``NNModel`` and
``NNClassifier`` -> ``NNClassifierModel``, built on Spark's own ``Predictor`` and
``ProbabilisticClassifier`` bases so they answer as ``LogisticRegression`` does (a setter and a
getter per Param, ``numFeatures``, ``numClasses``, ``predict``, ``predictRaw``,
``predictProbability``, and the columns ``rawPrediction``, ``probability``, ``prediction``).

The estimators hold a compiled model as a template (never trained in place: each ``fit``
trains a copy, so ``CrossValidator`` starts every fold from the same weights) and train it with
``SparkModel``; the fitted models predict on the executors through Arrow batches. Every
training option is a Param (``sparkdl.ml.params``), so ``ParamGridBuilder`` can vary it; the
model itself travels next to the Params (JSON architecture and binary weights on save, see
``persistence``).
"""
from __future__ import annotations

import logging
import pickle
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pyspark import keyword_only
from pyspark.ml.base import PredictionModel, Predictor
from pyspark.ml.classification import ProbabilisticClassificationModel, ProbabilisticClassifier
from pyspark.ml.linalg import DenseVector, Vector

from sparkdl.ml.params import _NNParams
from sparkdl.ml.persistence import NNReadable, NNWritable

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from sparkdl.engine.callbacks import History
    from sparkdl.engine.model import Model as EngineModel

logger = logging.getLogger(__name__)

_S = TypeVar("_S", bound="_NNStage")
_M = TypeVar("_M", bound="_NNModelBase")


def _check_model(model: Any, who: str, classifier: bool) -> EngineModel:
    from sparkdl.engine.model import Model as EngineModel
    if not isinstance(model, EngineModel):
        raise TypeError(f"{who}: expected model=<a compiled sparkdl model>, received "
                        f"{type(model).__name__}")
    if getattr(model, "loss", None) is None or getattr(model, "optimizer", None) is None:
        raise ValueError(f"{who}: the model has no loss; compile it first "
                         f"(model.compile(optimizer=..., loss=...))")
    if not model.built:
        raise ValueError(f"{who}: model '{model.name}' is not built; give it an input shape")
    assert model.loss is not None, "checked above"
    if classifier and not model.loss.name.endswith("crossentropy"):
        raise ValueError(f"{who}: expected a classifier (a crossentropy loss), received a model "
                         f"with loss {model.loss.name!r}; use NNEstimator for regression")
    return model


def _copy_of(model: EngineModel) -> EngineModel:
    """An independent copy (weights, optimizer state, custom layers included)."""
    import cloudpickle
    return pickle.loads(cloudpickle.dumps(model))


class _NNStage(_NNParams):
    """What estimators and models share besides the Params: the sparkdl model they hold."""

    _classifier = False

    def __init__(self) -> None:
        super().__init__()
        self._model: EngineModel | None = None

    def _take_model(self, model: EngineModel | None) -> None:
        self._model = _check_model(model, type(self).__name__, self._classifier) if model is not None else None

    def _construct(self, given: dict[str, Any]) -> None:
        """A ``@keyword_only`` constructor's work: the model and the Params it was given."""
        params = dict(given)
        self._take_model(params.pop("model", None))
        self._set_given(params)

    def _require_model(self, who: str) -> EngineModel:
        if self._model is None:
            raise ValueError(f"{type(self).__name__}.{who}: no model; pass model=<a compiled sparkdl model>")
        return self._model

    def _check_servers(self, mode: str, who: str, model: Any = None) -> None:
        """numServers's rules, the Embedding tables of the model this stage holds included."""
        super()._check_servers(mode, who, self._model)

    def getModel(self) -> EngineModel | None:
        """The sparkdl model: the template of an estimator, the trained network of a model."""
        return self._model

    def setPredictBatchSize(self: _S, value: int) -> _S:
        """Set ``predictBatchSize`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(predictBatchSize=value)


class _NNEstimatorBase(_NNStage):
    """Training: the setters of every Param and the fit (concrete classes add Spark's
    ``Predictor`` or ``ProbabilisticClassifier``, which bring the column setters)."""

    def setModel(self: _S, model: EngineModel) -> _S:
        """Set the sparkdl model that ``fit`` trains: a compiled, built model (a classifier's has a cross-entropy
        loss); returns the stage."""
        self._model = _check_model(model, type(self).__name__, self._classifier)
        return self

    def setEpochs(self: _S, value: int) -> _S:
        """Set ``epochs`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(epochs=value)

    def setBatchSize(self: _S, value: int) -> _S:
        """Set ``batchSize`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(batchSize=value)

    def setMode(self: _S, value: str) -> _S:
        """Set ``mode`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(mode=value)

    def setFrequency(self: _S, value: str | int) -> _S:
        """Set ``frequency`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(frequency=value)

    def setStaleness(self: _S, value: int) -> _S:
        """Set ``staleness`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(staleness=value)

    def setAggregate(self: _S, value: str) -> _S:
        """Set ``aggregate`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(aggregate=value)

    def setNumWorkers(self: _S, value: int) -> _S:
        """Set ``numWorkers`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(numWorkers=value)

    def setNumServers(self: _S, value: int) -> _S:
        """Set ``numServers`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(numServers=value)

    def setLearningRate(self: _S, value: float) -> _S:
        """Set ``learningRate`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(learningRate=value)

    def setSeed(self: _S, value: int) -> _S:
        """Set ``seed`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(seed=value)

    def setCheckpointDir(self: _S, value: str) -> _S:
        """Set ``checkpointDir`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(checkpointDir=value)

    def setCheckpointInterval(self: _S, value: int) -> _S:
        """Set ``checkpointInterval`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(checkpointInterval=value)

    def setResume(self: _S, value: bool) -> _S:
        """Set ``resume`` after its type and rule accepted the value; returns the stage."""
        return self._set_checked(resume=value)

    def _fitted(self, model_class: type[_M], dataset: DataFrame) -> _M:
        """``_fit``: train a copy of the template, and return it as a ``model_class`` stage with
        this stage's Params and the History."""
        name = type(self).__name__
        template = self._require_model("fit")
        self._check_params()
        from sparkdl.spark import SparkModel
        model = _copy_of(template)
        if self.isDefined(self.learningRate):
            assert model.optimizer is not None, "_check_model took a compiled model"
            model.optimizer.learning_rate = self.getLearningRate()
        spark_model = SparkModel(model, mode=self.getMode(), frequency=self._frequency_value(),
                                 num_workers=self.getNumWorkers() if self.isDefined(self.numWorkers) else None,
                                 aggregate=self.getAggregate(), num_servers=self.getNumServers(),
                                 seed=self.getSeed(), **self._mode_options())
        checkpoints = self.isDefined(self.checkpointDir)
        history = spark_model.fit(dataset, epochs=self.getEpochs(), batch_size=self.getBatchSize(),
                                  features_col=self.getFeaturesCol(), label_col=self.getLabelCol(),
                                  verbose=0, checkpoint_dir=self.getCheckpointDir() if checkpoints else None,
                                  checkpoint_every=self.getCheckpointInterval(), resume=self.getResume())
        losses = history.history.get("loss") or [None]
        logger.info("%s: trained %d epochs, final loss %s", name, len(history.epoch), losses[-1])
        fitted = model_class()
        fitted._take_model(model)
        self._copyValues(fitted)
        fitted.history = history
        return fitted


class _NNModelBase(_NNStage):
    """Inference: ``numFeatures``, ``predict`` on one Vector and ``transform`` on the executors;
    ``history`` is the training History (kept by save and load)."""

    def __init__(self) -> None:
        super().__init__()
        self.history: History | None = None

    @property
    def numFeatures(self) -> int:
        """Feature values per row the model takes (-1 without a model, as in Spark)."""
        if self._model is None:
            return -1
        (shape, _), = self._model.input_specs()
        return int(np.prod(shape))

    def _predictions(self, value: Vector, who: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(prediction, rawPrediction, probability)`` of one row, as ``transform`` computes them."""
        from sparkdl.spark import inference
        model = self._require_model(who)
        self._check_params()
        x = inference.vector_rows(model, [value], f"{type(self).__name__}.{who}")
        return inference.predictions(model, x, 1, self._thresholds())

    def predict(self, value: Vector) -> float:
        """The prediction of one feature Vector: the class index for a classifier, the output of
        a one-output regressor (a model with several outputs: use ``transform``)."""
        prediction, _, _ = self._predictions(value, "predict")
        if prediction.ndim != 1:
            raise ValueError(f"{type(self).__name__}.predict: expected a model with one output (or a "
                             f"classifier), received one with {prediction.shape[1]} outputs; use transform")
        return float(prediction[0])

    def _thresholds(self) -> list[float] | None:
        return None

    def _output_columns(self) -> dict[str, Any]:
        return {"probability_col": None, "raw_prediction_col": None}

    def _transform(self, dataset: DataFrame) -> DataFrame:
        model = self._require_model("transform")
        self._check_params()
        from sparkdl.spark import inference
        return inference.predict_frame(dataset, model, self.getFeaturesCol(), self.getPredictionCol(),
                                    batch_size=self.getPredictBatchSize(), thresholds=self._thresholds(),
                                    who=f"{type(self).__name__}.transform", **self._output_columns())


class _NNClassifierMixin(_NNStage):
    """Thresholds as Spark's probabilistic classifiers take them, checked when set."""

    _classifier = True

    def setThresholds(self: _S, value: list[float]) -> _S:
        """Set ``thresholds`` (one per class) after its type and rule accepted the value; returns the stage."""
        return self._set_checked(thresholds=value)

    def _check_params(self) -> None:
        super()._check_params()
        if self._model is not None and self.isDefined("thresholds"):
            from sparkdl.spark.inference import class_count
            thresholds, classes = self.getOrDefault("thresholds"), class_count(self._model)
            if len(thresholds) != classes:
                raise ValueError(f"{type(self).__name__}: expected thresholds of length {classes} (the "
                                 f"model's classes), received {len(thresholds)}: {thresholds}")


class NNModel(_NNModelBase, PredictionModel[Vector], NNWritable, NNReadable):
    """A trained network: ``transform`` adds ``predictionCol`` (a double for one output, an
    array of doubles for several; the class index for a crossentropy model), computed on the
    executors."""

    @keyword_only
    def __init__(self, *, model: EngineModel | None = None, featuresCol: str | None = None,
                 labelCol: str | None = None, predictionCol: str | None = None, epochs: int | None = None,
                 batchSize: int | None = None, mode: str | None = None, frequency: str | int | None = None,
                 staleness: int | None = None, aggregate: str | None = None, numWorkers: int | None = None,
                 numServers: int | None = None, learningRate: float | None = None,
                 predictBatchSize: int | None = None, seed: int | None = None, checkpointDir: str | None = None,
                 checkpointInterval: int | None = None, resume: bool | None = None):
        super().__init__()
        self._construct(self._input_kwargs)


class NNClassifierModel(_NNClassifierMixin, _NNModelBase, ProbabilisticClassificationModel, NNWritable,
                        NNReadable):
    """A trained classifier, answering as Spark's ``LogisticRegressionModel``: ``transform``
    adds ``rawPredictionCol`` (margins: the logits of a softmax output, ``[-z, z]`` for one
    sigmoid unit of logit ``z``; the probabilities where the output has neither activation),
    ``probabilityCol`` (class probabilities; ``[1 - p, p]`` for one sigmoid unit) and
    ``predictionCol`` (the class index as a double), in that order. An empty column name
    leaves that column out."""

    @keyword_only
    def __init__(self, *, model: EngineModel | None = None, featuresCol: str | None = None,
                 labelCol: str | None = None, predictionCol: str | None = None,
                 probabilityCol: str | None = None, rawPredictionCol: str | None = None,
                 thresholds: list[float] | None = None, epochs: int | None = None,
                 batchSize: int | None = None, mode: str | None = None, frequency: str | int | None = None,
                 staleness: int | None = None, aggregate: str | None = None, numWorkers: int | None = None,
                 numServers: int | None = None, learningRate: float | None = None,
                 predictBatchSize: int | None = None, seed: int | None = None, checkpointDir: str | None = None,
                 checkpointInterval: int | None = None, resume: bool | None = None):
        super().__init__()
        self._construct(self._input_kwargs)

    @property
    def numClasses(self) -> int:
        """Classes the model tells apart: its output units, 2 for one sigmoid unit (-1 without
        a model)."""
        from sparkdl.spark.inference import class_count
        return class_count(self._model) if self._model is not None else -1

    def predictRaw(self, value: Vector) -> DenseVector:
        """The margins of one feature Vector (the ``rawPrediction`` of its row)."""
        _, raw, _ = self._predictions(value, "predictRaw")
        assert raw is not None, "a classifier has margins"
        return DenseVector(raw[0])

    def predictProbability(self, value: Vector) -> DenseVector:
        """The class probabilities of one feature Vector (the ``probability`` of its row)."""
        _, _, prob = self._predictions(value, "predictProbability")
        assert prob is not None, "a classifier has probabilities"
        return DenseVector(prob[0])

    def _thresholds(self) -> list[float] | None:
        return self.getThresholds() if self.isDefined(self.thresholds) else None

    def _output_columns(self) -> dict[str, Any]:
        return {"probability_col": self.getProbabilityCol() or None,
                "raw_prediction_col": self.getRawPredictionCol() or None}


class NNEstimator(_NNEstimatorBase, Predictor[NNModel], NNWritable, NNReadable):
    """Trains a compiled sparkdl model on a DataFrame with ``SparkModel``; ``fit`` returns an
    ``NNModel``. For classifiers, ``NNClassifier`` adds the probability columns."""

    @keyword_only
    def __init__(self, *, model: EngineModel | None = None, featuresCol: str | None = None,
                 labelCol: str | None = None, predictionCol: str | None = None, epochs: int | None = None,
                 batchSize: int | None = None, mode: str | None = None, frequency: str | int | None = None,
                 staleness: int | None = None, aggregate: str | None = None, numWorkers: int | None = None,
                 numServers: int | None = None, learningRate: float | None = None,
                 predictBatchSize: int | None = None, seed: int | None = None, checkpointDir: str | None = None,
                 checkpointInterval: int | None = None, resume: bool | None = None):
        super().__init__()
        self._construct(self._input_kwargs)

    def _fit(self, dataset: DataFrame) -> NNModel:
        return self._fitted(NNModel, dataset)

    @keyword_only
    def setParams(self, *, featuresCol: str | None = None, labelCol: str | None = None,
                  predictionCol: str | None = None, epochs: int | None = None, batchSize: int | None = None,
                  mode: str | None = None, frequency: str | int | None = None, staleness: int | None = None,
                  aggregate: str | None = None, numWorkers: int | None = None,
                  numServers: int | None = None, learningRate: float | None = None,
                  predictBatchSize: int | None = None, seed: int | None = None,
                  checkpointDir: str | None = None, checkpointInterval: int | None = None,
                  resume: bool | None = None) -> NNEstimator:
        """Set the Params given (None leaves a Param as it is)."""
        self._set_given(self._input_kwargs)
        return self


class NNClassifier(_NNClassifierMixin, _NNEstimatorBase, ProbabilisticClassifier, NNWritable, NNReadable):
    """``NNEstimator`` for classifiers (a crossentropy loss), as Spark's ``LogisticRegression``:
    ``fit`` returns an ``NNClassifierModel`` whose columns Spark's
    ``MulticlassClassificationEvaluator`` and ``BinaryClassificationEvaluator`` read. The label
    column holds class ids (numbers), or one-hot vectors for ``categorical_crossentropy``."""

    @keyword_only
    def __init__(self, *, model: EngineModel | None = None, featuresCol: str | None = None,
                 labelCol: str | None = None, predictionCol: str | None = None,
                 probabilityCol: str | None = None, rawPredictionCol: str | None = None,
                 thresholds: list[float] | None = None, epochs: int | None = None,
                 batchSize: int | None = None, mode: str | None = None, frequency: str | int | None = None,
                 staleness: int | None = None, aggregate: str | None = None, numWorkers: int | None = None,
                 numServers: int | None = None, learningRate: float | None = None,
                 predictBatchSize: int | None = None, seed: int | None = None, checkpointDir: str | None = None,
                 checkpointInterval: int | None = None, resume: bool | None = None):
        super().__init__()
        self._construct(self._input_kwargs)

    def _fit(self, dataset: DataFrame) -> NNClassifierModel:
        return self._fitted(NNClassifierModel, dataset)

    @keyword_only
    def setParams(self, *, featuresCol: str | None = None, labelCol: str | None = None,
                  predictionCol: str | None = None, probabilityCol: str | None = None,
                  rawPredictionCol: str | None = None, thresholds: list[float] | None = None,
                  epochs: int | None = None, batchSize: int | None = None, mode: str | None = None,
                  frequency: str | int | None = None, staleness: int | None = None,
                  aggregate: str | None = None, numWorkers: int | None = None,
                  numServers: int | None = None, learningRate: float | None = None,
                  predictBatchSize: int | None = None, seed: int | None = None,
                  checkpointDir: str | None = None, checkpointInterval: int | None = None,
                  resume: bool | None = None) -> NNClassifier:
        """Set the Params given (None leaves a Param as it is)."""
        self._set_given(self._input_kwargs)
        return self
