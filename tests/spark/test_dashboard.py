"""The live dashboard of SparkModel.fit on the local[2] session: it serves each round as it is
done (the numbers of ``history.rounds``), every epoch's logs, and stops with the fit; with
"keep" the final state stays, with the parameter server's pushes and ssp's staleness."""
import urllib.error
import urllib.request

import pytest

from sparkdl import callbacks, dashboard
from sparkdl.spark import SparkModel
from tests.dashboard.helpers import state, wait_for
from tests.helpers import digits_mlp, one_hot, vector_frame


class Reader(callbacks.Callback):
    """The dashboard's state at the end of each epoch, once it holds that epoch's rounds."""

    def __init__(self, spark_model):
        super().__init__()
        self.spark_model, self.states = spark_model, []

    def on_epoch_end(self, epoch, logs=None):
        url, rounds = self.spark_model.dashboard_url, len(self.spark_model.history.rounds)
        self.states.append(wait_for(lambda: (lambda s: s["next"] == rounds and s)(state(url)),
                                    f"{rounds} rounds"))


def test_sync_fit_serves_its_rounds_and_stops_after(spark, data):
    df = vector_frame(spark, data["x"][:256], one_hot(data["y"][:256], 10), partitions=2)
    spark_model = SparkModel(digits_mlp(), num_workers=2, frequency=2)
    reader = Reader(spark_model)
    history = spark_model.fit(df, epochs=2, batch_size=32, verbose=0, callbacks=[reader], dashboard=True,
                              validation_split=0.25)
    first, second = reader.states
    assert first["status"] == "running" and first["fit"]["who"] == "SparkModel.fit"
    assert first["fit"]["mode"] == "sync" and first["fit"]["unit"] == "round"
    per_epoch = first["fit"]["points_per_epoch"]
    assert per_epoch == len(history.rounds) // 2 and first["progress"]["points_total"] == 2 * per_epoch
    assert len(first["points"]) == per_epoch and len(second["points"]) == 2 * per_epoch
    for point, info in zip(second["points"], history.rounds):
        assert point["round"] == info["round"] and point["samples"] == info["samples"]
        assert point["compute_seconds"] == info["compute_seconds"]
        assert point["overhead_seconds"] == info["overhead_seconds"]
        assert point["bytes"] == info["bytes"] > 0 and point["loss"] > 0
    assert [p["epoch"] for p in second["points"]] == [1] * per_epoch + [2] * per_epoch
    assert second["epochs"][0]["logs"] == {k: v[0] for k, v in history.history.items()}
    assert spark_model.dashboard_url == spark_model.model.dashboard_url
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(spark_model.dashboard_url, timeout=10)


def test_ssp_fit_keeps_its_final_state_with_pushes_and_staleness(spark, data):
    df = vector_frame(spark, data["x"][:256], one_hot(data["y"][:256], 10), partitions=2)
    spark_model = SparkModel(digits_mlp(), mode="ssp", staleness=1, frequency="batch", num_workers=2)
    try:
        history = spark_model.fit(df, epochs=2, batch_size=32, verbose=0, dashboard="keep")
        s = state(spark_model.dashboard_url)
        assert s["status"] == "finished" and s["fit"]["mode"] == "ssp" and s["next"] == len(history.rounds) == 2
        for point, info in zip(s["points"], history.rounds):
            assert point["pushes"] == info["pushes"] == 8 and point["duplicate_pushes"] == 0
            assert point["pulls"] == info["pulls"] >= 8
            assert 0 <= point["staleness"] == info["staleness"] <= 1
            assert point["bytes"] == info["bytes"] > 0
        assert [e["logs"]["loss"] for e in s["epochs"]] == history.history["loss"]
    finally:
        dashboard.close_dashboards()


def test_a_bad_dashboard_option_fails_before_any_job(spark):
    with pytest.raises(TypeError, match=r"SparkModel.fit: expected dashboard=False, True or 'keep', "
                                        r"received int: 2"):
        SparkModel(digits_mlp()).fit(data="not even data", dashboard=2)
