"""Saving and loading the pyspark.ml stages on a Spark Connect session: a model fitted on a
Connect server's DataFrame round trips through the client's files with its Params, weights,
predictions and History; a folder saved on Connect loads on the classic session and one
saved on classic loads on Connect; overwrite and an existing path behave as on classic; a
URI the client cannot write is refused before anything is written; and a Pipeline and a
PipelineModel holding an NN stage round trip on Connect."""
from __future__ import annotations

import os

import numpy as np
import pytest

from sparkdl.ml import NNClassifier, NNClassifierModel
from sparkdl.spark import from_arrays
from tests.helpers import digits_mlp

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    return (x / 16).astype(np.float32), y


@pytest.fixture(scope="module")
def fitted(remote, digits):
    """An NNClassifierModel fitted on the Connect session's digits (2 epochs), once for the file."""
    before = os.environ.get("SPARK_CONNECT_MODE_ENABLED")
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"      # a module's fixture runs before connect_mode
    try:
        x, y = digits
        df = from_arrays(remote, x[:1200], y[:1200], num_partitions=2)
        stage = NNClassifier(model=digits_mlp(loss="sparse_categorical_crossentropy"), epochs=2, batchSize=32,
                             numWorkers=2, frequency="4", learningRate=0.05, probabilityCol="p")
        return stage.fit(df)
    finally:
        if before is None:
            os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
        else:
            os.environ["SPARK_CONNECT_MODE_ENABLED"] = before


def _val(session, digits):
    x, y = digits
    return from_arrays(session, x[1200:1400], y[1200:1400])


def _predictions(model, df):
    rows = model.transform(df).select("prediction", "p").collect()
    return np.array([[r[0]] + list(r[1].toArray()) for r in rows])


def _same_stage(back, stage):
    assert type(back) is type(stage) and back.uid == stage.uid
    for p in stage.params:
        assert back.isSet(p.name) == stage.isSet(p.name), p.name
        assert back.hasDefault(p.name) == stage.hasDefault(p.name), p.name
        if stage.isDefined(p.name) and p.name != "model":
            assert back.getOrDefault(p.name) == stage.getOrDefault(p.name), p.name
    for a, b in zip(back.getModel().get_weights(), stage.getModel().get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    history, loaded = getattr(stage, "history", None), getattr(back, "history", None)
    if history is None:
        assert loaded is None
    else:
        assert loaded.history == history.history and loaded.epoch == history.epoch
        assert loaded.rounds == history.rounds and loaded.settings == history.settings
    return True


def _layout(path):
    """The files of a saved stage, Spark's checksums left out and the part file's uuid masked."""
    names = set()
    for root, _, files in os.walk(path):
        for name in files:
            if name.endswith(".crc"):
                continue
            if name.startswith("part-00000-") and name.endswith("-c000.txt"):
                name = "part-00000-*-c000.txt"
            names.add(os.path.relpath(os.path.join(root, name), path))
    return sorted(names)


def test_a_model_fitted_on_connect_saves_and_loads_with_its_predictions_and_history(remote, fitted, digits,
                                                                                   tmp_path):
    path = str(tmp_path / "m")
    fitted.save(path)
    assert _layout(path) == ["history.json", "metadata/_SUCCESS", "metadata/part-00000-*-c000.txt",
                             "model/model.json", "model/weights.npz"]
    back = NNClassifierModel.load(path)
    assert _same_stage(back, fitted)
    assert back.getProbabilityCol() == "p" and back.getFrequency() == "4"
    assert len(back.history.history["loss"]) == 2
    val = _val(remote, digits)
    np.testing.assert_array_equal(_predictions(back, val), _predictions(fitted, val))


def test_overwrite_and_an_existing_path_behave_on_connect_as_on_classic(remote, fitted, tmp_path):
    from pyspark.errors import AnalysisException
    path = str(tmp_path / "m")
    fitted.save(path)
    with pytest.raises(AnalysisException, match=r"PATH_ALREADY_EXISTS.*metadata already exists.*overwrite"):
        fitted.save(path)
    stale = tmp_path / "m" / "model" / "stale.bin"
    stale.write_bytes(b"left by an earlier save")
    bare = NNClassifierModel(model=fitted.getModel())
    bare.write().overwrite().save(path)
    assert not stale.exists() and not (tmp_path / "m" / "history.json").exists()
    assert _same_stage(NNClassifierModel.load(path), bare)
    # An existing folder without a stage in it takes one, as on classic.
    (tmp_path / "empty").mkdir()
    fitted.save(str(tmp_path / "empty"))
    assert NNClassifierModel.load(str(tmp_path / "empty")).uid == fitted.uid


def test_a_folder_saved_on_connect_loads_on_classic_and_one_saved_on_classic_loads_on_connect(
        spark, remote, classic, fitted, tmp_path):
    from_connect, from_classic = str(tmp_path / "connect"), str(tmp_path / "classic")
    fitted.save(from_connect)
    with classic():
        assert _same_stage(NNClassifierModel.load(from_connect), fitted)
        fitted.write().save(from_classic)
        estimator = NNClassifier(model=digits_mlp(seed=3), epochs=3, learningRate=0.01)
        estimator.save(str(tmp_path / "estimator"))
    assert _layout(from_classic) == _layout(from_connect)
    crc = [name for _, _, files in os.walk(from_connect) for name in files if name.endswith(".crc")]
    assert crc == []              # the client wrote it, not Hadoop's FileSystem
    assert _same_stage(NNClassifierModel.load(from_classic), fitted)
    assert _same_stage(NNClassifier.load(str(tmp_path / "estimator")), estimator)
    # file: URIs name the same folders
    assert NNClassifierModel.load("file://" + from_classic).uid == fitted.uid
    assert NNClassifierModel.load("file:" + from_connect).uid == fitted.uid


@pytest.mark.parametrize("uri", ["hdfs://namenode:8020/models/m", "s3a://bucket/models/m", "file://otherhost/m"])
def test_a_uri_the_client_cannot_write_is_refused_on_connect_before_anything_is_written(remote, fitted,
                                                                                        tmp_path, uri):
    message = (r"on a Spark Connect session .* expects a local path or a file: URI .*got '"
               + uri.split("/")[0] + r".*save it from a classic session .* or save it to a local path")
    before = sorted(os.listdir(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)            # a URI mistaken for a relative path would land here
    try:
        with pytest.raises(ValueError, match=message):
            fitted.write().overwrite().save(uri)
        with pytest.raises(ValueError, match=message):
            fitted.save(uri)
        with pytest.raises(ValueError, match=message):
            NNClassifierModel.load(uri)
    finally:
        os.chdir(cwd)
    assert sorted(os.listdir(tmp_path)) == before


def test_a_pipeline_and_a_pipeline_model_with_an_nn_stage_round_trip_on_connect(spark, remote, classic, fitted,
                                                                               digits, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    pipeline_model = PipelineModel(stages=[fitted])
    path = str(tmp_path / "pipeline_model")
    pipeline_model.write().overwrite().save(path)
    pipeline_model.write().overwrite().save(path)      # over the first save
    back = PipelineModel.load(path)
    assert back.uid == pipeline_model.uid and _same_stage(back.stages[0], fitted)
    val = _val(remote, digits)
    np.testing.assert_array_equal(_predictions(back, val)[:, 0], _predictions(fitted, val)[:, 0])
    with classic():
        assert _same_stage(PipelineModel.load(path).stages[0], fitted)

    estimator = NNClassifier(model=digits_mlp(seed=5), epochs=2, batchSize=16)
    pipeline = Pipeline(stages=[estimator])
    pipeline.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = Pipeline.load(str(tmp_path / "pipeline"))
    assert loaded.uid == pipeline.uid and _same_stage(loaded.getStages()[0], estimator)
