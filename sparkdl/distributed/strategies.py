"""Training modes, resolved once into a strategy object (``get_strategy("sync")``).

A strategy names the mode and holds its options; the Spark layer asks it what to run. Modes
are added here and nowhere else.
"""
from __future__ import annotations


class Strategy:
    name = "strategy"

    def __repr__(self):
        return f"{type(self).__name__}()"


class SyncStrategy(Strategy):
    """SparkNet: broadcast, tau local steps per partition, average (one Spark job per round)."""

    name = "sync"


_MODES = {"sync": SyncStrategy}
_ALIASES = {"synchronous": "sync"}


def modes() -> list[str]:
    return sorted(_MODES) + sorted(_ALIASES)


def get_strategy(mode, **options) -> Strategy:
    if isinstance(mode, Strategy):
        return mode
    key = _ALIASES.get(mode, mode) if isinstance(mode, str) else None
    if key not in _MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {modes()}")
    if options:
        raise TypeError(f"mode {key!r} takes no options, received {sorted(options)}")
    return _MODES[key]()
