"""A worker's client of the sharded parameter server (``shards``): one connection per shard.

A pull or a push is split by ``ShardLayout`` (each shard's dense range, each row to the shard
its hash names), sent on every connection before any answer is read — the shards work on
their parts at the same time, and the client waits once for the slowest — and the answers
are put back together: a pull gives a ``sparse.RowSlice`` holding the dense part and the
rows asked for, nothing else. Every push and clock goes to every shard (each keeps the
epoch's tags and clocks). ``pull`` / ``push`` speak to the async modes' ``shards.ShardServer``,
``pull_round`` / ``push_round`` to the sync rounds' ``shard_rounds.ShardRounds``.

A connection that broke is reopened once and its request sent again, which is safe: pulls
change nothing and a shard applies a push at most once. Any other failure closes every
connection, so no answer is left unread for the next request.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sparkdl.distributed.protocol import Connection, Frame, Op, RemoteError
from sparkdl.distributed.shard_layout import ShardLayout
from sparkdl.distributed.sparse import RowSlice

_Request = tuple[int, dict, "np.ndarray | None"]


class ShardedClient:
    """The shards at ``addresses`` (shard k at ``addresses[k]``) for one epoch of one
    partition; ``security`` as the shards' ``FrameServer``."""

    def __init__(self, layout: ShardLayout, addresses: Sequence[tuple[str, int]], token: bytes,
                 timeout: float, epoch: int, partition: int, attempt: int, security: str = "integrity"):
        if len(addresses) != layout.num_shards:
            raise ValueError(f"ShardedClient: expected {layout.num_shards} shard addresses (the "
                             f"layout's), received {len(addresses)}")
        self.layout = layout
        self.addresses: list[tuple[str, int]] = [(str(a[0]), int(a[1])) for a in addresses]
        self.token, self.timeout, self.security = token, float(timeout), security
        self.epoch, self.partition, self.attempt = epoch, partition, attempt
        self._conns: list[Connection | None] = [None] * layout.num_shards
        self.stats = {"bytes_pushed": 0, "bytes_pulled": 0, "pushes": 0, "pulls": 0}

    # ---- requests ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._clock("start")

    def done(self) -> None:
        self._clock("done")

    def _clock(self, event: str) -> None:
        meta = {"event": event, "attempt": self.attempt}
        self._exchange([(Op.CLOCK, meta, None)] * self.layout.num_shards, f"clock {event!r}")

    def pull(self, clock: int, ids: Sequence[np.ndarray]) -> RowSlice:
        """The dense part and the rows ``ids[t]`` (sorted unique, per table) of every table."""
        return self._pull({"clock": clock}, ids, f"the weights (partition {self.partition}, clock {clock})")

    def pull_round(self, round_index: int, ids: Sequence[np.ndarray]) -> RowSlice:
        """As ``pull``, from the shards' sync round ``round_index`` (``shard_rounds``)."""
        return self._pull({"round": round_index}, ids, f"the weights of round {round_index}")

    def push(self, sequence: int, samples: int, update: RowSlice) -> bool:
        """Send ``update`` (dense part and rows, as a pull gives) to the shards; True when the
        shards applied it (False: an earlier attempt's identical push already was)."""
        return self._push({"sequence": sequence, "samples": samples}, update,
                          f"push {sequence} (partition {self.partition})")

    def push_round(self, round_index: int, samples: int, update: RowSlice) -> bool:
        """As ``push``, this partition's result of sync round ``round_index``."""
        return self._push({"round": round_index, "samples": samples}, update,
                          f"the push of round {round_index} (partition {self.partition})")

    def _pull(self, tag: dict, ids: Sequence[np.ndarray], what: str) -> RowSlice:
        m = self.layout.map
        m.check_ids(ids)
        ids = [np.asarray(i, m.id_dtype) for i in ids]
        per_shard = self.layout.split(ids)
        requests: list[_Request] = [
            (Op.PULL, {**tag, "counts": [len(i) for i in shard_ids]},
             np.concatenate(shard_ids) if shard_ids else np.zeros(0, m.id_dtype))
            for shard_ids in per_shard]
        replies = self._exchange(requests, what)
        dense, rows = [], []
        for k, (reply, shard_ids) in enumerate(zip(replies, per_shard)):
            a, b = self.layout.dense_bounds[k]
            dw = self.layout.dense_split(k)[0]
            sizes = [len(i) * t.dim for i, t in zip(shard_ids, m.tables)]
            if reply.array is None or reply.array.dtype != np.float32 or \
                    reply.array.shape != ((b - a) + sum(sizes),):
                got = None if reply.array is None else (reply.array.dtype.name, reply.array.shape)
                raise ValueError(f"shard {k} answered a pull with {got}, expected float32 of "
                                 f"{(b - a) + sum(sizes)} values")
            v = reply.array
            bounds = np.cumsum([dw, *sizes])
            dense += [v[:dw], v[bounds[-1]:]]
            rows.append([v[lo:hi].reshape(-1, t.dim) for lo, hi, t in zip(bounds[:-1], bounds[1:], m.tables)])
            self.stats["bytes_pulled"] += v.nbytes
        self.stats["pulls"] += 1
        weights = np.concatenate(dense[0::2])
        state = np.concatenate(dense[1::2])
        return RowSlice(np.concatenate([weights, state]), ids, self.layout.merge(ids, rows))

    def _push(self, tag: dict, update: RowSlice, what: str) -> bool:
        m, layout = self.layout.map, self.layout
        m.check_ids(update.ids)
        dense = update.dense
        if dense.shape != (m.dense_length,):
            raise ValueError(f"expected a dense part of {m.dense_length} values, received {dense.shape}")
        # A shard applies its part or refuses it whole; checked here, a push with a
        # non-finite value reaches no shard (rather than the shards that hold only finite parts).
        for part, values in [("dense part", dense), *((f"rows of table {t}", r) for t, r in enumerate(update.rows))]:
            if values.size and not np.isfinite(np.sum(values, dtype=np.float64)):
                raise ValueError(f"expected finite values in the {part} of {what}, received "
                                 f"{int(np.count_nonzero(~np.isfinite(values)))} NaN or infinite")
        owners = [layout.owners(t, i) for t, i in enumerate(update.ids)]
        requests: list[_Request] = []
        for k in range(layout.num_shards):
            a, b = layout.dense_bounds[k]
            dw = layout.dense_split(k)[0]
            mine = [o == k for o in owners]
            floats = [dense[a:a + dw], *(r[s].reshape(-1) for r, s in zip(update.rows, mine)), dense[a + dw:b]]
            ids = [np.asarray(i[s], m.id_dtype) for i, s in zip(update.ids, mine)]
            payload = np.concatenate([np.concatenate(floats).astype(np.float32, copy=False).view(np.uint8),
                                      np.concatenate(ids).view(np.uint8) if ids else np.zeros(0, np.uint8)])
            meta = {**tag, "attempt": self.attempt, "counts": [int(s.sum()) for s in mine]}
            requests.append((Op.PUSH, meta, payload))
            self.stats["bytes_pushed"] += payload.nbytes
        replies = self._exchange(requests, f"the receipt of {what}")
        self.stats["pushes"] += 1
        return all(bool(r.meta.get("applied")) for r in replies)

    # ---- connections ------------------------------------------------------------------------------
    def _exchange(self, requests: list[_Request], what: str) -> list[Frame]:
        """Send each shard its request, then read every answer (see the module docstring)."""
        try:
            sent = [self._send(k, request) for k, request in enumerate(requests)]
            return [self._receive(k, request, ok, what) for k, (request, ok) in enumerate(zip(requests, sent))]
        except BaseException:
            self.close()
            raise

    def _stamp(self, request: _Request) -> _Request:
        op, meta, array = request
        return op, dict(meta, epoch=self.epoch, partition=self.partition), array

    def _connection(self, k: int) -> Connection:
        conn = self._conns[k]
        if conn is None:
            # A margin over the shard's own waits (ssp), so its explanation arrives first.
            conn = self._conns[k] = Connection(self.addresses[k], self.token, self.timeout + 5,
                                               security=self.security)
        return conn

    def _send(self, k: int, request: _Request) -> bool:
        try:
            self._connection(k).send(*self._stamp(request))
            return True
        except (ConnectionError, BrokenPipeError):
            self._close(k)
            return False

    def _receive(self, k: int, request: _Request, sent: bool, what: str) -> Frame:
        if sent:
            try:
                return self._connection(k).receive(what=f"{what} from shard {k}")
            except RemoteError:
                raise
            except (ConnectionError, BrokenPipeError):
                self._close(k)
        try:
            return self._connection(k).request(*self._stamp(request), what=f"{what} from shard {k}")
        except (ConnectionError, BrokenPipeError) as exc:
            raise ConnectionError(f"lost shard {k} at {self.addresses[k][0]}:{self.addresses[k][1]} "
                                  f"twice: {exc}") from exc

    def _close(self, k: int) -> None:
        conn, self._conns[k] = self._conns[k], None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for k in range(len(self._conns)):
            self._close(k)
