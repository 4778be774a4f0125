"""The Params of the pyspark.ml stages, each declared once: its type converter and doc at
class level, its default in ``_NNParams.__init__`` (the only place defaults are written) and
the rule its values obey in ``_RULES``.

A rule runs when a constructor, ``setParams`` or a setter sets a value; all of them run again,
with the rules that relate Params to each other, before every fit and transform, since a
``ParamGridBuilder`` map reaches a stage through ``copy`` and no setter. A Param without a
default (``numWorkers``, ``learningRate``, ``checkpointDir``, ``thresholds``) that is not set
means "not given": ``isDefined`` says so, never a special value.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasLabelCol, HasPredictionCol, HasSeed

from sparkdl.engine import checks

_P = TypeVar("_P", bound="_NNParams")


def _to_frequency(value: Any) -> str:
    """The frequency Param's converter: an int tau is kept as its digits (``4`` -> ``"4"``)."""
    return str(value) if checks.is_integer(value) else TypeConverters.toString(value)


#: What each type converter takes, in words (for the TypeError of a value it refused).
_KINDS: dict[Callable[[Any], Any], str] = {
    TypeConverters.toInt: "an int", TypeConverters.toFloat: "a number", TypeConverters.toString: "a string",
    TypeConverters.toBoolean: "a bool", TypeConverters.toListFloat: "a list of numbers",
    _to_frequency: "a string or an int"}


class _NNParams(HasLabelCol, HasFeaturesCol, HasPredictionCol, HasSeed):
    """Params shared by the estimators and their models (the column Params and ``seed`` are
    pyspark's shared ones, in the order pyspark's own predictors mix them in)."""

    _input_kwargs: dict[str, Any]  # set by @keyword_only

    epochs: Param[int] = Param(
        Params._dummy(), "epochs", "passes over the training data (>= 0)", typeConverter=TypeConverters.toInt)
    batchSize: Param[int] = Param(
        Params._dummy(), "batchSize", "examples per training step on a worker (>= 1)",
        typeConverter=TypeConverters.toInt)
    mode: Param[str] = Param(
        Params._dummy(), "mode", "how workers combine their training: sync, async, hogwild, ssp, easgd or "
        "adag (see SparkModel)", typeConverter=TypeConverters.toString)
    frequency: Param[str] = Param(
        Params._dummy(), "frequency", "local steps between synchronisations: 'epoch' (a pass over the "
        "partition), 'batch' (one step) or an integer tau (4 or '4')", typeConverter=_to_frequency)
    staleness: Param[int] = Param(
        Params._dummy(), "staleness", "mode ssp: how many pushes a worker may run ahead of the slowest "
        "(>= 0)", typeConverter=TypeConverters.toInt)
    aggregate: Param[str] = Param(
        Params._dummy(), "aggregate", "what workers send: 'weights' (model averaging) or 'gradients' "
        "(the driver's optimizer steps on their mean)", typeConverter=TypeConverters.toString)
    numWorkers: Param[int] = Param(
        Params._dummy(), "numWorkers", "partitions that train (>= 1); unset: the cluster's default "
        "parallelism", typeConverter=TypeConverters.toInt)
    numServers: Param[int] = Param(
        Params._dummy(), "numServers", "parameter server shards hosted by the fit's tasks (>= 0; at most "
        "numWorkers): modes async, hogwild and ssp with a model that has Embedding tables; 0: the "
        "driver's parameter server (see SparkModel's num_servers)", typeConverter=TypeConverters.toInt)
    learningRate: Param[float] = Param(
        Params._dummy(), "learningRate", "the optimizer's learning rate (>= 0); unset: the compiled "
        "optimizer's", typeConverter=TypeConverters.toFloat)
    predictBatchSize: Param[int] = Param(
        Params._dummy(), "predictBatchSize", "rows per forward pass when predicting (>= 1)",
        typeConverter=TypeConverters.toInt)
    checkpointDir: Param[str] = Param(
        Params._dummy(), "checkpointDir", "a local directory for training checkpoints (see "
        "SparkModel.fit); unset: no checkpoints", typeConverter=TypeConverters.toString)
    checkpointInterval: Param[int] = Param(
        Params._dummy(), "checkpointInterval", "rounds (epochs in the async modes) between two "
        "checkpoints in checkpointDir (>= 1)", typeConverter=TypeConverters.toInt)
    resume: Param[bool] = Param(
        Params._dummy(), "resume", "continue from the newest checkpoint in checkpointDir, if there is one",
        typeConverter=TypeConverters.toBoolean)

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(epochs=10, batchSize=64, mode="sync", frequency="epoch", staleness=2,
                         aggregate="weights", numServers=0, predictBatchSize=1024, seed=0,
                         checkpointInterval=1, resume=False)

    # ---- getters (a Param without a default raises KeyError while unset, as in pyspark) -----
    def getEpochs(self) -> int:
        """The value of ``epochs``."""
        return self.getOrDefault(self.epochs)

    def getBatchSize(self) -> int:
        """The value of ``batchSize``."""
        return self.getOrDefault(self.batchSize)

    def getMode(self) -> str:
        """The value of ``mode``."""
        return self.getOrDefault(self.mode)

    def getFrequency(self) -> str:
        """The value of ``frequency`` (a string: ``"epoch"``, ``"batch"`` or the digits of τ)."""
        return self.getOrDefault(self.frequency)

    def getStaleness(self) -> int:
        """The value of ``staleness``."""
        return self.getOrDefault(self.staleness)

    def getAggregate(self) -> str:
        """The value of ``aggregate``."""
        return self.getOrDefault(self.aggregate)

    def getNumWorkers(self) -> int:
        """The value of ``numWorkers``; raises ``KeyError`` while it is not set."""
        return self.getOrDefault(self.numWorkers)

    def getNumServers(self) -> int:
        """The value of ``numServers``."""
        return self.getOrDefault(self.numServers)

    def getLearningRate(self) -> float:
        """The value of ``learningRate``; raises ``KeyError`` while it is not set."""
        return self.getOrDefault(self.learningRate)

    def getPredictBatchSize(self) -> int:
        """The value of ``predictBatchSize``."""
        return self.getOrDefault(self.predictBatchSize)

    def getCheckpointDir(self) -> str:
        """The value of ``checkpointDir``; raises ``KeyError`` while it is not set."""
        return self.getOrDefault(self.checkpointDir)

    def getCheckpointInterval(self) -> int:
        """The value of ``checkpointInterval``."""
        return self.getOrDefault(self.checkpointInterval)

    def getResume(self) -> bool:
        """The value of ``resume``."""
        return self.getOrDefault(self.resume)

    # ---- setting and checking ------------------------------------------------------------------
    def _set_checked(self: _P, **values: Any) -> _P:
        """Set Params after their type converter and rule accepted each value."""
        who = type(self).__name__
        for name, value in values.items():
            param = self.getParam(name)
            try:
                value = param.typeConverter(value)
            except TypeError:
                kind = _KINDS.get(param.typeConverter, "a value of the Param's type")
                raise TypeError(f"{who}: expected {name} as {kind}, received "
                                f"{type(value).__name__}: {value!r}") from None
            rule = _RULES.get(name)
            if rule is not None:
                rule(value, name, who)
            self._set(**{name: value})
        return self

    def _set_given(self, given: dict[str, Any]) -> None:
        """Set the Params a ``@keyword_only`` call was given (None: not given), then check how
        they go together."""
        self._set_checked(**{k: v for k, v in given.items() if v is not None})
        self._check_params()

    def _check_params(self) -> None:
        """Every defined Param's rule, and the rules relating Params (the mode's aggregation, the
        parameter server shards, resume's directory); ValueError naming the stage and the rule."""
        who = type(self).__name__
        for param in self.params:
            if param.name in _RULES and self.isDefined(param):
                _RULES[param.name](self.getOrDefault(param), param.name, who)
        from sparkdl.distributed.strategies import get_strategy
        strategy = get_strategy(self.getMode(), **self._mode_options())
        strategy.check_aggregate(self.getAggregate(), who)
        self._check_servers(strategy.name, who)
        if self.getResume() and not self.isDefined(self.checkpointDir):
            raise ValueError(f"{who}: resume=True needs checkpointDir (the directory to resume from)")

    def _check_servers(self, mode: str, who: str, model: Any = None) -> None:
        """numServers against the mode, numWorkers and (unless None) the model's Embedding
        tables, by SparkModel's rules (``check_shards``), worded with the stage and Param names."""
        from sparkdl.spark.spark_model import check_shards
        check_shards(self.getNumServers(), mode, model,
                     self.getNumWorkers() if self.isDefined(self.numWorkers) else None,
                     aggregate=self.getAggregate(), who=who, servers="numServers", workers="numWorkers")

    def _mode_options(self) -> dict[str, Any]:
        """The Params the mode takes as options (``staleness`` for ssp)."""
        from sparkdl.distributed.strategies import option_names
        names = option_names(self.getMode())
        return {name: self.getOrDefault(name) for name in names if self.hasParam(name)}

    def _frequency_value(self) -> str | int:
        """The frequency Param (a string) as SparkModel takes it: "3" is the int 3."""
        return _frequency(self.getFrequency(), "frequency", type(self).__name__)


# ---- the rules ------------------------------------------------------------------------------------
def _mode(value: str, name: str, who: str) -> None:
    from sparkdl.distributed.strategies import modes
    if value not in modes():
        raise ValueError(f"{who}: unknown mode {value!r}; expected one of {modes()}")


def _frequency(value: str, name: str, who: str) -> str | int:
    from sparkdl.distributed.strategies import check_frequency
    return check_frequency(int(value) if value.isdigit() else value, who)


def _path(value: str, name: str, who: str) -> None:
    if not value:
        raise checks.invalid(who, f"{name} a directory path", name, value)


def _thresholds(value: list[float], name: str, who: str) -> None:
    if not value or not all(math.isfinite(t) and t >= 0 for t in value) or value.count(0.0) > 1:
        raise checks.invalid(who, f"{name} a non-empty list of numbers >= 0, at most one of them 0", name, value)


_RULES: dict[str, Callable[[Any, str, str], object]] = {
    "epochs": functools.partial(checks.integer, at_least=0),
    "batchSize": functools.partial(checks.integer, at_least=1),
    "mode": _mode,
    "frequency": _frequency,
    "staleness": functools.partial(checks.integer, at_least=0),
    "aggregate": lambda value, name, who: checks.one_of(value, ("weights", "gradients"), name, who),
    "numWorkers": functools.partial(checks.integer, at_least=1),
    "numServers": functools.partial(checks.integer, at_least=0),
    "learningRate": functools.partial(checks.number, at_least=0),
    "predictBatchSize": functools.partial(checks.integer, at_least=1),
    "checkpointDir": _path,
    "checkpointInterval": functools.partial(checks.integer, at_least=1),
    "thresholds": _thresholds,
}
