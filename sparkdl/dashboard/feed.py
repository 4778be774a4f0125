"""The fit's side of the dashboard: a ``Feed`` that the training loop publishes events to.

Publishing never blocks and never fails training: an event goes into a bounded queue with
``put_nowait``; when the queue is full (nobody drains it fast enough) the event is dropped
and counted. ``Model.fit`` publishes a point per batch, ``SparkModel.fit`` one per round;
both publish each epoch's logs and the fit's beginning and end.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any

#: Events a feed holds before it starts dropping (a few minutes of rounds, or of small batches).
DEFAULT_MAXSIZE = 10000


class Feed:
    """A bounded, non-blocking queue of ``(kind, payload)`` events. ``kind`` is one of
    ``"begin"`` (the fit's description), ``"point"`` (a round or a batch), ``"epoch"`` (an
    epoch's logs) and ``"end"`` (``{"status": "finished" | "failed"}``)."""

    def __init__(self, maxsize: int = DEFAULT_MAXSIZE):
        self.queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()
        self.dropped = 0

    def publish(self, kind: str, payload: dict[str, Any]) -> bool:
        """Queue an event stamped with the time; False (and counted) when the queue is full."""
        event = dict(payload, time=time.time())
        try:
            self.queue.put_nowait((kind, event))
            return True
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False

    # The hooks the fit loops call.
    def begin(self, **info: Any) -> None:
        """Publish a ``"begin"`` event: the fit's description (mode, epochs, workers, ...)."""
        self.publish("begin", info)

    def point(self, **values: Any) -> None:
        """Publish a ``"point"`` event: the values of one round or batch."""
        self.publish("point", values)

    def epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        """Publish an ``"epoch"`` event: an epoch's logs (``epoch`` counted from 1)."""
        self.publish("epoch", {"epoch": int(epoch) + 1, "logs": dict(logs)})

    def end(self, failed: bool) -> None:
        """Publish the ``"end"`` event: ``{"status": "failed"}`` or ``{"status": "finished"}``."""
        self.publish("end", {"status": "failed" if failed else "finished"})
