"""How sparkdl puts bytes on disk: atomic file writes, ``.npz`` archives and JSON-plain values.

Saved models (``sparkdl.engine.serialization``) and training checkpoints
(``sparkdl.distributed.checkpoint``) both write through these helpers, so both get the same
crash safety (a reader sees the old file or the new one, never half of one) and the same
archive format. NumPy only: no pyspark.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from typing import BinaryIO, Callable

import numpy as np

# A fixed timestamp for archive members: the same arrays always give the same bytes, so a
# checksum over them changes only when the arrays do.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def atomic_write(path: str, data: bytes | Callable[[BinaryIO], None], prefix: str = ".tmp-",
                 suffix: str = "") -> None:
    """Replace the file at ``path`` with ``data`` (bytes, or a function writing into the open
    binary file) so that a crash leaves either the previous file or the complete new one.

    The data goes to a temporary file ``{prefix}XXXX{suffix}`` in the same directory (created
    if needed), is flushed and fsynced, renamed over ``path``, and the directory is fsynced so
    that the rename itself survives a power loss. On any error the temporary file is removed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    # Some file systems (and platforms) cannot open or fsync a directory; the rename is then
    # as durable as they make it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_files(path: str, files: dict[str, bytes]) -> None:
    """Save named files at ``path``: into the directory ``path``, one atomic file each in the
    given order (callers put first what the last one checks, so a crash between two renames
    leaves a mismatch, not a silently mixed set), or else as one zip file written atomically."""
    if os.path.isdir(path):
        for name, data in files.items():
            atomic_write(os.path.join(path, name), data)
        return
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    atomic_write(path, buf.getvalue())


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` archive (stored, not compressed) of ``arrays``, readable by ``np.load``.

    Unlike ``np.savez(**arrays)`` it takes any member name, refuses object arrays (nothing is
    pickled), writes arrays over 2 GiB (zip64), and gives the same bytes for the same arrays.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def npz_arrays(data: bytes, where: str, who: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive's bytes, read without unpickling. A damaged archive is
    a ValueError naming the operation ``who`` and the file ``where``."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{who}: cannot read the arrays of {where!r}: {exc}") from None


def json_plain(value):
    """``value`` as plain JSON data: NumPy scalars and arrays become Python numbers and lists,
    tuples become lists, any other object its ``str``."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
