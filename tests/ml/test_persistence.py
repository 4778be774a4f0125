"""Saving and loading the pyspark.ml stages (``sparkdl.ml.persistence``): an unfitted estimator
round trip, and a fitted model whose weights are missing, truncated or replaced."""
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
