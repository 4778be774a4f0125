"""What the dashboard knows about a fit, built from the feed's events, and its JSON form.

``State.snapshot(since)`` is the body of ``/api/state``: the fit's description, its status,
progress (epoch, round or step, elapsed seconds and an ETA), every epoch's logs, and the
points (rounds, or batches of ``Model.fit``) from index ``since`` on, so a page that already
holds ``n`` points asks for ``since=n`` and receives only the new ones.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any

#: The version of the JSON a script can rely on (bumped when a field changes meaning).
FORMAT_VERSION = 1


def plain(value: Any) -> Any:
    """``value`` as JSON can carry it: NumPy scalars as Python numbers, non-finite floats as
    None (JSON has no NaN), tuples as lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if hasattr(value, "item") and callable(value.item):         # NumPy scalars
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    return str(value)


class State:
    """The fit as the dashboard shows it; ``apply`` takes one event, ``snapshot`` reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.status = "starting"
        self.fit: dict[str, Any] = {}
        self.points: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self.created = time.time()
        self.began: float | None = None
        self.ended: float | None = None
        self.dropped = 0

    def apply(self, kind: str, event: dict[str, Any]) -> None:
        """Apply one event of the feed (``begin``, ``point``, ``epoch`` or ``end``) to the state."""
        event = plain(event)
        with self._lock:
            if kind == "begin":
                self.fit = {k: v for k, v in event.items() if k != "time"}
                self.began = event["time"]
                self.status = "running"
            elif kind == "point":
                event["index"] = len(self.points)
                self.points.append(event)
            elif kind == "epoch":
                self.epochs.append(event)
            elif kind == "end":
                self.status = event["status"]
                self.ended = event["time"]
            else:
                raise ValueError(f"State.apply: unknown event kind {kind!r}")

    def snapshot(self, since: int = 0) -> dict[str, Any]:
        """The state as a JSON-plain dict: status, the fit's description, progress and time left, the epochs, and
        the points after index ``since``."""
        with self._lock:
            now = self.ended if self.ended is not None else time.time()
            elapsed = now - self.began if self.began is not None else 0.0
            done, total = len(self.points), self.fit.get("points_total")
            last = self.points[-1] if self.points else {}
            eta = None
            if self.status in ("finished", "failed"):
                eta = 0.0
            elif total and done:
                eta = elapsed / done * max(int(total) - done, 0)
            return {"version": FORMAT_VERSION, "status": self.status, "fit": dict(self.fit),
                    "progress": {"epoch": last.get("epoch", 0), "epochs": self.fit.get("epochs"),
                                 "points": done, "points_total": total,
                                 "elapsed_seconds": elapsed, "eta_seconds": eta},
                    "epochs": list(self.epochs), "since": since, "next": done,
                    "points": self.points[since:], "dropped_events": self.dropped}
