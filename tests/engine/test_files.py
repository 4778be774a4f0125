"""The on-disk helpers that saved models and checkpoints share (``sparkdl.engine.files``)."""
import io
import os
import stat

import numpy as np
import pytest

from sparkdl.engine import files


def test_atomic_write_replaces_the_file_and_fsyncs_file_and_directory(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "out.bin"
    synced = []   # per fsync: whether it was a directory
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
                        or real_fsync(fd))
    files.atomic_write(str(path), b"first")
    files.atomic_write(str(path), lambda f: f.write(b"second"))
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["out.bin"]
    # Per write: the file, then its directory (so the rename survives a crash too).
    assert synced == [False, True, False, True]


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "out.bin"
    files.atomic_write(str(path), b"old")

    def fail(f):
        f.write(b"half of it")
        raise OSError("disk full (simulated)")

    with pytest.raises(OSError, match="simulated"):
        files.atomic_write(str(path), fail, prefix=".x-", suffix=".tmp")
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("no rename")))
    with pytest.raises(OSError, match="no rename"):
        files.atomic_write(str(path), b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_npz_bytes_round_trip_any_names_and_the_same_bytes_each_time():
    arrays = {"weight/0000": np.arange(6, dtype=np.float32).reshape(2, 3),
              "optimizer/iterations": np.array(7, dtype=np.int64),
              "file": np.array([True, False])}
    data = files.npz_bytes(arrays)
    assert files.npz_bytes(arrays) == data
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(arrays)
    back = files.npz_arrays(data, "mem", "test")
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)


def test_npz_bytes_refuses_object_arrays_and_npz_arrays_names_who_and_where():
    with pytest.raises(ValueError, match="pickle"):
        files.npz_bytes({"a": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match=r"^restore: cannot read the arrays of 'ckpt-1'"):
        files.npz_arrays(b"not an npz" * 10, "ckpt-1", "restore")


def test_json_plain_turns_numpy_and_tuples_into_json_types():
    value = {"a": np.float32(0.5), "b": np.arange(3), "c": (1, np.int64(2)), "d": [None, "x", True]}
    assert files.json_plain(value) == {"a": 0.5, "b": [0, 1, 2], "c": [1, 2], "d": [None, "x", True]}
