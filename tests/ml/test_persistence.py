"""Saving and loading the pyspark.ml stages (``sparkdl.ml.persistence``): an unfitted estimator
round trip, a fitted model with its Params, defaults and training History, and a fitted model
whose weights or history are missing, truncated or replaced."""
import json
import os

import numpy as np
import pytest

from sparkdl.ml import NNClassifier, NNClassifierModel
from tests.helpers import assembled, digits_mlp


def test_unfitted_estimator_saves_and_loads(spark, tmp_path):
    model = digits_mlp(seed=4, loss="sparse_categorical_crossentropy")
    clf = NNClassifier(model=model, epochs=3, learningRate=0.01, frequency="2")
    clf.save(str(tmp_path / "clf"))
    back = NNClassifier.load(str(tmp_path / "clf"))
    assert (back.getEpochs(), back.getLearningRate(), back.getFrequency()) == (3, 0.01, "2")
    assert back.uid == clf.uid
    assert not back.isDefined(back.numWorkers) and not back.isSet(back.batchSize)
    np.testing.assert_array_equal(back.getModel().get_flat_weights(), clf.getModel().get_flat_weights())


def test_loading_with_missing_or_corrupted_weights(tmp_path, digits_df):
    train, _ = digits_df
    fitted = NNClassifier(model=digits_mlp(loss="sparse_categorical_crossentropy"), epochs=0).fit(assembled(train))
    path = str(tmp_path / "m")
    fitted.save(path)
    weights = os.path.join(path, "model", "weights.npz")
    data = open(weights, "rb").read()
    with open(weights, "wb") as f:
        f.write(data[: len(data) // 2])
    crc = os.path.join(path, "model", ".weights.npz.crc")
    if os.path.exists(crc):
        os.remove(crc)            # Hadoop's own checksum would otherwise object first
    with pytest.raises(ValueError, match="weights.npz .* corrupted or truncated"):
        NNClassifierModel.load(path)
    os.remove(weights)
    with pytest.raises(ValueError, match="missing file .*weights.npz"):
        NNClassifierModel.load(path)


def test_weights_rewritten_as_a_valid_archive_are_refused_by_their_sha256(tmp_path, digits_df):
    """Other weights in a well-formed weights.npz: only the SHA-256 in model.json can tell."""
    train, _ = digits_df
    fitted = NNClassifier(model=digits_mlp(loss="sparse_categorical_crossentropy"), epochs=0).fit(assembled(train))
    path = str(tmp_path / "m")
    fitted.save(path)
    weights = os.path.join(path, "model", "weights.npz")
    with np.load(weights, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["weight/0000"] = arrays["weight/0000"] + np.float32(1.0)
    np.savez(weights, **arrays)
    crc = os.path.join(path, "model", ".weights.npz.crc")
    if os.path.exists(crc):
        os.remove(crc)            # Hadoop's own checksum would otherwise object first
    with pytest.raises(ValueError, match=r"weights\.npz .* is corrupted or truncated \(its SHA-256"):
        NNClassifierModel.load(path)


def default(stage, name):
    """The default of Param ``name`` (pyspark has no public getter for it): cleared, the value is it."""
    unset = stage.copy()
    unset.clear(unset.getParam(name))
    return unset.getOrDefault(name)


def same_params(a, b):
    """Whether two stages have the same Params set, the same defaults and the same values."""
    assert [p.name for p in a.params] == [p.name for p in b.params]
    for p in a.params:
        assert a.isSet(p.name) == b.isSet(p.name), p.name
        assert a.hasDefault(p.name) == b.hasDefault(p.name), p.name
        if a.hasDefault(p.name):
            assert default(a, p.name) == default(b, p.name), p.name
        if a.isDefined(p.name):
            assert a.getOrDefault(p.name) == b.getOrDefault(p.name), p.name
    return True


def test_a_fitted_model_keeps_params_defaults_and_history(tmp_path, digits_df):
    train, _ = digits_df
    fitted = NNClassifier(model=digits_mlp(loss="sparse_categorical_crossentropy"), epochs=2, numWorkers=2,
                          learningRate=0.05, frequency="3", thresholds=[1.0] * 9 + [0.5],
                          probabilityCol="p").fit(assembled(train))
    path = str(tmp_path / "m")
    fitted.save(path)
    back = NNClassifierModel.load(path)
    assert same_params(fitted, back)
    assert back.getThresholds() == [1.0] * 9 + [0.5] and back.getProbabilityCol() == "p"
    assert not back.isDefined(back.checkpointDir)
    history, loaded = fitted.history, back.history
    assert len(loaded.history["loss"]) == 2 and loaded.history == history.history
    assert loaded.epoch == history.epoch == [0, 1]
    assert loaded.rounds == history.rounds and len(loaded.rounds) > 0
    assert loaded.settings["mode"] == "sync" and loaded.settings["frequency"] == 3
    assert loaded.rows_per_partition == history.rows_per_partition
    # A stage saved without a history (or by a version that wrote none) loads with None.
    os.remove(os.path.join(path, "history.json"))
    assert NNClassifierModel.load(path).history is None
    NNClassifierModel(model=fitted.getModel()).save(str(tmp_path / "bare"))
    assert not os.path.exists(str(tmp_path / "bare" / "history.json"))


def test_a_corrupted_history_is_reported(tmp_path, digits_df):
    train, _ = digits_df
    fitted = NNClassifier(model=digits_mlp(loss="sparse_categorical_crossentropy"), epochs=0).fit(assembled(train))
    path = str(tmp_path / "m")
    fitted.save(path)
    history = os.path.join(path, "history.json")
    for content, match in (("{not json", "invalid JSON"), (json.dumps([1, 2]), "expected an object")):
        with open(history, "w") as f:
            f.write(content)
        crc = os.path.join(path, ".history.json.crc")
        if os.path.exists(crc):
            os.remove(crc)            # Hadoop's own checksum would otherwise object first
        with pytest.raises(ValueError, match=f"NNClassifierModel.load: .*history.json' is corrupted .*{match}"):
            NNClassifierModel.load(path)
