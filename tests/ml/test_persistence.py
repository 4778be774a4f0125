"""Saving and loading the pyspark.ml stages (``sparkdl.ml.persistence``): an unfitted estimator
round trip, a fitted model with its Params, defaults and training History, a fitted model
whose weights or history are missing, truncated or replaced, and a Pipeline with registered
user objects loaded in a new Python process."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sparkdl.ml import NNClassifier, NNClassifierModel
from tests.helpers import ROOT, assembled, digits_mlp


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


# ---- user objects ------------------------------------------------------------------------------------
def test_an_unregistered_user_layer_loads_within_a_custom_object_scope(spark, tmp_path):
    from sparkdl import layers, optimizers
    from sparkdl.models import Input, Sequential
    from sparkdl.saving import custom_object_scope
    from tests.custom_layers import Scale

    class Unregistered(Scale):
        pass
    model = Sequential([Input((4,)), Unregistered(init=0.25), layers.Dense(3, activation="softmax")])
    model.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    path = str(tmp_path / "stage")
    NNClassifierModel(model=model).save(path)
    with pytest.raises(ValueError, match="unknown layer class 'Unregistered'; register it with @register_serializable"):
        NNClassifierModel.load(path)
    with custom_object_scope({"Unregistered": Unregistered}):
        back = NNClassifierModel.load(path)
    assert type(back.getModel().layers[0]) is Unregistered
    np.testing.assert_array_equal(back.getModel().get_flat_weights(), model.get_flat_weights())


# ---- registered user objects in another process ---------------------------------------------------
_FEATURES = [f"f{i}" for i in range(6)]

# The second process: a new interpreter and a new Spark session that know the user objects only
# because they import the module defining them, as a user's job would.
_LOAD_AND_PREDICT = """
import json, sys
import numpy as np
import tests.custom_layers  # registers Scale and swish
from pyspark.ml import PipelineModel
from sparkdl.spark import get_session

pipeline_path, data_path, out_path = sys.argv[1:4]
spark = get_session("local[1]", app_name="sparkdl-load-test", conf={"spark.ui.enabled": "false"})
spark.sparkContext.setLogLevel("ERROR")
fitted = PipelineModel.load(pipeline_path)
rows = sorted(fitted.transform(spark.read.parquet(data_path)).collect(), key=lambda r: r.id)
np.save(out_path, np.array([[r.prediction] + list(r.probability.toArray()) for r in rows]))
model = fitted.stages[-1].getModel()
print(json.dumps([type(layer).__name__ for layer in model.layers] + [model.layers[0].activation.name]))
spark.stop()
"""


def _predictions(df):
    rows = sorted(df.collect(), key=lambda r: r.id)
    return np.array([[r.prediction] + list(r.probability.toArray()) for r in rows])


def test_a_pipeline_with_a_registered_layer_loads_and_predicts_identically_in_a_new_process(spark, tmp_path):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler

    from sparkdl import layers, optimizers
    from sparkdl.models import Input, Sequential
    from tests.custom_layers import Scale, swish

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    label = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    rows = [tuple(float(v) for v in r) + (float(t), i) for i, (r, t) in enumerate(zip(x, label))]
    df = spark.createDataFrame(rows, _FEATURES + ["label", "id"])
    data_path = str(tmp_path / "data.parquet")
    df.write.parquet(data_path)
    data = spark.read.parquet(data_path)

    model = Sequential([Input((6,)), layers.Dense(8, activation=swish), Scale(init=0.5),
                        layers.Dense(3, activation="softmax")])
    model.compile(optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    clf = NNClassifier(model=model, epochs=5, batchSize=32, numWorkers=1, seed=0)
    fitted = Pipeline(stages=[VectorAssembler(inputCols=_FEATURES, outputCol="features"), clf]).fit(data)
    trained = fitted.stages[-1].getModel()
    assert not np.allclose(trained.layers[1].params["w"], 0.5)      # the user layer trained
    expected = _predictions(fitted.transform(data))
    assert np.mean(expected[:, 0] == label) > 0.6      # above the largest class (about half)
    pipeline_path = str(tmp_path / "pipeline")
    fitted.write().overwrite().save(pipeline_path)

    out_path = str(tmp_path / "loaded.npy")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_LOAD_AND_PREDICT), pipeline_path, data_path,
                           out_path], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["Dense", "Scale", "Dense", "sparkdl_tests>swish"]
    np.testing.assert_array_equal(np.load(out_path), expected)
