"""Saving and loading: round trips, optimizer state, custom layers, and corrupted files."""
import hashlib
import io
import json
import os
import zipfile

import numpy as np
import pytest

from sparkdl import layers, optimizers
from sparkdl.engine import schedules
from sparkdl.models import Input, Model, Sequential, load_model, model_from_json
from tests.helpers import assert_same_weights, classification_data


class Scale(layers.Layer):
    """A user layer: ``x * w`` with one trainable weight per feature, initialised to ``init``."""

    def __init__(self, init=1.0, **kwargs):
        super().__init__(**kwargs)
        self.init = float(init)

    def build(self, input_shape):
        self.add_weight("w", (input_shape[-1],), initializer="ones")
        self.params["w"] *= self.init

    def forward(self, x, training=False):
        if training:
            self._x = x
        return x * self.params["w"]

    def backward(self, dLdy):
        self.grads["w"][...] = (dLdy * self._x).sum(axis=0)
        return dLdy * self.params["w"]

    def get_config(self):
        config = super().get_config()
        config["init"] = self.init
        return config


def _model(optimizer=None, metrics=("accuracy",), compile=True):
    model = Sequential([Input((4,)), layers.Dense(6, activation="tanh"), layers.Dropout(0.2),
                        layers.Dense(3, activation="softmax")])
    if compile:
        model.compile(optimizer=optimizer or optimizers.Adam(learning_rate=0.01, beta_1=0.8),
                      loss="sparse_categorical_crossentropy", metrics=list(metrics))
    return model


def _trained(optimizer=None):
    x, y = classification_data()
    model = _model(optimizer)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=0)
    return model, x, y


# ---- round trips -----------------------------------------------------------------------------
def test_zip_file_round_trip_gives_identical_predictions(tmp_path):
    model, x, y = _trained()
    path = tmp_path / "model.sparkdl"
    model.save(path)
    assert zipfile.is_zipfile(path)
    loaded = load_model(path)
    assert_same_weights(model, loaded)
    assert np.array_equal(model.predict(x), loaded.predict(x))
    assert loaded.evaluate(x, y) == model.evaluate(x, y)
    assert [type(l).__name__ for l in loaded.layers] == ["Dense", "Dropout", "Dense"]
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]


def test_existing_directory_round_trip(tmp_path):
    model, x, _ = _trained()
    directory = tmp_path / "saved"
    directory.mkdir()
    model.save(str(directory))
    assert sorted(os.listdir(directory)) == ["model.json", "weights.npz"]
    loaded = load_model(str(directory))
    assert np.array_equal(model.predict(x), loaded.predict(x))


def test_compile_settings_and_optimizer_config_restored(tmp_path):
    opt = optimizers.SGD(learning_rate=0.03, momentum=0.7, nesterov=True)
    model, _, _ = _trained(opt)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.loss.name == "sparse_categorical_crossentropy"
    assert [m.name for m in loaded.metrics] == ["accuracy"]
    assert isinstance(loaded.optimizer, optimizers.SGD)
    assert loaded.optimizer.get_config() == {"name": "sgd", "learning_rate": 0.03, "decay": 0.0,
                                             "momentum": 0.7, "nesterov": True}
    assert loaded.optimizer.iterations == model.optimizer.iterations == 6


def test_learning_rate_schedule_and_metric_configs_restored(tmp_path):
    schedule = schedules.ExponentialDecay(0.05, decay_steps=3, decay_rate=0.5)
    x, y = classification_data()
    model = _model(optimizers.Adam(learning_rate=schedule),
                   metrics=["accuracy", {"name": "top_k_accuracy", "k": 2}])
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=1)
    model.save(tmp_path / "m.zip")
    loaded = load_model(tmp_path / "m.zip")
    lr = loaded.optimizer.get_config()["learning_rate"]
    assert lr == schedule.get_config()
    assert loaded.optimizer.learning_rate == pytest.approx(0.05 * 0.5 ** (3 / 3))
    assert [m.get_config() for m in loaded.metrics] == [{"name": "accuracy"},
                                                       {"name": "top_k_accuracy", "k": 2}]


@pytest.mark.parametrize("make_opt", [
    lambda: optimizers.Adam(learning_rate=0.01),
    lambda: optimizers.SGD(learning_rate=0.05, momentum=0.9),
    lambda: optimizers.RMSprop(learning_rate=0.01, momentum=0.5),
    lambda: optimizers.SGD(learning_rate=0.05, momentum=0.9, decay=0.1),
], ids=["adam", "sgd-momentum", "rmsprop-momentum", "sgd-decay"])
def test_optimizer_state_restored_so_training_continues_bitwise(tmp_path, make_opt):
    model, x, y = _trained(make_opt())
    model.save(tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.optimizer.iterations == model.optimizer.iterations
    for name, slot in model.optimizer.slots.items():
        assert np.array_equal(loaded.optimizer.slots[name], slot)
    # train_on_batch runs Dropout in training mode: give both models the same masks.
    model.reseed(123)
    loaded.reseed(123)
    for _ in range(2):
        la = model.train_on_batch(x[:16], y[:16])
        lb = loaded.train_on_batch(x[:16], y[:16])
        assert la == lb
    assert_same_weights(model, loaded)
    # A fresh optimizer (no state) would have taken a different step.
    fresh = load_model(tmp_path / "ckpt", compile=False)
    fresh.compile(optimizer=make_opt(), loss="sparse_categorical_crossentropy")
    fresh.reseed(123)
    fresh.train_on_batch(x[:16], y[:16])
    fresh.train_on_batch(x[:16], y[:16])
    assert not np.array_equal(fresh.get_flat_weights(), model.get_flat_weights())


def test_load_without_compile(tmp_path):
    model, x, _ = _trained()
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m", compile=False)
    assert loaded.loss is None and loaded.optimizer is None
    assert np.array_equal(model.predict(x), loaded.predict(x))


def test_uncompiled_model_round_trip(tmp_path):
    model = _model(compile=False)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.loss is None
    assert_same_weights(model, loaded)


def test_custom_layer_through_custom_objects(tmp_path):
    x, y = classification_data()
    model = Sequential([Input((4,)), layers.Dense(5, activation="relu"), Scale(init=0.5, name="scale"),
                        layers.Dense(3, activation="softmax")])
    model.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=0)
    w = model.layers[1].params["w"]
    assert not np.allclose(w, 0.5)  # the custom weight was trained
    model.save(tmp_path / "custom")
    with pytest.raises(ValueError, match="unknown layer class 'Scale'.*custom_objects"):
        load_model(tmp_path / "custom")
    loaded = load_model(tmp_path / "custom", custom_objects={"Scale": Scale})
    assert isinstance(loaded.layers[1], Scale) and loaded.layers[1].init == 0.5
    assert_same_weights(model, loaded)
    assert np.array_equal(model.predict(x), loaded.predict(x))


def test_decay_is_saved_with_the_optimizer(tmp_path):
    model, _, _ = _trained(optimizers.SGD(learning_rate=0.05, decay=0.25))
    model.save(tmp_path / "m.zip")
    loaded = load_model(tmp_path / "m.zip")
    assert loaded.optimizer.decay == 0.25 and loaded.optimizer.iterations == 6
    assert loaded.optimizer.current_learning_rate == pytest.approx(0.05 / 2.5)


# ---- to_json / model_from_json: the architecture alone ------------------------------------------
def test_to_json_round_trip_gives_the_same_predictions_after_set_weights():
    model, x, _ = _trained()
    text = model.to_json()
    doc = json.loads(text)
    assert (doc["class_name"], doc["config"]) == ("Sequential", model.get_config())
    assert "weights" not in doc and "compile" not in doc
    rebuilt = model_from_json(text)
    assert rebuilt.loss is None and rebuilt.optimizer is None
    assert [l.name for l in rebuilt.layers] == [l.name for l in model.layers]
    assert not np.array_equal(rebuilt.predict(x), model.predict(x))       # fresh weights
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.predict(x), model.predict(x))
    assert json.loads(model.to_json(indent=2)) == doc


def test_functional_model_and_custom_layer_round_trip_through_json():
    x, _ = classification_data()
    a = Input((4,))
    out = layers.Dense(3, activation="softmax")(Scale(init=0.5)(layers.Dense(5, activation="relu")(a)))
    model = Model(inputs=a, outputs=out)
    with pytest.raises(ValueError, match="unknown layer class 'Scale'"):
        model_from_json(model.to_json())
    rebuilt = model_from_json(model.to_json(), custom_objects={"Scale": Scale})
    assert type(rebuilt) is Model and isinstance(rebuilt.layers[1], Scale)
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.predict(x), model.predict(x))


def test_the_model_json_of_a_saved_model_is_an_architecture_too(tmp_path):
    model, x, _ = _trained()
    model.save(tmp_path / "m.zip")
    with zipfile.ZipFile(tmp_path / "m.zip") as zf:
        rebuilt = model_from_json(zf.read("model.json"))
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.predict(x), model.predict(x))


@pytest.mark.parametrize("text, error, message", [
    ("{not json", ValueError, "model_from_json: expected a JSON string, received invalid JSON"),
    ("[1, 2]", ValueError, r"expected the JSON of model.to_json\(\) .*received list"),
    ('{"class_name": "Sequential"}', ValueError, r"received \['class_name'\]"),
    ('{"format": "other", "class_name": "Sequential", "config": {}}', ValueError, "expected the JSON"),
    ('{"class_name": "Sequential", "config": {}, "version": 9}', ValueError, "expected format version 1"),
    ('{"class_name": "Graph", "config": {}}', ValueError, "model_from_json: unknown model class 'Graph'"),
    ('{"class_name": "Sequential", "config": {"name": "s"}}', ValueError, "the architecture is invalid"),
    (None, TypeError, "model_from_json: expected a JSON string, received NoneType"),
])
def test_model_from_json_refuses_what_is_not_an_architecture(text, error, message):
    with pytest.raises(error, match=message):
        model_from_json(text)


def test_save_weights_and_load_weights(tmp_path):
    model, x, _ = _trained()
    path = tmp_path / "weights.npz"
    model.save_weights(path)
    other = _model()
    assert not np.array_equal(other.predict(x), model.predict(x))
    other.load_weights(path)
    assert_same_weights(model, other)
    assert np.array_equal(other.predict(x), model.predict(x))
    with np.load(path, allow_pickle=False) as npz:
        assert len(npz.files) == 4  # kernel, bias per Dense; no optimizer state


def test_saved_zip_holds_no_pickle(tmp_path):
    model, _, _ = _trained()
    model.save(tmp_path / "m.sparkdl")
    with zipfile.ZipFile(tmp_path / "m.sparkdl") as zf:
        assert sorted(zf.namelist()) == ["model.json", "weights.npz"]
        doc = json.loads(zf.read("model.json"))
        weights = zf.read("weights.npz")
    assert doc["format"] == "sparkdl.model" and doc["class_name"] == "Sequential"
    with np.load(io.BytesIO(weights), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert all(a.dtype != object for a in arrays.values())
    stored = [arrays[k] for k in sorted(k for k in arrays if k.startswith("weight/"))]
    for saved, live in zip(stored, model.get_weights()):
        assert np.array_equal(saved, live)
    assert doc["weights"]["sha256"] == hashlib.sha256(weights).hexdigest()


def test_save_leaves_no_temporary_files(tmp_path):
    model, _, _ = _trained()
    model.save(tmp_path / "a.sparkdl")
    model.save(tmp_path / "a.sparkdl")  # overwrite
    model.save_weights(tmp_path / "w.npz")
    (tmp_path / "d").mkdir()
    model.save(tmp_path / "d")
    assert sorted(os.listdir(tmp_path)) == ["a.sparkdl", "d", "w.npz"]
    assert sorted(os.listdir(tmp_path / "d")) == ["model.json", "weights.npz"]


def test_failed_save_keeps_previous_file_and_no_temp_files(tmp_path, monkeypatch):
    model, x, _ = _trained()
    path = tmp_path / "m.sparkdl"
    model.save(path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    model.train_on_batch(x[:8], np.zeros(8, dtype=np.int64))
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.sparkdl"]


# ---- corrupted and missing files -------------------------------------------------------------
def _saved_bytes(tmp_path):
    model, _, _ = _trained()
    model.save(tmp_path / "good.sparkdl")
    with zipfile.ZipFile(tmp_path / "good.sparkdl") as zf:
        return model, zf.read("model.json"), zf.read("weights.npz")


def _write_zip(path, doc_bytes, weights_bytes):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.json", doc_bytes)
        zf.writestr("weights.npz", weights_bytes)
    return path


def test_truncated_zip(tmp_path):
    _trained()[0].save(tmp_path / "m.sparkdl")
    data = (tmp_path / "m.sparkdl").read_bytes()
    (tmp_path / "cut.sparkdl").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a complete sparkdl model"):
        load_model(tmp_path / "cut.sparkdl")


def test_garbage_bytes(tmp_path):
    (tmp_path / "junk.sparkdl").write_bytes(b"\x00garbage, not a model\xff" * 50)
    with pytest.raises(ValueError, match="not a complete sparkdl model"):
        load_model(tmp_path / "junk.sparkdl")


def test_invalid_json(tmp_path):
    _, _, weights = _saved_bytes(tmp_path)
    path = _write_zip(tmp_path / "bad.sparkdl", b'{"format": "sparkdl.model", ', weights)
    with pytest.raises(ValueError, match="model.json .* is corrupted \\(invalid JSON"):
        load_model(path)


def test_weights_altered_checksum_mismatch_zip_and_directory(tmp_path):
    _, doc, weights = _saved_bytes(tmp_path)
    altered = bytearray(weights)
    altered[len(altered) // 2] ^= 0x01
    path = _write_zip(tmp_path / "bad.sparkdl", doc, bytes(altered))
    with pytest.raises(ValueError, match="weights.npz .* is corrupted or truncated.*SHA-256"):
        load_model(path)
    d = tmp_path / "dir"
    d.mkdir()
    (d / "model.json").write_bytes(doc)
    (d / "weights.npz").write_bytes(weights[:-10])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load_model(d)


def test_weights_rewritten_as_a_valid_archive_are_refused_by_their_sha256(tmp_path):
    """Other weights in a well-formed weights.npz, in a zip whose CRCs are all valid: only the
    SHA-256 recorded in model.json can tell, and loading must refuse the file."""
    model, doc, weights = _saved_bytes(tmp_path)
    with np.load(io.BytesIO(weights), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["weight/0000"] = arrays["weight/0000"] + np.float32(1.0)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = _write_zip(tmp_path / "tampered.sparkdl", doc, buf.getvalue())
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None                   # every member's CRC is valid
        with np.load(io.BytesIO(zf.read("weights.npz")), allow_pickle=False) as npz:
            assert sorted(npz.files) == sorted(arrays)    # and the arrays read back fine
    with pytest.raises(ValueError, match=r"weights\.npz .* is corrupted or truncated \(its SHA-256 does "
                                         r"not match the one recorded at save time\)"):
        load_model(path)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "model.json").write_bytes(doc)
    (tmp_path / "dir" / "weights.npz").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="SHA-256"):
        load_model(tmp_path / "dir")


@pytest.mark.parametrize("field,value,fragment", [
    ("format", "keras.model", "is not a sparkdl model \\(expected format 'sparkdl.model'\\)"),
    ("version", 99, "has format version 99; this sparkdl reads version 1"),
])
def test_wrong_format_or_version(tmp_path, field, value, fragment):
    _, doc, weights = _saved_bytes(tmp_path)
    d = json.loads(doc)
    d[field] = value
    path = _write_zip(tmp_path / "bad.sparkdl", json.dumps(d).encode(), weights)
    with pytest.raises(ValueError, match=fragment):
        load_model(path)


def test_json_that_is_not_an_object(tmp_path):
    _, _, weights = _saved_bytes(tmp_path)
    path = _write_zip(tmp_path / "bad.sparkdl", b"[1, 2, 3]", weights)
    with pytest.raises(ValueError, match="is not a sparkdl model"):
        load_model(path)


def test_model_json_without_weights_record(tmp_path):
    _, doc, weights = _saved_bytes(tmp_path)
    d = json.loads(doc)
    del d["weights"]
    path = _write_zip(tmp_path / "bad.sparkdl", json.dumps(d).encode(), weights)
    with pytest.raises(ValueError, match="model.json .* is corrupted .*no weights.sha256"):
        load_model(path)


def test_wrong_number_of_weight_arrays(tmp_path):
    _, doc, weights = _saved_bytes(tmp_path)
    with np.load(io.BytesIO(weights), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    del arrays["weight/0003"]
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    new_weights = buf.getvalue()
    d = json.loads(doc)
    d["weights"]["sha256"] = hashlib.sha256(new_weights).hexdigest()
    path = _write_zip(tmp_path / "bad.sparkdl", json.dumps(d).encode(), new_weights)
    with pytest.raises(ValueError, match="holds 3 weight arrays, the architecture expects 4"):
        load_model(path)


def test_load_weights_wrong_count_and_garbage(tmp_path):
    model = _model()
    np.savez(tmp_path / "few.npz", **{"weight/0000": np.zeros((4, 6), np.float32)})
    with pytest.raises(ValueError, match="holds 1 weight arrays, the architecture expects 4"):
        model.load_weights(tmp_path / "few.npz")
    (tmp_path / "junk.npz").write_bytes(b"not an npz file at all" * 10)
    with pytest.raises(ValueError, match="cannot read the arrays"):
        model.load_weights(tmp_path / "junk.npz")


def test_load_weights_wrong_shape(tmp_path):
    model = _model()
    arrays = {f"weight/{i:04d}": w for i, w in enumerate(model.get_weights())}
    arrays["weight/0000"] = np.zeros((5, 6), np.float32)
    np.savez(tmp_path / "shape.npz", **arrays)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"array 0 should have shape \(4, 6\), received \(5, 6\)"):
        model.load_weights(tmp_path / "shape.npz")
    for a, b in zip(before, model.get_weights()):
        assert np.array_equal(a, b)


def test_directory_missing_a_file(tmp_path):
    model, _, _ = _trained()
    d = tmp_path / "d"
    d.mkdir()
    model.save(d)
    os.remove(d / "weights.npz")
    with pytest.raises(ValueError, match="not a complete sparkdl model.*weights.npz"):
        load_model(d)


def test_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved model"):
        load_model(tmp_path / "nope.sparkdl")
    with pytest.raises(FileNotFoundError, match="no file"):
        _model().load_weights(tmp_path / "nope.npz")
