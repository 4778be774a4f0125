"""The converted training blocks of the last DataFrame a fit read, kept for the next fit.

Converting a DataFrame into per-partition blocks is a Spark job and most of a warm fit's
fixed cost. ``CrossValidator`` and hand-written sweeps fit the same DataFrame object again
and again, so the blocks of the last conversion stay cached (``MEMORY_AND_DISK``) and serve
the next fit of the same DataFrame with the same columns, model inputs and partitions. One
entry only: converting another DataFrame releases it, and ``release_cached_blocks()`` does so
explicitly. DataFrames are immutable, so a cached conversion stays right for its DataFrame.
"""
from __future__ import annotations

import weakref

_entry: tuple | None = None        # (key, weak reference to the DataFrame, Blocks)


def blocks_for(df, key: tuple, build):
    """The cached blocks of ``df`` under ``key``, or ``build()``'s, which are then cached."""
    global _entry
    if _entry is not None and _entry[0] == key and _entry[1]() is df:
        return _entry[2]
    blocks = build()
    release_cached_blocks()
    blocks.kept = True
    _entry = (key, weakref.ref(df), blocks)
    return blocks


def release_cached_blocks() -> None:
    """Unpersist the blocks kept from the last fit's DataFrame (if any)."""
    global _entry
    if _entry is not None:
        blocks = _entry[2]
        _entry = None
        blocks.kept = False
        blocks.release()
