"""Training modes, resolved once into a strategy object (``get_strategy("sync")``).

A strategy names the mode, holds its options and owns its rules (which aggregations it
allows); the Spark layer and the parameter server ask it. Modes are added here and nowhere
else.
"""
from __future__ import annotations

from sparkdl.engine import checks


class Strategy:
    name = "strategy"
    #: the keyword options the mode takes (``SparkModel(model, mode, **options)``)
    option_names: tuple[str, ...] = ()
    #: trains against a parameter server (one Spark job per epoch) instead of in rounds
    asynchronous = False
    #: each worker keeps its own weights between rounds and exchanges an elastic
    #: difference with the center (EASGD)
    elastic = False
    #: ssp: how many pushes a worker may run ahead of the slowest; None: no bound
    staleness: int | None = None

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({options})"

    def options(self) -> dict:
        """The mode's options as given (what a checkpoint must match to be resumed)."""
        return {name: getattr(self, name) for name in self.option_names}

    @property
    def keeps_worker_state(self) -> bool:
        """Whether each partition's worker carries state (optimizer slots and, in EASGD, its
        weights) from one round or epoch to the next, kept by the driver per partition."""
        return self.asynchronous or self.elastic

    def check_aggregate(self, aggregate: str, who: str) -> None:
        """Refuse an aggregation (``"weights"`` or ``"gradients"``) this mode cannot run."""
        checks.one_of(aggregate, ("weights", "gradients"), "aggregate", who)


class SyncStrategy(Strategy):
    """SparkNet: broadcast, tau local steps per partition, average (one Spark job per round)."""

    name = "sync"


class AsyncStrategy(Strategy):
    """Elephas' async: workers pull, train tau steps, push; the server applies pushes one at
    a time (one Spark job per epoch)."""

    name = "async"
    asynchronous = True


class HogwildStrategy(AsyncStrategy):
    """As async, but the server adds deltas without a lock."""

    name = "hogwild"

    def check_aggregate(self, aggregate: str, who: str) -> None:
        super().check_aggregate(aggregate, who)
        if aggregate == "gradients":
            raise ValueError(f"{who}: hogwild adds weight deltas without a lock; a server-side "
                             f"optimizer (aggregate='gradients') needs mode 'async' or 'ssp'")


class SSPStrategy(AsyncStrategy):
    """Stale synchronous parallel: as async, and a worker more than ``staleness`` pushes ahead
    of the slowest running worker waits before its next pull."""

    name = "ssp"
    option_names = ("staleness",)

    def __init__(self, staleness=None):
        self.staleness = checks.integer(staleness, "staleness", "mode 'ssp'", at_least=0)


class ADAGStrategy(AsyncStrategy):
    """Accumulated gradient normalization (ADAG, Hermans et al. 2017, dist-keras): as async,
    and a worker divides the weight change of its ``tau`` local steps by ``tau`` before it
    pushes it (the server adds it as it is)."""

    name = "adag"

    def check_aggregate(self, aggregate: str, who: str) -> None:
        super().check_aggregate(aggregate, who)
        if aggregate == "gradients":
            raise ValueError(f"{who}: adag normalizes the weight change of a worker's local steps; "
                             f"aggregate='gradients' (the server's optimizer on the mean gradient) "
                             f"needs mode 'async' or 'ssp'")


class EASGDStrategy(Strategy):
    """Elastic averaging SGD (Zhang, Choromanska and LeCun 2015). Each worker keeps its own
    weights; every ``tau`` local steps it and the center exchange an elastic difference:
    ``x_i <- x_i - alpha (x_i - center)`` and ``center <- center + alpha (x_i - center)``.
    ``variant="sync"``: every worker at once, against the same center (one round);
    ``variant="async"``: one worker at a time, against a parameter server.

    ``rho``: the elasticity, with ``alpha = learning_rate * rho`` (the worker optimizer's
    current learning rate); by default ``alpha = 0.9 / workers``, the paper's choice
    ``beta = workers * alpha = 0.9``."""

    name = "easgd"
    option_names = ("rho", "variant")
    elastic = True

    def __init__(self, rho=None, variant="sync"):
        who = "mode 'easgd'"
        self.rho = checks.optional_number(rho, "rho", who, above=0)
        self.variant = checks.one_of(variant, ("sync", "async"), "variant", who)
        self.asynchronous = self.variant == "async"

    def check_aggregate(self, aggregate: str, who: str) -> None:
        super().check_aggregate(aggregate, who)
        if aggregate == "gradients":
            raise ValueError(f"{who}: easgd exchanges elastic differences of weights; "
                             f"aggregate='gradients' needs mode 'sync', 'async' or 'ssp'")

    def alpha(self, learning_rate: float, workers: int) -> float:
        """The moving rate of the elastic exchange for this round (0 < alpha < 1)."""
        if self.rho is None:
            return 0.9 / max(int(workers), 1)
        alpha = float(learning_rate) * self.rho
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"mode 'easgd': expected 0 < alpha < 1 with alpha = learning_rate * rho, "
                             f"received learning_rate={learning_rate!r} and rho={self.rho!r} "
                             f"(alpha={alpha!r}); lower rho")
        return alpha


def check_frequency(frequency, who: str):
    """``frequency`` if it is ``"epoch"`` (a pass over the partition per round), ``"batch"``
    (one step) or an int tau > 0 (tau local steps), as an int in the last case."""
    if frequency in ("epoch", "batch"):
        return frequency
    if not (checks.is_integer(frequency) and frequency > 0):
        raise checks.invalid(who, "frequency 'epoch', 'batch' or an int tau > 0", "frequency", frequency)
    return int(frequency)


_MODES: dict[str, type[Strategy]] = {
    "sync": SyncStrategy, "async": AsyncStrategy, "hogwild": HogwildStrategy, "ssp": SSPStrategy,
    "easgd": EASGDStrategy, "adag": ADAGStrategy}
_ALIASES = {"synchronous": "sync", "asynchronous": "async"}


def modes() -> list[str]:
    return sorted(_MODES) + sorted(_ALIASES)


def _mode_class(mode) -> type[Strategy]:
    key = _ALIASES.get(mode, mode) if isinstance(mode, str) else None
    if key not in _MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {modes()}")
    return _MODES[key]


def option_names(mode) -> tuple[str, ...]:
    """The keyword options ``mode`` (a name or alias, or a Strategy) takes."""
    return mode.option_names if isinstance(mode, Strategy) else _mode_class(mode).option_names


def get_strategy(mode, **options) -> Strategy:
    if isinstance(mode, Strategy):
        return mode
    cls = _mode_class(mode)
    key = cls.name
    unknown = sorted(set(options) - set(cls.option_names))
    if unknown:
        takes = ", ".join(f"{name}=..." for name in cls.option_names)
        raise TypeError(f"mode {key!r} takes {'only ' + takes if takes else 'no options'}, "
                        f"received unknown {unknown}")
    return cls(**options)
