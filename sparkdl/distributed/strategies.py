"""Training modes, resolved once into a strategy object (``get_strategy("sync")``).

A strategy names the mode, holds its options and owns its rules (which aggregations it
allows); the Spark layer and the parameter server ask it. Modes are added here and nowhere
else.
"""
from __future__ import annotations

from sparkdl.engine import checks


class Strategy:
    name = "strategy"
    #: trains against a parameter server (one Spark job per epoch) instead of in rounds
    asynchronous = False
    #: ssp: how many pushes a worker may run ahead of the slowest; None: no bound
    staleness: int | None = None

    def __repr__(self):
        return f"{type(self).__name__}()"

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

    def __init__(self, staleness=None):
        self.staleness = checks.integer(staleness, "staleness", "mode 'ssp'", at_least=0)

    def __repr__(self):
        return f"SSPStrategy(staleness={self.staleness})"


def check_frequency(frequency, who: str):
    """``frequency`` if it is ``"epoch"`` (a pass over the partition per round), ``"batch"``
    (one step) or an int tau > 0 (tau local steps), as an int in the last case."""
    if frequency in ("epoch", "batch"):
        return frequency
    if not (checks.is_integer(frequency) and frequency > 0):
        raise checks.invalid(who, "frequency 'epoch', 'batch' or an int tau > 0", "frequency", frequency)
    return int(frequency)


_MODES = {"sync": SyncStrategy, "async": AsyncStrategy, "hogwild": HogwildStrategy,
          "ssp": SSPStrategy}
_ALIASES = {"synchronous": "sync", "asynchronous": "async"}


def modes() -> list[str]:
    return sorted(_MODES) + sorted(_ALIASES)


def get_strategy(mode, **options) -> Strategy:
    if isinstance(mode, Strategy):
        return mode
    key = _ALIASES.get(mode, mode) if isinstance(mode, str) else None
    if key not in _MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {modes()}")
    if key == "ssp":
        unknown = sorted(set(options) - {"staleness"})
        if unknown:
            raise TypeError(f"mode 'ssp' takes only staleness=..., received {unknown}")
        return SSPStrategy(**options)
    if options:
        raise TypeError(f"mode {key!r} takes no options, received {sorted(options)}")
    return _MODES[key]()
