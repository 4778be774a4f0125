"""Training checkpoints without Spark: exact round trips into an existing model, retention,
corrupted files, mismatched models, bad meta, and a crash during the write."""
import functools
import json
import logging
import os
import struct
import zipfile

import numpy as np
import pytest

from sparkdl.distributed import checkpoint as ckpt_mod
from sparkdl.distributed.checkpoint import Checkpoint, CheckpointStore
from sparkdl.engine import layers, optimizers
from sparkdl.engine.sequential import Sequential
from sparkdl.models import load_model, model_from_json
from tests.custom_layers import PACKAGE, Scale, SignSGD, swish
from tests.helpers import classification_data, mlp

LOGGER = "sparkdl.distributed.checkpoint"


_data = functools.partial(classification_data, n=32, d=8, classes=3)


def _adam_classifier(lr=0.01, hidden=(16,), activation="relu"):
    """8 -> hidden (relu) -> 3 (softmax), Adam, sparse categorical cross-entropy."""
    return mlp(layers.Dense(3, activation="softmax"), input_dim=8, hidden=hidden,
               activations=(activation,) * len(hidden), optimizer=optimizers.Adam(learning_rate=lr),
               loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def _bn_model(lr=0.01):
    model = Sequential([layers.Input((8,)), layers.Dense(16, activation="relu"), layers.BatchNorm(),
                        layers.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizers.Adam(learning_rate=lr), loss="sparse_categorical_crossentropy")
    return model


def _trained(make=_adam_classifier, steps=3, seed=0, **kwargs):
    model = make(**kwargs)
    x, y = _data(seed=seed)
    for _ in range(steps):
        model.train_on_batch(x, y)
    return model


def _files(directory):
    return sorted(os.listdir(directory))


def _assert_same_state(a, b):
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        assert wa.dtype == wb.dtype and np.array_equal(wa, wb)
    np.testing.assert_array_equal(a.flat_weights, b.flat_weights)
    np.testing.assert_array_equal(a.flat_state, b.flat_state)
    assert a.optimizer.iterations == b.optimizer.iterations
    assert a.optimizer.learning_rate == b.optimizer.learning_rate
    assert a.optimizer.get_config() == b.optimizer.get_config()
    assert sorted(a.optimizer.slots) == sorted(b.optimizer.slots)
    for k in a.optimizer.slots:
        assert np.array_equal(a.optimizer.slots[k], b.optimizer.slots[k])


# ---- 1. exact round trip into an existing model --------------------------------------------------
@pytest.mark.parametrize("make", [_adam_classifier, _bn_model])
def test_save_then_restore_is_exact_and_training_continues_identically(tmp_path, make):
    source = _trained(make, steps=3, lr=0.01)
    source.optimizer.learning_rate = 0.0037          # as a callback would have changed it
    store = CheckpointStore(tmp_path)
    meta = {"round": 7, "seed": 42, "epoch": 1, "history": {"loss": [1.5, 1.25]}, "note": None}
    path = store.save(source, 7, meta)
    assert path == str(tmp_path / "ckpt-00000007.sdlckpt") and os.path.isfile(path)

    target = _trained(make, steps=1, seed=5, lr=0.5)  # other weights, slots, iterations, lr
    assert not np.array_equal(target.flat_weights, source.flat_weights)
    restored = store.restore_latest(target)
    assert isinstance(restored, Checkpoint)
    assert (restored.step, restored.meta, restored.path) == (7, meta, path)
    assert restored.arrays == {}
    _assert_same_state(source, target)
    if make is _bn_model:
        assert target.flat_state.size > 0 and np.any(target.flat_state != 0)

    x, y = _data(seed=1)
    assert source.train_on_batch(x, y) == target.train_on_batch(x, y)
    _assert_same_state(source, target)


def test_checkpoint_file_layout(tmp_path):
    path = CheckpointStore(tmp_path).save(_trained(), 3, {"a": 1}, {"m": np.zeros(2)})
    with zipfile.ZipFile(path) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        assert set(zf.namelist()) == {"checkpoint.json", "model.json", "weights.npz", "arrays.npz"}
        manifest = json.loads(zf.read("checkpoint.json"))
    assert manifest["format"] == "sparkdl.checkpoint" and manifest["step"] == 3
    assert set(manifest["members"]) == {"model.json", "weights.npz", "arrays.npz"}


# ---- 2. retention ---------------------------------------------------------------------------------
def test_keep_only_the_newest(tmp_path):
    model = _trained(steps=1)
    store = CheckpointStore(f"file://{tmp_path}", keep=2)
    for step in (1, 2, 3, 4):
        store.save(model, step, {"round": step})
    assert _files(tmp_path) == ["ckpt-00000003.sdlckpt", "ckpt-00000004.sdlckpt"]
    assert [s for s, _ in store.checkpoints()] == [3, 4]


def test_a_save_supersedes_later_steps(tmp_path):
    """After resuming from step 2, saving step 3 drops the step-4 file of the abandoned run."""
    model = _trained(steps=1)
    store = CheckpointStore(tmp_path, keep=5)
    for step in (2, 4):
        store.save(model, step, {})
    store.save(model, 3, {})
    assert [s for s, _ in store.checkpoints()] == [2, 3]


@pytest.mark.parametrize("keep, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                         (True, TypeError), ("3", TypeError)])
def test_keep_is_validated(tmp_path, keep, error):
    with pytest.raises(error, match="keep"):
        CheckpointStore(tmp_path, keep=keep)


def test_non_local_uri_is_refused():
    with pytest.raises(ValueError, match="hdfs://nn/ckpt"):
        CheckpointStore("hdfs://nn/ckpt")


# ---- 3. corrupted files ---------------------------------------------------------------------------
def _two_checkpoints(tmp_path):
    store = CheckpointStore(tmp_path)
    old = _trained(steps=2)
    store.save(old, 8, {"round": 8})
    new = _trained(steps=4)
    newest = store.save(new, 12, {"round": 12})
    return store, old, newest


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _flip_byte_in_weights(path):
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("weights.npz")
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        pos = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(pos)
        byte = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([byte ^ 0x40]))


@pytest.mark.parametrize("corrupt", [_truncate, _flip_byte_in_weights])
def test_corrupted_newest_falls_back_to_previous(tmp_path, caplog, corrupt):
    store, old, newest = _two_checkpoints(tmp_path)
    corrupt(newest)
    target = _trained(steps=1, seed=3)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        restored = store.restore_latest(target)
    assert restored.step == 8 and restored.meta == {"round": 8}
    _assert_same_state(old, target)
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "ckpt-00000012.sdlckpt is unreadable" in message and "using ckpt-00000008.sdlckpt" in message


@pytest.mark.parametrize("corrupt", [_truncate, _flip_byte_in_weights])
def test_all_corrupted_raises(tmp_path, corrupt):
    store, _, newest = _two_checkpoints(tmp_path)
    for _, path in store.checkpoints():
        corrupt(path)
    target = _trained(steps=1, seed=3)
    before = target.get_flat_weights()
    with pytest.raises(ValueError, match="ckpt-00000012.sdlckpt.*ckpt-00000008.sdlckpt"):
        store.restore_latest(target)
    np.testing.assert_array_equal(target.flat_weights, before)


def test_tampered_member_with_valid_crc_is_caught_by_sha256(tmp_path, caplog):
    """A member rewritten consistently (valid zip, valid CRC) but not matching the manifest."""
    store, _, newest = _two_checkpoints(tmp_path)
    with zipfile.ZipFile(newest) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["arrays.npz"] = ckpt_mod.npz_bytes({"x": np.ones(1)})
    with zipfile.ZipFile(newest, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.restore_latest(_trained(steps=1)).step == 8
    assert "arrays.npz is corrupted" in caplog.text and "SHA-256" in caplog.text


# ---- 4. mismatched model --------------------------------------------------------------------------
@pytest.mark.parametrize("make_target, match", [
    (lambda: _trained(hidden=(12,)), r"of shape \(8, 16\), the model has \(8, 12\)"),
    (lambda: _trained(_bn_model), r"layers"),
    (lambda: _compiled_with(optimizers.SGD(momentum=0.9)), r"optimizer 'adam'.*optimizer 'sgd'"),
    (lambda: mlp(layers.Dense(3, activation="softmax"), input_dim=8, hidden=(16,), activations=("relu",)),
     r"not compiled"),
    (lambda: _adam_classifier(activation="tanh"), r"'activation'"),
])
def test_mismatched_model_is_refused_and_left_untouched(tmp_path, make_target, match):
    store = CheckpointStore(tmp_path)
    store.save(_trained(steps=2), 5, {"round": 5})
    target = make_target()
    before = target.get_weights()
    opt_before = target.optimizer.get_state() if target.optimizer else None
    with pytest.raises(ValueError, match=match):
        store.restore_latest(target)
    for a, b in zip(before, target.get_weights(), strict=True):
        assert np.array_equal(a, b)
    if opt_before is not None:
        after = target.optimizer.get_state()
        assert sorted(after) == sorted(opt_before)
        assert all(np.array_equal(after[k], opt_before[k]) for k in after)


def _compiled_with(optimizer):
    model = mlp(layers.Dense(3, activation="softmax"), input_dim=8, hidden=(16,), activations=("relu",),
                optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.train_on_batch(*_data())
    return model


# ---- 5. meta and arrays are checked before anything is written ------------------------------------
@pytest.mark.parametrize("meta, match", [
    ({"round": 1, "loss": np.float32(0.5)}, r"meta\['loss'\].*float32"),
    ({"history": {"loss": [1.0, object()]}}, r"meta\['history'\]\['loss'\]\[1\]"),
    ({"settings": {1: "a"}}, r"meta\['settings'\].*str keys"),
    ({"seed": np.int64(3)}, r"meta\['seed'\].*int64"),
    (["not", "a", "dict"], r"expected meta as a dict"),
])
def test_bad_meta_raises_before_writing(tmp_path, meta, match):
    store = CheckpointStore(tmp_path)
    with pytest.raises(TypeError, match=match):
        store.save(_trained(steps=1), 1, meta)
    assert _files(tmp_path) == []


@pytest.mark.parametrize("arrays, match", [
    ({"a": [1.0, 2.0]}, r"arrays\['a'\].*numpy array.*list"),
    ({"a": np.array(["x"], dtype=object)}, r"arrays\['a'\].*dtype object"),
    ({3: np.zeros(1)}, r"names"),
])
def test_bad_arrays_raise_before_writing(tmp_path, arrays, match):
    with pytest.raises(TypeError, match=match):
        CheckpointStore(tmp_path).save(_trained(steps=1), 1, {}, arrays)
    assert _files(tmp_path) == []


def test_unbuilt_model_is_refused(tmp_path):
    model = Sequential([layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        CheckpointStore(tmp_path).save(model, 1, {})
    assert _files(tmp_path) == []


# ---- 6. extra arrays -------------------------------------------------------------------------------
def test_extra_arrays_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"metric/accuracy/total": rng.normal(size=(3,)).astype(np.float64),
              "metric/accuracy/count": np.array([2**40 + 1, -5], dtype=np.int64),
              "partial": np.float32(np.pi) * np.ones((2, 2), np.float32),
              "file": np.array(1.0 / 3.0)}           # a name np.savez(**kw) could not take
    store = CheckpointStore(tmp_path)
    store.save(_trained(), 2, {}, arrays)
    restored = store.restore_latest(_trained(steps=1))
    assert sorted(restored.arrays) == sorted(arrays)
    for k, v in arrays.items():
        assert restored.arrays[k].dtype == v.dtype and restored.arrays[k].shape == v.shape
        assert np.array_equal(restored.arrays[k], v)


# ---- 7. empty and missing directories ---------------------------------------------------------------
def test_no_checkpoints_and_missing_directory(tmp_path):
    model = _trained(steps=1)
    assert CheckpointStore(tmp_path).restore_latest(model) is None
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / ".ckpt-00000003.abc.tmp").write_bytes(b"half")
    assert CheckpointStore(tmp_path).checkpoints() == []
    missing = tmp_path / "a" / "b"
    store = CheckpointStore(missing)
    assert store.checkpoints() == [] and store.restore_latest(model) is None
    path = store.save(model, 1, {})
    assert os.path.isfile(path) and os.path.dirname(path) == str(missing)


# ---- 8. crash during the write -------------------------------------------------------------------
def test_crash_during_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    old = _trained(steps=2)
    store.save(old, 4, {"round": 4})
    new = _trained(steps=5)

    def crash(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt_mod.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        store.save(new, 8, {"round": 8})
    monkeypatch.undo()
    assert _files(tmp_path) == ["ckpt-00000004.sdlckpt"]
    assert [s for s, _ in store.checkpoints()] == [4]
    target = _trained(steps=1, seed=9)
    assert store.restore_latest(target).step == 4
    _assert_same_state(old, target)


def test_crash_while_serialising_leaves_no_temp_file(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        store.save(_trained(steps=1), 1, {})
    assert _files(tmp_path) == []


def test_checkpoint_module_does_not_import_pyspark():
    import subprocess
    import sys
    code = ("import sys, sparkdl.distributed.checkpoint; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'py4j')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- registered user objects ------------------------------------------------------------------------
def _user_model(lr=0.01):
    model = Sequential([layers.Input((8,)), layers.Dense(6, activation=swish), Scale(init=0.5),
                        layers.Dense(3, activation="softmax")])
    model.compile(optimizer=SignSGD(learning_rate=lr, scale=2.0), loss="sparse_categorical_crossentropy")
    return model


def test_a_model_of_registered_user_objects_restores_and_loads_from_a_checkpoint(tmp_path):
    source = _trained(_user_model, steps=3)
    store = CheckpointStore(tmp_path)
    path = store.save(source, 3, {"round": 3})
    with zipfile.ZipFile(path) as zf:
        doc = json.loads(zf.read("model.json"))
    assert doc["compile"]["optimizer"]["class_name"] == f"{PACKAGE}>SignSGD"
    assert doc["config"]["layers"][1]["class_name"] == f"{PACKAGE}>Scale"
    # Restored into a model rebuilt from the architecture, whose optimizer has other settings.
    target = model_from_json(source.to_json())
    target.compile(optimizer=SignSGD(learning_rate=0.5, scale=1.0), loss="sparse_categorical_crossentropy")
    store.restore_latest(target)
    _assert_same_state(source, target)
    assert target.optimizer.scale == 2.0
    # A checkpoint is also a saved model: the loader finds the user objects by their names.
    loaded = load_model(path)
    assert type(loaded.optimizer) is SignSGD and type(loaded.layers[1]) is Scale
    assert loaded.layers[0].activation.fn is swish
    _assert_same_state(source, loaded)
    x, y = _data(seed=1)
    for model in (source, target, loaded):
        model.train_on_batch(x, y)
    np.testing.assert_array_equal(target.flat_weights, source.flat_weights)
    np.testing.assert_array_equal(loaded.flat_weights, source.flat_weights)


def test_a_checkpoint_of_another_user_optimizer_is_refused(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(_trained(_user_model, steps=1), 1, {})
    other = _user_model()
    other.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=rf"holds the state of optimizer '{PACKAGE}>SignSGD', the model "
                                         r"'.*' has optimizer 'sgd'"):
        store.restore_latest(other)
