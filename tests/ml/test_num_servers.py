"""The ``numServers`` Param: SparkModel's ``num_servers`` (parameter server shards hosted by the
fit's tasks) on the stages. It round-trips through setParams, copy and save/load; settings that
cannot shard are refused with SparkModel's rules, worded for the stage, before any Spark job;
and a small click model with an Embedding table trains against two shards."""

import numpy as np
import pytest

from sparkdl import layers
from sparkdl.data.synthetic import click_data
from sparkdl.engine import optimizers
from sparkdl.engine.random import set_random_seed
from sparkdl.ml import NNClassifier, NNClassifierModel, NNEstimator, NNModel
from sparkdl.models import Sequential
from sparkdl.spark import from_arrays
from tests.helpers import assembled, digits_mlp, exact_auc, jobs_of_failing_call

NUM_IDS = 64
FIELDS = 9          # click_data's 6 hashed fields and 3 hashed crosses


def click_model(seed=0, lr=0.5):
    set_random_seed(seed)
    model = Sequential([layers.Embedding(NUM_IDS, 4, input_shape=(FIELDS,)), layers.Flatten(),
                        layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=optimizers.SGD(lr), loss="binary_crossentropy")
    return model


def dense_model():
    return digits_mlp(loss="sparse_categorical_crossentropy")


@pytest.fixture(scope="module")
def clicks(spark):
    train, test = click_data(400, seed=0, num_ids=NUM_IDS), click_data(300, seed=0, num_ids=NUM_IDS)
    assert train.ids.shape == (400, FIELDS)
    return {"df": from_arrays(spark, train.ids, train.label, num_partitions=2).cache(), "test": test}


# ---- the Param -------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", [NNEstimator, NNModel, NNClassifier, NNClassifierModel], ids=lambda s: s.__name__)
def test_num_servers_defaults_to_the_drivers_server_and_is_in_every_signature(stage):
    instance = stage()
    assert instance.getNumServers() == 0 and instance.hasDefault("numServers") and not instance.isSet("numServers")
    given = stage(model=click_model(), mode="async", numWorkers=2, numServers=2)
    assert given.getNumServers() == 2 and given.isSet("numServers")
    if hasattr(stage, "setParams"):
        assert stage().setParams(mode="hogwild", numServers=1).getNumServers() == 1


def test_num_servers_round_trips_through_set_params_getter_and_copy():
    clf = NNClassifier(model=click_model(), mode="async", numWorkers=2)
    assert clf.setParams(numServers=2) is clf and clf.getNumServers() == 2
    assert clf.setNumServers(1) is clf and clf.getNumServers() == 1
    copied = clf.copy()
    assert copied.getNumServers() == 1 and copied.getModel() is clf.getModel()
    assert clf.copy({clf.numServers: 2}).getNumServers() == 2 and clf.getNumServers() == 1
    assert NNEstimator(model=click_model(), mode="ssp", numServers=2).getNumServers() == 2


def test_num_servers_is_saved_and_loaded(spark, tmp_path):
    clf = NNClassifier(model=click_model(), mode="ssp", staleness=1, numWorkers=2, numServers=2)
    clf.save(str(tmp_path / "clf"))
    back = NNClassifier.load(str(tmp_path / "clf"))
    assert back.getNumServers() == 2 and back.isSet("numServers") and back.getMode() == "ssp"
    default = NNEstimator(model=click_model())
    default.save(str(tmp_path / "est"))
    loaded = NNEstimator.load(str(tmp_path / "est"))
    assert loaded.getNumServers() == 0 and not loaded.isSet("numServers")


# ---- settings that cannot shard ----------------------------------------------------------------------
@pytest.mark.parametrize("model, settings, match", [
    (click_model, {"mode": "sync"}, r"numServers=1 shards the parameter server of modes async, hogwild, ssp, "
                                    r"and the rounds of mode 'sync' with aggregate='gradients'; received "
                                    r"mode='sync' with aggregate='weights': use aggregate='gradients', or "
                                    r"numServers=0"),
    (click_model, {"mode": "easgd"}, r"numServers=1 shards .* received mode='easgd'"),
    (click_model, {"mode": "adag"}, r"numServers=1 shards .* received mode='adag'"),
    (dense_model, {"mode": "async"}, r"numServers=1 shards the rows of a model's Embedding tables; the model "
                                     r"has none: use numServers=0"),
])
def test_settings_that_cannot_shard_are_refused_with_the_stages_name(model, settings, match):
    for stage in (NNClassifier, NNClassifierModel):
        with pytest.raises(ValueError, match=f"^{stage.__name__}: {match}"):
            stage(model=model(), numServers=1, **settings)
    with pytest.raises(ValueError, match=f"^NNClassifier: {match}"):
        NNClassifier(model=model(), **settings).setParams(numServers=1)
    with pytest.raises(ValueError, match=f"^NNEstimator: {match}"):
        NNEstimator(model=model(), numServers=1, **settings)


def test_more_servers_than_workers_is_refused():
    with pytest.raises(ValueError, match=r"^NNClassifier: expected numServers <= numWorkers=2 \(each shard lives "
                                         r"in a training task\), received numServers=3"):
        NNClassifier(model=click_model(), mode="async", numWorkers=2, numServers=3)
    # numWorkers unset: the count is the fit's to check, against the partitions that train.
    assert NNClassifier(model=click_model(), mode="async", numServers=3).getNumServers() == 3


def test_refused_combinations_reached_by_setters_or_a_param_map_fail_before_any_spark_job(spark, clicks,
                                                                                         digits_df):
    """A setter checks its own value only; fit checks how the Params go together first."""
    df = clicks["df"]
    by_setter = NNClassifier(model=click_model(), numWorkers=2).setNumServers(1)       # mode sync
    assert jobs_of_failing_call(spark, lambda: by_setter.fit(df), ValueError,
                                "^NNClassifier: numServers=1 shards the parameter server") == 0
    grid = NNClassifier(model=click_model(), numWorkers=2)
    assert jobs_of_failing_call(spark, lambda: grid.fit(df, {grid.numServers: 1}), ValueError,
                                "received mode='sync' with aggregate='weights'") == 0
    no_tables = NNClassifier(model=click_model(), mode="async", numWorkers=2, numServers=1).setModel(dense_model())
    train, _ = digits_df
    assert jobs_of_failing_call(spark, lambda: no_tables.fit(assembled(train)), ValueError,
                                "^NNClassifier: numServers=1 shards the rows of a model's Embedding tables") == 0
    too_many = NNEstimator(model=click_model(), mode="async", numServers=2).setNumWorkers(1)
    assert jobs_of_failing_call(spark, lambda: too_many.fit(df), ValueError,
                                "^NNEstimator: expected numServers <= numWorkers=1") == 0


# ---- a fit against shards ------------------------------------------------------------------------------
def test_a_classifier_trains_against_two_shards_and_keeps_num_servers(clicks, tmp_path):
    test = clicks["test"]
    template = click_model()
    before = exact_auc(test.label, template.predict(test.ids).reshape(-1))
    start = template.get_flat_weights().copy()
    clf = NNClassifier(model=template, mode="async", frequency=4, numWorkers=2, numServers=2, epochs=2,
                       batchSize=16)
    fitted = clf.fit(clicks["df"])
    history = fitted.history
    assert history.settings["num_servers"] == 2 and history.settings["mode"] == "async"
    assert fitted.getNumServers() == 2
    # Every step of both partitions pushed: 200 rows of 16 -> 13 steps, 4 per push -> 4 pushes each.
    assert [r["pushes"] for r in history.rounds] == [8, 8]
    losses = history.history["loss"]
    assert losses[-1] < losses[0], losses
    # The untrained model ranks at chance (0.45 here); the true click probabilities reach 0.89.
    after = exact_auc(test.label, fitted.getModel().predict(test.ids).reshape(-1))
    assert after > before + 0.15 and after > 0.65, (float(before), float(after))
    np.testing.assert_array_equal(template.get_flat_weights(), start)      # the template is not trained
    fitted.save(str(tmp_path / "fitted"))
    back = NNClassifierModel.load(str(tmp_path / "fitted"))
    assert back.getNumServers() == 2 and back.history.settings["num_servers"] == 2
