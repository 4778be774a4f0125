"""A sharded parameter server: K ``ShardServer`` services each hold part of a model's vector.

What a shard holds is ``shard_layout.ShardLayout``'s assignment (dense ranges, rows by the
hash of their id). A shard stores its values as one local vector — its dense weights, its
rows of each table in id order, its moving statistics — and applies pushes with the engine's
own code on it, so its arithmetic is that of the whole-vector server on the same elements.

Requests (frames of ``protocol``, one array each):

- ``PULL`` meta ``{epoch, partition, clock, counts}``, array: the ids wanted, table after
  table (``counts[t]`` of table ``t``, sorted, all owned by the shard; int32 or int64 as
  ``ParamMap.id_dtype``). Answer: float32 ``[dense range | rows of table 0 | ...]``.
- ``PUSH`` meta ``{epoch, partition, attempt, sequence, samples, counts}``, array: uint8
  bytes of float32 ``[dense range | rows of table 0 | ...]`` followed by the ids. In weights
  mode the values are added (divided by ``workers``, as ``ParameterServer`` does); in
  gradients mode they are divided by ``samples`` and the optimizer steps the dense weights
  and *only the pushed rows* (a lazy row-sparse step, as ``Optimizer.apply`` with a
  ``sparse_index`` does in single-process training; slots live beside their rows in the
  shard). The whole-vector ``ParameterServer`` steps every row: the two agree exactly for
  SGD without momentum; with momentum, Adam, RMSprop, Adagrad or FTRL they agree on the
  pushed rows' values and slots up to the steps in which other rows were pushed, where the
  dense server also moves and decays untouched rows and a shard leaves them as they are.
- ``CLOCK`` meta ``{epoch, partition, attempt, event}``: a worker starts or ends its epoch.

Each push is tagged ``(partition, sequence)`` and applied at most once per epoch; a client
sends every push and every clock to every shard, so each shard's clocks are those a single
server would keep (ssp waits on them alike). Checks before anything changes are those of the
parameter server (``admission``), plus: ids owned by the shard, sorted and unique, counts
matching the data.
"""
from __future__ import annotations

import copy
import threading
from collections.abc import Mapping

import numpy as np

from sparkdl.distributed import admission
from sparkdl.distributed.protocol import Frame, Op
from sparkdl.distributed.server import Refused, int_field
from sparkdl.distributed.shard_layout import ShardLayout
from sparkdl.distributed.strategies import get_strategy
from sparkdl.engine import checks, files

MODES = ("async", "hogwild", "ssp")


class Ledger:
    """A server's record of an epoch (not thread-safe: its owner holds the lock): the running
    epoch, each partition's newest attempt, the pushes applied, and ssp's clocks."""

    def __init__(self, rows: Mapping[int, int], who: str):
        self.rows = admission.partition_rows(rows, who)
        self.attempts = admission.Attempts()
        self.epoch = 0
        self.applied: set[tuple[int, int]] = set()
        self.clocks: dict[int, int] = {}

    def begin_epoch(self, epoch: int) -> None:
        self.epoch, self.applied, self.clocks = int(epoch), set(), {}
        self.attempts.forget_seen()

    def admit(self, meta: dict) -> int:
        """The request's partition, once its epoch and partition are checked."""
        epoch, partition = int_field(meta, "epoch"), int_field(meta, "partition")
        if epoch != self.epoch:
            raise Refused(f"epoch {epoch} is not running (running: {self.epoch})")
        admission.known_partition(partition, self.rows)
        return partition

    def attempt(self, partition: int, attempt: int) -> None:
        self.attempts.check(partition, attempt)
        self.attempts.note(partition, attempt)

    def advance(self, partition: int, sequence: int) -> None:
        if partition in self.clocks:
            self.clocks[partition] = max(self.clocks[partition], sequence + 1)


class ShardServer:
    """Shard ``shard`` of a ``ShardLayout``, served by a ``FrameServer`` (see the module
    docstring). ``values``: its local vector (``layout.shard_values``). ``optimizer``: None
    for weight deltas, else the optimizer of gradients mode (the shard steps a copy).
    ``rows``: ``{partition: rows}`` of the partitions that train. ``workers``: what weight
    deltas are divided by, as ``ParameterServer``'s."""

    def __init__(self, layout: ShardLayout, shard: int, values: np.ndarray, *, rows: Mapping[int, int],
                 mode: str = "async", optimizer=None, staleness: int | None = None,
                 timeout: float = 120.0, workers: int = 1):
        if mode not in MODES:
            raise ValueError(f"ShardServer: expected mode in {MODES}, received {mode!r}")
        strategy = get_strategy(mode, **({"staleness": staleness} if mode == "ssp" else {}))
        strategy.check_aggregate("weights" if optimizer is None else "gradients", "ShardServer")
        self.layout, self.shard, self.mode, self.staleness = layout, int(shard), mode, strategy.staleness
        self.workers = checks.integer(workers, "workers", "ShardServer", at_least=1)
        self.timeout = float(timeout)
        self.dw, self.ds = layout.dense_split(self.shard)
        self.owned = layout.owned_ids(self.shard)
        counts = [len(i) for i in self.owned]
        dims = [t.dim for t in layout.map.tables]
        self.row_offsets = np.concatenate([[self.dw], self.dw + np.cumsum([n * d for n, d in zip(counts, dims)])])
        self.values = np.array(values, np.float32).reshape(-1)
        if self.values.size != int(self.row_offsets[-1]) + self.ds:
            raise ValueError(f"ShardServer: shard {shard} holds {int(self.row_offsets[-1]) + self.ds} "
                             f"values, received {self.values.size}")
        self.optimizer = copy.deepcopy(optimizer)
        self._grads = None if optimizer is None else np.zeros(int(self.row_offsets[-1]), np.float32)
        self.ledger = Ledger(rows, "ShardServer")
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        idbytes = layout.map.id_dtype.itemsize
        owned = sum(counts)
        self.max_data = 4 * self.values.size + idbytes * owned
        self.data_limits = {Op.PULL: max(idbytes * owned, 1)}
        self.stats = {"pushes": 0, "duplicates": 0, "pulls": 0, "bytes_pushed": 0, "bytes_pulled": 0,
                      "rows_pushed": 0, "rows_pulled": 0, "waits": 0}

    # ---- driver side ------------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        with self._lock:
            self.ledger.begin_epoch(epoch)

    def register(self, partition: int, attempt: int) -> None:
        with self._lock:
            self.ledger.attempts.register(int(partition), int(attempt))

    def snapshot(self) -> np.ndarray:
        """A copy of the local vector."""
        with self._lock:
            return self.values.copy()

    def state(self) -> dict[str, np.ndarray]:
        """Values, optimizer slots and steps: what a checkpoint keeps of this shard."""
        with self._lock:
            out = {"values": self.values.copy(),
                   "layout": np.array([self.shard, self.layout.num_shards, self.values.size], np.int64)}
            if self.optimizer is not None:
                out.update(self.optimizer.get_state())
            return out

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Take back a ``state()`` of this shard of the same layout (ValueError otherwise)."""
        expected = [self.shard, self.layout.num_shards, self.values.size]
        if list(np.asarray(state.get("layout", [])).tolist()) != expected:
            raise ValueError(f"ShardServer.restore: expected the state of shard {self.shard} of "
                             f"{self.layout.num_shards} ({self.values.size} values), received "
                             f"{np.asarray(state.get('layout')).tolist()}")
        with self._lock:
            self.values[...] = state["values"]
            if self.optimizer is not None:
                self.optimizer.reset_slots()
                self.optimizer.set_state(dict(state))

    def save(self, path: str) -> None:
        """Write ``state()`` to ``path`` atomically (a crash leaves the old file or the new)."""
        files.atomic_write(path, files.npz_bytes(self.state()))

    def load(self, path: str) -> None:
        with open(path, "rb") as f:
            self.restore(files.npz_arrays(f.read(), path, "ShardServer.load"))

    # ---- served requests --------------------------------------------------------------------------
    def handle(self, frame: Frame) -> Frame:
        with self._lock:
            partition = self.ledger.admit(frame.meta)
        if frame.op == Op.PULL:
            return self._pull(frame, partition)
        if frame.op == Op.PUSH:
            return self._push(frame, partition)
        if frame.op == Op.CLOCK:
            return self._clock(frame.meta, partition)
        raise Refused(f"op {frame.op} is not served here")

    def _clock(self, meta: dict, partition: int) -> Frame:
        event = meta.get("event")
        if event not in ("start", "done"):
            raise Refused(f"expected event 'start' or 'done', received {admission.shown(event)}")
        with self._changed:
            self.ledger.attempt(partition, int_field(meta, "attempt"))
            if event == "start":
                self.ledger.clocks[partition] = 0
            else:
                self.ledger.clocks.pop(partition, None)
            self._changed.notify_all()
        return Frame(Op.OK, {})

    def _local_index(self, counts: list[int], ids: np.ndarray) -> list[np.ndarray]:
        """Per table, the local row index of the requested ids (Refused unless the shard holds
        each, sorted and unique)."""
        out, at = [], 0
        for t, (n, owned) in enumerate(zip(counts, self.owned)):
            want = ids[at:at + n]
            at += n
            pos = np.searchsorted(owned, want)
            found = owned.size and np.all(pos < owned.size) and np.all(owned[np.minimum(pos, owned.size - 1)] == want)
            if n and (not found or np.any(np.diff(want) <= 0)):
                raise Refused(f"table {t}: expected sorted unique ids that shard {self.shard} holds")
            out.append(pos)
        return out

    def _counts(self, meta: dict, total: int) -> list[int]:
        counts = meta.get("counts")
        tables = len(self.owned)
        if not isinstance(counts, list) or len(counts) != tables or \
                not all(checks.is_integer(c) and 0 <= c <= o.size for c, o in zip(counts, self.owned)) or \
                sum(counts) != total:
            raise Refused(f"expected counts of {tables} tables adding up to the {total} ids sent, "
                          f"received {admission.shown(counts)}")
        return [int(c) for c in counts]

    def _ids(self, array: np.ndarray | None, what: str) -> np.ndarray:
        dtype = self.layout.map.id_dtype
        if array is None or array.ndim != 1 or array.dtype != dtype:
            got = None if array is None else (array.dtype.name, array.shape)
            raise Refused(f"expected the ids of {what} as a 1-d {dtype.name} array, received {got}")
        return array

    def _rows_view(self, t: int, pos: np.ndarray, vector: np.ndarray) -> np.ndarray:
        lo, hi = int(self.row_offsets[t]), int(self.row_offsets[t + 1])
        return vector[lo:hi].reshape(-1, self.layout.map.tables[t].dim)[pos]

    def _pull(self, frame: Frame, partition: int) -> Frame:
        ids = self._ids(frame.array if frame.array is not None else np.zeros(0, self.layout.map.id_dtype),
                        "a pull")
        counts = self._counts(frame.meta, ids.size)
        index = self._local_index(counts, ids)
        clock = int_field(frame.meta, "clock")
        if self.mode == "hogwild":          # reads the live values, as hogwild's pulls do
            answer = self._gather(index)
        else:
            with self._changed:
                if self.mode == "ssp":
                    self._wait_for_slowest(partition, clock)
                answer = self._gather(index)
        with self._lock:
            self.stats["pulls"] += 1
            self.stats["rows_pulled"] += ids.size
            self.stats["bytes_pulled"] += answer.nbytes
        return Frame(Op.OK, {"counts": counts}, answer)

    def _gather(self, index: list[np.ndarray]) -> np.ndarray:
        """A pull's answer: dense weights, the rows at ``index``, statistics (a new array)."""
        v = self.values
        return np.concatenate([v[:self.dw], *(self._rows_view(t, p, v).reshape(-1) for t, p in enumerate(index)),
                               v[v.size - self.ds:]])

    def _wait_for_slowest(self, partition: int, clock: int) -> None:
        clocks, staleness = self.ledger.clocks, self.staleness
        assert staleness is not None, "mode ssp has a staleness"
        if clocks and clock - min(clocks.values()) > staleness:
            self.stats["waits"] += 1
        if self._changed.wait_for(lambda: not clocks or clock - min(clocks.values()) <= staleness,
                                  timeout=self.timeout):
            return
        slowest = min(clocks, key=clocks.__getitem__)
        raise Refused(f"ssp: partition {partition} at clock {clock} waited {self.timeout} s for "
                      f"partition {slowest} (clock {clocks[slowest]}) to come within staleness {staleness}")

    def _push(self, frame: Frame, partition: int) -> Frame:
        meta, payload = frame.meta, frame.array
        if payload is None or payload.dtype != np.uint8 or payload.ndim != 1:
            raise Refused("expected a push as a 1-d uint8 array")
        dims = [t.dim for t in self.layout.map.tables]
        dense = self.dw + self.ds
        counts = meta.get("counts")
        floats = dense + sum(c * d for c, d in zip(counts, dims)) if isinstance(counts, list) and \
            all(checks.is_integer(c) for c in counts) else -1
        idbytes = self.layout.map.id_dtype.itemsize
        n_ids = (payload.size - 4 * floats) // idbytes if floats >= 0 else -1
        if floats < 0 or n_ids < 0 or 4 * floats + idbytes * n_ids != payload.size:
            raise Refused(f"expected a push of {dense} dense values and the rows and ids its counts "
                          f"say, received {payload.size} bytes with counts {admission.shown(counts)}")
        counts = self._counts(meta, n_ids)
        values = payload[:4 * floats].view(np.float32)
        ids = np.frombuffer(payload, self.layout.map.id_dtype, n_ids, 4 * floats)
        index = self._local_index(counts, ids)
        rows = self.ledger.rows[partition]
        sequence = admission.count(meta, "sequence", 0, rows - 1, f"partition {partition} holds {rows} rows")
        samples = admission.count(meta, "samples", 1, rows, f"partition {partition} holds {rows} rows")
        admission.finite(values, f"the push of partition {partition}")
        with self._changed:
            self.ledger.attempt(partition, int_field(meta, "attempt"))
            self.stats["bytes_pushed"] += payload.nbytes
            tag = (partition, sequence)
            if tag in self.ledger.applied:
                self.stats["duplicates"] += 1
                self.ledger.advance(partition, sequence)
                self._changed.notify_all()
                return Frame(Op.OK, {"applied": False})
            self.ledger.applied.add(tag)
            self.stats["pushes"] += 1
            self.stats["rows_pushed"] += n_ids
            if self.mode != "hogwild":
                self._apply(values, index, samples)
            self.ledger.advance(partition, sequence)
            self._changed.notify_all()
        if self.mode == "hogwild":
            self._apply(values, index, samples)
        return Frame(Op.OK, {"applied": True})

    def _apply(self, update: np.ndarray, index: list[np.ndarray], samples: int) -> None:
        """Apply a push's values ``[dense weights | rows ... | statistics]`` at the local rows
        ``index``, as ``ParameterServer._apply`` does on the whole vector."""
        dw, ds = self.dw, self.ds
        state = update[update.size - ds:]
        if self.workers > 1:
            np.divide(state if self.optimizer is not None else update, np.float32(self.workers),
                      out=state if self.optimizer is not None else update)
        np.add(self.values[self.values.size - ds:], state, out=self.values[self.values.size - ds:])
        spans, at = [], dw
        for t, pos in enumerate(index):
            dim = self.layout.map.tables[t].dim
            spans.append((t, pos, update[at:at + pos.size * dim].reshape(-1, dim)))
            at += pos.size * dim
        if self.optimizer is None:
            self.values[:dw] += update[:dw]
            for t, pos, rows in spans:
                lo, hi = int(self.row_offsets[t]), int(self.row_offsets[t + 1])
                self.values[lo:hi].reshape(-1, rows.shape[1])[pos] += rows
            return
        grads, flat = self._grads, []
        assert grads is not None, "gradients mode has a gradient buffer"
        np.divide(update[:dw], np.float32(samples), out=grads[:dw])
        for t, pos, rows in spans:
            lo, dim = int(self.row_offsets[t]), rows.shape[1]
            at_rows = (lo + pos[:, None] * dim + np.arange(dim)).reshape(-1)
            grads[at_rows] = (rows / np.float32(samples)).reshape(-1)
            flat.append(at_rows)
        sparse_index = np.concatenate(flat) if flat else np.zeros(0, np.int64)
        self.optimizer.apply(self.values[:grads.size], grads, dense_size=dw, sparse_index=sparse_index)
