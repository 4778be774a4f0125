"""The driver's model in files while a sharded fit runs (``num_servers >= 1``).

A sharded fit's driver reads and writes its model only piece by piece: a shard that starts
pulls its part, an epoch's end writes the shards' values back, validation runs in the tasks,
and checkpoints and callbacks read it between epochs. ``MappedModel`` moves the model's flat
weights — and, in gradients mode, its optimizer's slots — into memory-mapped files of a
directory for the fit, and ``drop`` hands the pages of a range back to the kernel
(``madvise(MADV_DONTNEED)``: the values stay in the file, in the page cache, which writes
them to disk when memory is short). So the driver's resident memory holds the pieces in
use, not the tables. ``close`` moves the values back into ordinary memory: the fit's result.
"""
from __future__ import annotations

import mmap
import os

import numpy as np

#: elements copied at a time into or out of the files (16 MB)
CHUNK = 1 << 22


class MappedModel:
    """``model``'s weights (and ``optimizer``'s slots of the same size) in files of
    ``directory`` until ``close``."""

    def __init__(self, model, optimizer, directory: str):
        self.model, self.optimizer, self.directory = model, optimizer, directory
        self.size = model.flat_weights.size
        self._maps: dict[str, tuple[mmap.mmap | None, np.ndarray]] = {}
        model.relocate_weights(self._mapped("weights", model.flat_weights), copy=False)
        if optimizer is not None:
            for name, slot in list(optimizer.slots.items()):
                if slot.size == self.size:
                    optimizer.slots[name] = self._mapped(f"slot-{name}", slot)
        self.drop()

    def _mapped(self, name: str, values: np.ndarray) -> np.ndarray:
        """A float32 vector mapped from a new file that holds ``values``, written a chunk at a
        time (through the page cache, not this process's memory)."""
        path = os.path.join(self.directory, f"{name}.f32")
        with open(path, "w+b") as f:
            for a in range(0, values.size, CHUNK):
                values[a:a + CHUNK].tofile(f)
            f.flush()
            view = mmap.mmap(f.fileno(), 4 * values.size) if values.size else None
        array = np.frombuffer(view, np.float32) if view is not None else np.zeros(0, np.float32)
        self._maps[name] = (view, array)
        return array

    def drop(self, lo: int = 0, hi: int | None = None) -> None:
        """Hand the pages of elements ``[lo, hi)`` (all by default) of every file back to the
        kernel; the next read maps them in again from the page cache or the disk."""
        hi = self.size if hi is None else min(hi, self.size)
        start = (4 * lo // mmap.PAGESIZE) * mmap.PAGESIZE
        if 4 * hi <= start or not hasattr(mmap, "MADV_DONTNEED"):
            return
        for view, _ in self._maps.values():
            if view is not None:
                view.madvise(mmap.MADV_DONTNEED, start, 4 * hi - start)

    def close(self) -> None:
        """Move the weights and slots back into ordinary memory (a chunk at a time) and
        remove the files."""
        for name, (_, array) in list(self._maps.items()):
            values = np.empty(self.size, np.float32)
            for a in range(0, self.size, CHUNK):
                values[a:a + CHUNK] = array[a:a + CHUNK]
                self.drop(a, a + CHUNK)
            if name == "weights":
                self.model.relocate_weights(values, copy=False)
            else:
                self.optimizer.slots[name[5:]] = values
            os.unlink(os.path.join(self.directory, f"{name}.f32"))
        self._maps = {}
