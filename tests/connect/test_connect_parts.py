"""The parts of ``sparkdl.spark.connect`` that need no server: telling sessions apart, task
slots and the client's address from a session's settings, the model's size limit, and reading
a partition's block back from the converted frame's chunk rows."""
from __future__ import annotations

import numpy as np
import pytest

from sparkdl.spark import connect
from sparkdl.spark.frames import encode_block


class _Conf(dict):
    def get(self, key, default=None):
        return super().get(key, default)


class _Client:
    host = "localhost"


class _Session:
    """What the helpers read of a Connect session: ``conf`` and ``client.host``."""
    client = _Client()

    def __init__(self, **conf):
        self.conf = _Conf(conf)


_Session.__module__ = "pyspark.sql.connect.session"


def test_connect_objects_are_told_apart_by_their_class_without_importing_the_client(spark):
    assert connect.is_connect(_Session())
    assert not connect.is_connect(spark) and not connect.is_connect(spark.range(1))


@pytest.mark.parametrize("conf, slots", [
    ({"spark.master": "local[3]"}, 3),
    ({"spark.master": "local[4, 2]"}, 4),
    ({"spark.master": "local"}, 1),
    ({"spark.master": "local-cluster[2, 3, 1024]"}, 6),
    ({"spark.master": "local[4]", "spark.task.cpus": "2"}, 2),
])
def test_task_slots_come_from_the_master_and_task_cpus(conf, slots):
    assert connect.task_slots(_Session(**conf)) == slots


def test_default_workers_are_the_default_parallelism_cut_to_the_slots():
    assert connect.default_workers(_Session(**{"spark.master": "local[4]"})) == 4
    assert connect.default_workers(_Session(**{"spark.master": "local[4]", "spark.default.parallelism": "3"})) == 3
    assert connect.default_workers(_Session(**{"spark.master": "local[2]", "spark.default.parallelism": "8"})) == 2


def test_the_clients_address_is_the_setting_or_the_route_to_the_server():
    assert connect.client_address(_Session()) == ("127.0.0.1", "127.0.0.1")          # a server on loopback
    assert connect.client_address(_Session(**{connect.CLIENT_HOST: "10.1.2.3"})) == ("10.1.2.3", "10.1.2.3")
    assert connect.client_address(_Session(**{connect.CLIENT_HOST: "10.1.2.3", connect.CLIENT_BIND: "0.0.0.0"})) \
        == ("10.1.2.3", "0.0.0.0")


def test_a_model_too_large_for_a_connect_request_is_refused(monkeypatch):
    from tests.helpers import digits_mlp
    model = digits_mlp(seed=1)
    assert connect.ShippedModel(model, "SparkModel.fit").value()
    monkeypatch.setattr(connect, "MAX_SHIPPED_BYTES", 1024)
    with pytest.raises(ValueError, match=r"SparkModel.predict: on Spark Connect .* at most 0 MiB pickled, "
                                         r"received 0 MiB: use a classic SparkSession"):
        connect.ShippedModel(model, "SparkModel.predict")


def test_a_partitions_block_is_read_back_from_its_chunks_in_any_order(monkeypatch):
    import pyarrow as pa
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    y = np.arange(10, dtype=np.float32)
    data = encode_block(x, y)
    chunks = [data[a:a + 100] for a in range(0, len(data), 100)]
    order = list(reversed(range(len(chunks))))
    batches = [pa.RecordBatch.from_pydict({"seq": [i], "chunk": [chunks[i]]}) for i in order]
    (train, val), = connect.task_items(batches, 1, [0, 3], with_validation=True)
    np.testing.assert_array_equal(train[0][0], x[:7])
    np.testing.assert_array_equal(train[1], y[:7])
    np.testing.assert_array_equal(val[0][0], x[7:])
    np.testing.assert_array_equal(val[1], y[7:])
    (whole,) = connect.task_items(batches, 0, [0, 3], with_validation=False)
    np.testing.assert_array_equal(whole[0][0], x)
    assert connect.task_items([], 0, [0], with_validation=False) == []
