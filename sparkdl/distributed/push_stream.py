"""A sync round's push that leaves while backward is still computing it (``overlap=True``).

A task that sums gradients (aggregate "gradients") learns during the round's last backward,
layer by layer from the output's, which ranges of its sum are final
(``Model.loss_and_backward(on_ready=...)``). A ``PushStream`` sends the PUSH frame from a
background thread, block by block in the order of the push layout's ``wire`` (the order
backward finishes them, ``exchange.round_layouts(..., streamed=True)``): each block leaves as
soon as it is final, sealed as it passes (``protocol.send_pieces``), while the task's thread
goes on with the layers below. The driver receives an ordinary frame and adds each block
where it belongs, so its sums are the same bits as with a push packed after the round.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np

from sparkdl.distributed.exchange import Layout
from sparkdl.distributed.protocol import Channel, Op


class PushStream:
    """One PUSH of ``layout`` on ``channel``, sent from a background thread as its blocks are
    declared final. Nothing else may use the channel until ``finish`` returns."""

    def __init__(self, channel: Channel, meta: dict, layout: Layout, parts: dict[str, np.ndarray]):
        """``parts``: the segments' vectors (the gradient sum being computed first); a segment
        whose vector is not known yet is given to ``finish``."""
        self.channel, self.meta, self.layout = channel, meta, layout
        self.parts = dict(parts)
        self._final: list[tuple[int, int]] = []      # ranges of the layout's vector declared final
        self._all_final = False
        self._aborted = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def started(self) -> bool:
        """True once the frame began to leave (it must then be finished)."""
        return self._thread is not None

    def ready(self, start: int, stop: int) -> None:
        """The layout vector's ``[start, stop)`` is final (its first segment's, the gradients')."""
        with self._changed:
            self._final.append((start, stop))
            self._changed.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._send, name="sparkdl-push-stream", daemon=True)
            self._thread.start()

    def finish(self, parts: dict[str, np.ndarray] | None = None) -> None:
        """Everything is final (with the segments still missing, in ``parts``): send what has
        not left and wait until the whole frame has (re-raising what the sending met)."""
        with self._changed:
            self.parts.update(parts or {})
            self._all_final = True
            self._changed.notify()
        if self._thread is None:
            self._send()
        else:
            self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop sending, mid-frame if need be (the channel is then unusable: close it)."""
        with self._changed:
            self._aborted = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join()

    def _covered(self, a: int, b: int) -> bool:
        return self._all_final or sum(max(0, min(b, y) - max(a, x)) for x, y in self._final) == b - a

    def _pieces(self) -> Iterator[np.ndarray]:
        starts = {name: a for name, a, _, _ in self.layout.bounds()}
        for name, a, b, _, _ in self.layout.blocks():
            with self._changed:
                while not (self._aborted or self._covered(a, b)):
                    self._changed.wait()
                if self._aborted:
                    raise ConnectionAbortedError("the push was abandoned while it was being sent")
                values = self.parts[name]
            yield values.reshape(-1)[a - starts[name]:b - starts[name]]

    def _send(self) -> None:
        try:
            self.channel.send_pieces(Op.PUSH, self.meta, np.dtype(np.float32), self.layout.size, self._pieces())
        except BaseException as exc:        # noqa: BLE001 - re-raised by finish in the task's thread
            self._error = exc
