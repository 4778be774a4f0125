"""Bounds a long-lived server keeps on what its clients can cost it: a byte budget that
allocations wait for (bounded), a growing pause after resource errors, and log lines that a
flood of bad clients cannot multiply."""
from __future__ import annotations

import logging
import threading
import time


class MemoryBudget:
    """``total`` bytes shared by concurrent requests: ``take(n, timeout)`` waits up to
    ``timeout`` seconds for ``n`` bytes (False if they did not free up), ``give(n)`` returns
    them."""

    def __init__(self, total: int):
        self.total = int(total)
        self._free = self.total
        self._cond = threading.Condition()

    def take(self, n: int, timeout: float) -> bool:
        if n > self.total:
            return False
        with self._cond:
            return self._cond.wait_for(lambda: self._free >= n, timeout=timeout) and self._take(n)

    def _take(self, n: int) -> bool:
        self._free -= n
        return True

    def give(self, n: int) -> None:
        with self._cond:
            self._free = min(self.total, self._free + n)
            self._cond.notify_all()

    @property
    def free(self) -> int:
        with self._cond:
            return self._free


class Backoff:
    """Pauses after consecutive failures: ``first`` seconds, doubling up to ``longest``;
    ``reset()`` after a success."""

    def __init__(self, first: float = 0.01, longest: float = 1.0):
        self.first, self.longest = float(first), float(longest)
        self.next = self.first

    def pause(self) -> float:
        pause, self.next = self.next, min(self.longest, self.next * 2)
        return pause

    def reset(self) -> None:
        self.next = self.first


class RateLimitedLog:
    """At most one line per ``key`` every ``interval`` seconds; the next line that gets through
    says how many were held back."""

    def __init__(self, log: logging.Logger, interval: float = 10.0):
        self.log, self.interval = log, float(interval)
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, level: int, key: str, message: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            last, held = self._last.get(key, (float("-inf"), 0))
            if now - last < self.interval:
                self._last[key] = (last, held + 1)
                return
            self._last[key] = (now, 0)
        if held:
            message += " (and %d more like it, held back)"
            args = (*args, held)
        self.log.log(level, message, *args)
