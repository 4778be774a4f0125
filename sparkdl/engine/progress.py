"""A Keras-style progress bar for ``fit(verbose=...)``, written to a stream (stderr).

``verbose=0`` shows nothing, ``1`` a bar redrawn at most ten times a second, ``2`` one line
per epoch. Epoch summaries also go to the ``sparkdl`` logger (DEBUG) whatever the verbosity.
"""
from __future__ import annotations

import sys
import time

from sparkdl.engine import checks


def format_logs(logs: dict) -> str:
    return " - ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}"
                      for k, v in logs.items())


class ProgressBar:
    def __init__(self, total: int | None, verbose: int = 1, stream=None, width: int = 30,
                 unit: str = "step"):
        self.total = total
        self.verbose = checks.one_of(verbose, (0, 1, 2), "verbose", "fit")
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.unit = unit
        self.start = time.perf_counter()
        self._last_draw = 0.0

    def update(self, done: int, logs: dict | None = None, force: bool = False) -> None:
        if self.verbose != 1:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        if self.total:
            filled = int(self.width * done / self.total)
            bar = "=" * filled + (">" if filled < self.width else "") + "." * max(0, self.width - filled - 1)
            head = f"{done}/{self.total} [{bar}]"
        else:
            head = f"{done} {self.unit}s"
        tail = format_logs(logs or {})
        self.stream.write(f"\r{head} {now - self.start:.1f}s" + (f" - {tail}" if tail else ""))
        self.stream.flush()

    def finish(self, logs: dict | None = None, prefix: str = "") -> None:
        if self.verbose == 0:
            return
        if self.verbose == 1:
            self.update(self.total or 0, logs, force=True)
            self.stream.write("\n")
        else:
            elapsed = time.perf_counter() - self.start
            self.stream.write(f"{prefix}{elapsed:.1f}s - {format_logs(logs or {})}\n")
        self.stream.flush()
