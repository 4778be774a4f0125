"""Sync rounds average the partitions weighted by the rows they trained on, on every transport
(``sparkdl.spark.transports``): the socket data plane in one job per fit or a job per round,
and Spark's broadcast and treeReduce.

Two partitions of very different sizes (12 and 108 rows) each take one full-batch SGD step from
the same start. The sample-weighted mean of those steps is one full-batch step over all 120
rows, computed here in NumPy from the mse gradient of a linear model; the plain mean of the two
partitions' results would land elsewhere (checked, so the test can tell them apart)."""
import sys

import numpy as np
import pytest

from sparkdl import layers, optimizers
from sparkdl.distributed.protocol import Frame, Op
from sparkdl.models import Input, Sequential
from sparkdl.spark import SparkModel, transports
from sparkdl.spark.job import ClassicSite

ROWS = (12, 108)
LR = 0.1


@pytest.fixture(scope="module")
def rows():
    """120 rows of 4 features and 2 targets; the first 12 (partition 0) have targets from
    another linear map, so the two partitions pull the weights in different directions."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(sum(ROWS), 4)).astype(np.float32)
    w_true = rng.normal(size=(4, 2))
    y = x @ w_true + 0.5
    y[:ROWS[0]] = -3.0 * (x[:ROWS[0]] @ w_true) + 5.0
    return x, y.astype(np.float32)


def unequal_partitions(spark, x, y):
    """An RDD of (x, y) pairs with the first 12 rows in partition 0 and the other 108 in
    partition 1, placed by a partitioner on a block key (not by Spark's even splitting)."""
    keyed = [(0 if i < ROWS[0] else 1, (x[i], y[i])) for i in range(len(x))]
    return spark.sparkContext.parallelize(keyed, 2).partitionBy(2, lambda block: block).values()


def linear_model():
    model = Sequential([Input((4,)), layers.Dense(2)])
    model.compile(optimizers.SGD(learning_rate=LR), "mse")
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=(4, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)])
    return model


def sgd_step(w, b, x, y):
    """One plain SGD step on mean((x @ w + b - y) ** 2) over all entries, in float64."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    residual = x @ w + b - y
    scale = 2.0 / residual.size
    return w - LR * scale * x.T @ residual, b - LR * scale * residual.sum(axis=0)


@pytest.mark.parametrize("aggregate", ["weights", "gradients"])
@pytest.mark.parametrize("transport, execution", [("socket", "auto"), ("socket", "rounds"), ("spark", "auto")],
                         ids=["socket-one-job", "socket-job-per-round", "spark"])
def test_partitions_of_very_different_sizes_are_weighted_by_their_rows(spark, rows, transport, execution,
                                                                       aggregate):
    x, y = rows
    model = linear_model()
    w0, b0 = (v.astype(np.float64) for v in model.get_weights())
    expected = sgd_step(w0, b0, x, y)
    parts = [sgd_step(w0, b0, x[:ROWS[0]], y[:ROWS[0]]), sgd_step(w0, b0, x[ROWS[0]:], y[ROWS[0]:])]
    plain_mean = [(a + b) / 2 for a, b in zip(*parts)]
    assert max(np.abs(e - m).max() for e, m in zip(expected, plain_mean)) > 0.05

    history = SparkModel(model, num_workers=2, transport=transport, execution=execution, aggregate=aggregate,
                         seed=3).fit(unequal_partitions(spark, x, y), epochs=1, batch_size=128, verbose=0)
    assert history.rows_per_partition == list(ROWS)
    assert [r["samples"] for r in history.rounds] == [120]
    assert history.settings["execution"].startswith("one job per fit") == (execution == "auto" and
                                                                            transport == "socket")
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class _Conf(dict):
    def get(self, key, default=None):
        return super().get(key, default)


class _Context(ClassicSite):
    """Just what ``transports.serve`` reads of a classic session: its configuration."""

    def __init__(self, **conf):
        self._conf = _Conf(conf)

    @property
    def conf(self):
        return self._conf


class _Service:
    max_data = 16

    def handle(self, frame):
        return Frame(Op.OK, {})


def test_the_driver_s_server_limits_come_from_the_spark_conf():
    conf = {"spark.sparkdl.server.maxConnections": "3", "spark.sparkdl.server.handshakeTimeout": "0.5",
            "spark.sparkdl.server.memory": str(1 << 20)}
    server, _, _ = transports.serve(_Context(**conf), _Service(), "limited", None, 2)
    try:
        assert server.max_connections == 3 and server.handshake_timeout == 0.5
        assert server.memory.total == 1 << 20
    finally:
        server.close()
    server, _, _ = transports.serve(_Context(), _Service(), "defaults", None, 2)
    try:
        assert server.max_connections == 256 and server.handshake_timeout == 2.0
    finally:
        server.close()
    for key, value, expected in [("spark.sparkdl.server.maxConnections", "x", "an int >= 1"),
                                 ("spark.sparkdl.server.maxConnections", "0", "an int >= 1"),
                                 ("spark.sparkdl.server.handshakeTimeout", "nan", "a number >= 0.001"),
                                 ("spark.sparkdl.server.memory", "-5", "an int >= 1"),
                                 ("spark.sparkdl.server.port", "70000", "an int >= 0 and <= 65535")]:
        with pytest.raises(ValueError, match=f"expected {key} to be {expected}, received '{value}'"):
            transports.serve(_Context(**{key: value}), _Service(), "bad", None, 2)


# ---- the data plane's protection --------------------------------------------------------------------
def test_the_data_plane_s_protection_comes_from_the_spark_conf():
    security = transports.data_plane_security
    assert security(_Conf({})) == "integrity"
    assert security(_Conf({"spark.sparkdl.dataPlane.integrity": "FALSE"})) == "plain"
    assert security(_Conf({"spark.network.crypto.enabled": "false", "spark.ssl.enabled": "false"})) == "integrity"
    with pytest.raises(ValueError, match=r"expected spark.sparkdl.dataPlane.integrity to be true or false, "
                                         r"received 'yes'"):
        security(_Conf({"spark.sparkdl.dataPlane.integrity": "yes"}))
    server, _, _ = transports.serve(_Context(**{"spark.sparkdl.dataPlane.integrity": "false"}), _Service(),
                                    "plain", None, 2)
    try:
        assert server.security == "plain"
    finally:
        server.close()


@pytest.mark.parametrize("key", ["spark.network.crypto.enabled", "spark.ssl.enabled",
                                 "spark.sparkdl.dataPlane.encryption"])
def test_when_spark_encrypts_or_encryption_is_asked_for_the_data_plane_encrypts(key):
    pytest.importorskip("cryptography")
    conf = {key: "true", "spark.sparkdl.dataPlane.integrity": "false"}    # encryption authenticates anyway
    assert transports.data_plane_security(_Conf(conf)) == "encrypted"
    with pytest.raises(ValueError, match=r"expected spark.sparkdl.dataPlane.encryption to be true \(or unset\) "
                                         r"while Spark encrypts its own traffic \(spark.ssl.enabled=true\), "
                                         r"received 'false'"):
        transports.data_plane_security(_Conf({"spark.ssl.enabled": "true",
                                              "spark.sparkdl.dataPlane.encryption": "false"}))


def test_without_cryptography_an_encrypting_spark_fails_the_fit_before_any_work(spark, rows, monkeypatch):
    x, y = rows
    data = unequal_partitions(spark, x, y)
    conf = spark.sparkContext.getConf().set("spark.network.crypto.enabled", "true")
    monkeypatch.setattr(type(spark.sparkContext), "getConf", lambda self: conf)
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers", None)

    def no_work(*args, **kwargs):
        raise AssertionError("the fit started converting its data")
    monkeypatch.setattr(SparkModel, "_blocks", no_work)
    with pytest.raises(ImportError, match=r'spark.network.crypto.enabled=true.*pip install "sparkdl\[crypto\]"'):
        SparkModel(linear_model(), num_workers=2).fit(data, epochs=1, batch_size=128, verbose=0)


@pytest.mark.parametrize("mode, execution", [("sync", "auto"), ("sync", "rounds"), ("async", "rounds")])
def test_an_encrypted_data_plane_trains_the_same(spark, rows, monkeypatch, mode, execution):
    """With the data plane encrypted (as under spark.network.crypto.enabled), the tasks reach
    the driver's server in that mode, in every transport that uses it, and train the same."""
    pytest.importorskip("cryptography")
    x, y = rows
    reference = linear_model()
    SparkModel(reference, mode=mode, num_workers=2, execution=execution, seed=3).fit(
        unequal_partitions(spark, x, y), epochs=1, batch_size=128, verbose=0)
    opened = []

    class Recorded(transports.FrameServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)
    monkeypatch.setattr(transports, "FrameServer", Recorded)
    monkeypatch.setattr(transports, "data_plane_security", lambda conf: "encrypted")
    model = linear_model()
    SparkModel(model, mode=mode, num_workers=2, execution=execution, seed=3).fit(
        unequal_partitions(spark, x, y), epochs=1, batch_size=128, verbose=0)
    assert [s.security for s in opened] == ["encrypted"]
    assert opened[0].stats["requests"] > 0 and opened[0].stats["refused"] == 0
    if mode == "sync":
        for got, want in zip(model.get_weights(), reference.get_weights()):
            np.testing.assert_array_equal(got, want)
