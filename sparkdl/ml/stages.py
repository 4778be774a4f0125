"""pyspark.ml stages around a compiled sparkdl model: ``NNEstimator`` -> ``NNModel`` and
``NNClassifier`` -> ``NNClassifierModel``.

The estimators hold a compiled model as a template (never trained in place: each ``fit``
trains a copy, so ``CrossValidator`` starts every fold from the same weights) and train it with
``SparkModel``; the fitted models predict on the executors through Arrow batches. Every
training option is a Param, so ``ParamGridBuilder`` can vary it; the model itself travels
next to the Params (JSON architecture and binary weights on save, see ``persistence``).
"""
from __future__ import annotations

import logging
import pickle
from typing import TYPE_CHECKING, Any, TypeVar

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (HasFeaturesCol, HasLabelCol, HasPredictionCol, HasProbabilityCol,
                                     HasRawPredictionCol, HasSeed)

from sparkdl.engine import checks
from sparkdl.ml.persistence import NNReadable, NNWritable

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from sparkdl.engine.callbacks import History
    from sparkdl.engine.model import Model as EngineModel

logger = logging.getLogger(__name__)

_E = TypeVar("_E", bound="_NNEstimatorBase")


class _NNParams(HasFeaturesCol, HasLabelCol, HasPredictionCol, HasSeed):
    """Params shared by the estimators and their models."""

    _input_kwargs: dict[str, Any]  # set by @keyword_only

    epochs = Param(Params._dummy(), "epochs", "passes over the training data (>= 0)",
                   typeConverter=TypeConverters.toInt)
    batchSize = Param(Params._dummy(), "batchSize", "examples per training step (>= 1)",
                      typeConverter=TypeConverters.toInt)
    mode = Param(Params._dummy(), "mode",
                 "how workers combine: sync, async, hogwild or ssp (see SparkModel)",
                 typeConverter=TypeConverters.toString)
    frequency = Param(Params._dummy(), "frequency",
                      "local steps between synchronisations: 'epoch', 'batch' or an integer tau",
                      typeConverter=TypeConverters.toString)
    staleness = Param(Params._dummy(), "staleness",
                      "mode ssp: how many pushes a worker may run ahead of the slowest (>= 0)",
                      typeConverter=TypeConverters.toInt)
    aggregate = Param(Params._dummy(), "aggregate",
                      "what workers send: 'weights' (model averaging) or 'gradients'",
                      typeConverter=TypeConverters.toString)
    numWorkers = Param(Params._dummy(), "numWorkers",
                       "partitions that train (0: the cluster's default parallelism)",
                       typeConverter=TypeConverters.toInt)
    learningRate = Param(Params._dummy(), "learningRate",
                         "the optimizer's learning rate (0: keep the compiled optimizer's)",
                         typeConverter=TypeConverters.toFloat)
    predictBatchSize = Param(Params._dummy(), "predictBatchSize",
                             "rows per forward pass when predicting (>= 1)",
                             typeConverter=TypeConverters.toInt)

    checkpointDir = Param(Params._dummy(), "checkpointDir",
                          "a local directory for training checkpoints ('': none); see SparkModel.fit",
                          typeConverter=TypeConverters.toString)
    checkpointInterval = Param(Params._dummy(), "checkpointInterval",
                               "rounds (epochs in the async modes) between checkpoints (>= 1)",
                               typeConverter=TypeConverters.toInt)
    resume = Param(Params._dummy(), "resume",
                   "continue from the newest checkpoint in checkpointDir, if there is one",
                   typeConverter=TypeConverters.toBoolean)

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(epochs=10, batchSize=64, mode="sync", frequency="epoch", staleness=2,
                         aggregate="weights", numWorkers=0, learningRate=0.0,
                         predictBatchSize=1024, seed=0, checkpointDir="", checkpointInterval=1,
                         resume=False)

    def getEpochs(self) -> int:
        return self.getOrDefault(self.epochs)

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batchSize)

    def getMode(self) -> str:
        return self.getOrDefault(self.mode)

    def getFrequency(self) -> str:
        return self.getOrDefault(self.frequency)

    def getStaleness(self) -> int:
        return self.getOrDefault(self.staleness)

    def getAggregate(self) -> str:
        return self.getOrDefault(self.aggregate)

    def getNumWorkers(self) -> int:
        return self.getOrDefault(self.numWorkers)

    def getLearningRate(self) -> float:
        return self.getOrDefault(self.learningRate)

    def getPredictBatchSize(self) -> int:
        return self.getOrDefault(self.predictBatchSize)

    def getCheckpointDir(self) -> str:
        return self.getOrDefault(self.checkpointDir)

    def getCheckpointInterval(self) -> int:
        return self.getOrDefault(self.checkpointInterval)

    def getResume(self) -> bool:
        return self.getOrDefault(self.resume)

    # ---- checks ------------------------------------------------------------------------------
    def _frequency_value(self) -> str | int:
        """The frequency Param (a string) as SparkModel takes it: "3" is the int 3."""
        from sparkdl.distributed.strategies import check_frequency
        value = self.getFrequency()
        return check_frequency(int(value) if value.isdigit() else value, type(self).__name__)

    def _spark_options(self) -> dict:
        return {"staleness": self.getStaleness()} if self.getMode() == "ssp" else {}

    def _check_params(self) -> None:
        """Clear errors for out-of-range values, whether set at construction, by ``set`` or by a
        grid: the rules of SparkModel's arguments, run before every fit and transform."""
        name = type(self).__name__
        for param, low in ((self.epochs, 0), (self.batchSize, 1), (self.numWorkers, 0),
                           (self.predictBatchSize, 1), (self.staleness, 0), (self.checkpointInterval, 1)):
            checks.integer(self.getOrDefault(param), param.name, name, at_least=low)
        checks.number(self.getLearningRate(), "learningRate", name, at_least=0)
        from sparkdl.distributed.strategies import get_strategy, modes
        if self.getMode() not in modes():
            raise ValueError(f"{name}: unknown mode {self.getMode()!r}; expected one of {modes()}")
        get_strategy(self.getMode(), **self._spark_options()).check_aggregate(self.getAggregate(), name)
        self._frequency_value()
        if self.getResume() and not self.getCheckpointDir():
            raise ValueError(f"{name}: resume=True needs checkpointDir (the directory to resume from)")


def _check_model(model: EngineModel, who: str, classifier: bool) -> EngineModel:
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


class _NNEstimatorBase(Estimator, _NNParams, NNWritable, NNReadable):
    _classifier = False
    _model_class: type[_NNModelBase]

    def __init__(self, model: EngineModel | None):
        super().__init__()
        self._model = _check_model(model, type(self).__name__, self._classifier) \
            if model is not None else None

    def getModel(self) -> EngineModel | None:
        """The template model (compiled, untrained by ``fit``)."""
        return self._model

    def setModel(self: _E, model: EngineModel) -> _E:
        self._model = _check_model(model, type(self).__name__, self._classifier)
        return self

    def _fit(self, dataset: DataFrame) -> _NNModelBase:
        name = type(self).__name__
        if self._model is None:
            raise ValueError(f"{name}: no model; pass model=<a compiled sparkdl model>")
        self._check_params()
        from sparkdl.spark import SparkModel
        model = _copy_of(self._model)
        if self.getLearningRate() > 0:
            assert model.optimizer is not None, "_check_model took a compiled model"
            model.optimizer.learning_rate = self.getLearningRate()
        spark_model = SparkModel(model, mode=self.getMode(), frequency=self._frequency_value(),
                                 num_workers=self.getNumWorkers() or None,
                                 aggregate=self.getAggregate(), seed=self.getSeed(),
                                 **self._spark_options())
        history = spark_model.fit(dataset, epochs=self.getEpochs(), batch_size=self.getBatchSize(),
                                  features_col=self.getFeaturesCol(), label_col=self.getLabelCol(),
                                  verbose=0, checkpoint_dir=self.getCheckpointDir() or None,
                                  checkpoint_every=self.getCheckpointInterval(), resume=self.getResume())
        logger.info("%s: trained %d epochs, final loss %s", name, len(history.history.get("loss", [])),
                    history.history.get("loss", [None])[-1] if history.history.get("loss") else None)
        fitted = self._model_class(model=model)
        self._copyValues(fitted)
        fitted.history = history
        return fitted


class _NNModelBase(Model, _NNParams, NNWritable, NNReadable):
    _classifier = False

    def __init__(self, model: EngineModel | None):
        super().__init__()
        self._model = _check_model(model, type(self).__name__, self._classifier) \
            if model is not None else None
        self.history: History | None = None

    def getModel(self) -> EngineModel | None:
        """The trained sparkdl model."""
        return self._model

    def _output_columns(self) -> dict:
        return {"probability_col": None, "raw_prediction_col": None}

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self._check_params()
        from sparkdl.spark import frames
        return frames.predict_frame(dataset, self._model, self.getFeaturesCol(), self.getPredictionCol(),
                                    batch_size=self.getPredictBatchSize(),
                                    who=f"{type(self).__name__}.transform", **self._output_columns())


class NNModel(_NNModelBase):
    """A trained network: ``transform`` adds ``predictionCol`` (a double for one output, an
    array of doubles for several), computed on the executors."""

    @keyword_only
    def __init__(self, *, model: EngineModel | None = None, featuresCol: str = "features",
                 labelCol: str = "label", predictionCol: str = "prediction", epochs: int = 10,
                 batchSize: int = 64, mode: str = "sync", frequency: str = "epoch", staleness: int = 2,
                 aggregate: str = "weights", numWorkers: int = 0, learningRate: float = 0.0,
                 predictBatchSize: int = 1024, seed: int = 0, checkpointDir: str = "",
                 checkpointInterval: int = 1, resume: bool = False):
        super().__init__(model)
        kwargs = dict(self._input_kwargs)
        kwargs.pop("model", None)
        self._set(**kwargs)


class NNClassifierModel(_NNModelBase, HasProbabilityCol, HasRawPredictionCol):
    """A trained classifier: ``transform`` adds ``predictionCol`` (the class index as a
    double), ``probabilityCol`` and ``rawPredictionCol`` (class probabilities as ml Vectors;
    for one sigmoid output ``[1 - p, p]``), which Spark's classification evaluators read."""

    _classifier = True

    @keyword_only
    def __init__(self, *, model: EngineModel | None = None, featuresCol: str = "features",
                 labelCol: str = "label", predictionCol: str = "prediction",
                 probabilityCol: str = "probability", rawPredictionCol: str = "rawPrediction",
                 epochs: int = 10, batchSize: int = 64, mode: str = "sync", frequency: str = "epoch",
                 staleness: int = 2, aggregate: str = "weights", numWorkers: int = 0,
                 learningRate: float = 0.0, predictBatchSize: int = 1024, seed: int = 0,
                 checkpointDir: str = "", checkpointInterval: int = 1, resume: bool = False):
        super().__init__(model)
        kwargs = dict(self._input_kwargs)
        kwargs.pop("model", None)
        self._set(**kwargs)

    def _output_columns(self) -> dict:
        return {"probability_col": self.getProbabilityCol() or None,
                "raw_prediction_col": self.getRawPredictionCol() or None}


class NNEstimator(_NNEstimatorBase):
    """Trains a compiled sparkdl model on a DataFrame with ``SparkModel``; ``fit`` returns an
    ``NNModel``. For classifiers, ``NNClassifier`` adds probability columns."""

    _model_class = NNModel

    @keyword_only
    def __init__(self, *, model: EngineModel | None = None, featuresCol: str = "features",
                 labelCol: str = "label", predictionCol: str = "prediction", epochs: int = 10,
                 batchSize: int = 64, mode: str = "sync", frequency: str = "epoch", staleness: int = 2,
                 aggregate: str = "weights", numWorkers: int = 0, learningRate: float = 0.0,
                 predictBatchSize: int = 1024, seed: int = 0, checkpointDir: str = "",
                 checkpointInterval: int = 1, resume: bool = False):
        super().__init__(model)
        kwargs = dict(self._input_kwargs)
        kwargs.pop("model", None)
        self._set(**kwargs)
        self._check_params()

    @keyword_only
    def setParams(self, *, featuresCol: str | None = None, labelCol: str | None = None,
                  predictionCol: str | None = None, epochs: int | None = None, batchSize: int | None = None,
                  mode: str | None = None, frequency: str | None = None, staleness: int | None = None,
                  aggregate: str | None = None, numWorkers: int | None = None,
                  learningRate: float | None = None, predictBatchSize: int | None = None,
                  seed: int | None = None, checkpointDir: str | None = None,
                  checkpointInterval: int | None = None, resume: bool | None = None) -> NNEstimator:
        self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})
        self._check_params()
        return self


class NNClassifier(_NNEstimatorBase, HasProbabilityCol, HasRawPredictionCol):
    """``NNEstimator`` for classifiers (a crossentropy loss): ``fit`` returns an
    ``NNClassifierModel`` whose output columns Spark's ``MulticlassClassificationEvaluator``
    and ``BinaryClassificationEvaluator`` read."""

    _classifier = True
    _model_class = NNClassifierModel

    @keyword_only
    def __init__(self, *, model: EngineModel | None = None, featuresCol: str = "features",
                 labelCol: str = "label", predictionCol: str = "prediction",
                 probabilityCol: str = "probability", rawPredictionCol: str = "rawPrediction",
                 epochs: int = 10, batchSize: int = 64, mode: str = "sync", frequency: str = "epoch",
                 staleness: int = 2, aggregate: str = "weights", numWorkers: int = 0,
                 learningRate: float = 0.0, predictBatchSize: int = 1024, seed: int = 0,
                 checkpointDir: str = "", checkpointInterval: int = 1, resume: bool = False):
        super().__init__(model)
        kwargs = dict(self._input_kwargs)
        kwargs.pop("model", None)
        self._set(**kwargs)
        self._check_params()

    @keyword_only
    def setParams(self, *, featuresCol: str | None = None, labelCol: str | None = None,
                  predictionCol: str | None = None, probabilityCol: str | None = None,
                  rawPredictionCol: str | None = None, epochs: int | None = None,
                  batchSize: int | None = None, mode: str | None = None, frequency: str | None = None,
                  staleness: int | None = None, aggregate: str | None = None, numWorkers: int | None = None,
                  learningRate: float | None = None, predictBatchSize: int | None = None,
                  seed: int | None = None, checkpointDir: str | None = None,
                  checkpointInterval: int | None = None, resume: bool | None = None) -> NNClassifier:
        self._set(**{k: v for k, v in self._input_kwargs.items() if v is not None})
        self._check_params()
        return self
