"""How a worker of the async modes exchanges vectors with the parameter server while it
trains: in lock step (pull, train, push), or overlapped with its training (``overlap=True``:
the client pushes and pulls in a background thread while the worker computes, and the worker
adds its own last change to weights pulled before that change arrived). ``run_async_epoch``
(``sparkdl.distributed.worker``) drives either through the same four calls.
"""
from __future__ import annotations

import numpy as np


class InStep:
    """A worker's exchanges with the parameter server in lock step with its training: pull,
    train, push, each waiting for the one before."""

    def __init__(self, client, size: int):
        self.client = client
        self._update = np.empty(size, np.float32)

    def buffer(self, sequence: int) -> np.ndarray:
        """Where push ``sequence``'s update is computed."""
        return self._update

    def weights(self, sequence: int, last: bool) -> np.ndarray:
        """The weights (and moving statistics) push ``sequence`` starts from."""
        return self.client.pull(sequence)

    def push(self, sequence: int, samples: int, update: np.ndarray) -> None:
        self.client.push(sequence, samples, update)


class PullsAhead(InStep):
    """Exchanges overlapped with training (``overlap=True``): while a worker trains the steps
    of push ``k``, its client pushes ``k - 1`` and then pulls, in the background; push
    ``k + 1`` then starts from those weights plus the change push ``k`` makes on the server,
    which the worker adds itself (``client.added``: the bits the server adds). Push 1 starts
    from push 0's weights plus its change (an epoch makes one pull fewer than in lock step).
    A lone worker thus trains exactly as in lock step; with others, it sees their pushes one
    group of steps later. Where the server applies a gradient with its own optimizer, the
    worker cannot add the change: a push starts from weights one push of its own behind."""

    def __init__(self, client, size: int):
        super().__init__(client, size)
        self._updates = (self._update, np.empty(size, np.float32))   # one is sent, one computed
        self._base = np.empty(size, np.float32)
        self._shared = np.empty(size, np.float32)
        self._change: np.ndarray | None = None     # what the last push changes on the server

    def buffer(self, sequence: int) -> np.ndarray:
        return self._updates[sequence % 2]

    def weights(self, sequence: int, last: bool) -> np.ndarray:
        if sequence == 0:
            self._base[...] = self.client.pull(0)
            return self._base     # push 1 starts from these plus push 0's change: no pull ahead
        pulled = self._base if sequence == 1 else self.client.pull_wait()
        if self._change is not None:
            np.add(pulled, self._change, out=self._base)
        elif pulled is not self._base:
            self._base[...] = pulled
        if not last:            # after push sequence - 1: the clock is the pushes made
            self.client.pull_request(sequence)
        return self._base

    def push(self, sequence: int, samples: int, update: np.ndarray) -> None:
        self.client.push_request(sequence, samples, update)
        self._change = self.client.added(update, self._shared)
