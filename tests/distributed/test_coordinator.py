"""The coordinator of a one-job fit, without Spark: tasks in threads ask for orders, carry
them out and report; retried tasks register again and pick up the open order; a partition
that already reported waits for the next one; stop reaches every task."""
import threading

import numpy as np
import pytest

from sparkdl.distributed import exchange, fit_task, protocol, worker
from sparkdl.distributed.coordinator import Coordinator
from sparkdl.distributed.protocol import Connection, Op
from sparkdl.distributed.server import FrameServer

TOKEN = b"t" * 32


@pytest.fixture
def served():
    coordinator = Coordinator(partitions=[0, 1], poll=0.2)
    server = FrameServer(coordinator, TOKEN, timeout=5.0)
    yield coordinator, server
    server.close()


def connect(server):
    return Connection(server.address, TOKEN, 5.0)


def next_order(conn, partition, after):
    while True:
        frame = conn.request(Op.NEXT, {"partition": partition, "after": after})
        if frame.meta["kind"] != "wait":
            return frame


def test_orders_reach_the_expected_partitions_and_reports_come_back(served):
    coordinator, server = served
    seq = coordinator.order("evaluate", {"batch_size": 8}, np.arange(4, dtype=np.float32))
    conns = [connect(server) for _ in range(2)]
    assert [c.request(Op.REGISTER, {"partition": p}).meta["attempt"] for p, c in enumerate(conns)] == [0, 0]
    for p, conn in enumerate(conns):
        frame = next_order(conn, p, -1)
        assert frame.meta["seq"] == seq and frame.meta["kind"] == "evaluate"
        np.testing.assert_array_equal(frame.array, np.arange(4, dtype=np.float32))
        assert coordinator.wait_reports(0.05) is None or p == 1
        conn.request(Op.REPORT, {"partition": p, "seq": seq, "loss_sum": float(p)}, np.full(3, p, np.float64))
    reports = coordinator.wait_reports(1.0)
    assert sorted(reports) == [0, 1] and reports[1][0]["loss_sum"] == 1.0
    np.testing.assert_array_equal(reports[1][1], [1.0, 1.0, 1.0])
    # An order for partition 1 only: partition 0 keeps waiting, then stop reaches it.
    seq = coordinator.order("train", {}, expected=[1])
    assert next_order(conns[1], 1, seq - 1).meta["seq"] == seq
    assert conns[0].request(Op.NEXT, {"partition": 0, "after": seq - 1}).meta["kind"] == "wait"
    coordinator.stop()
    assert [next_order(c, p, seq).meta["kind"] for p, c in enumerate(conns)] == ["stop", "stop"]
    for conn in conns:
        conn.close()


def test_a_retried_task_registers_again_and_skips_what_its_partition_reported(served):
    coordinator, server = served
    seq = coordinator.order("train", {"round": 0})
    first = connect(server)
    assert first.request(Op.REGISTER, {"partition": 0}).meta["attempt"] == 0
    next_order(first, 0, -1)
    first.request(Op.REPORT, {"partition": 0, "seq": seq})
    first.close()                                 # the task dies; Spark retries the stage
    retry, other = connect(server), connect(server)
    assert retry.request(Op.REGISTER, {"partition": 0}).meta["attempt"] == 1
    assert other.request(Op.REGISTER, {"partition": 1}).meta["attempt"] == 0
    # Partition 0 reported order 0 already: it waits for the next order; partition 1 gets it.
    assert retry.request(Op.NEXT, {"partition": 0, "after": -1}).meta["kind"] == "wait"
    assert next_order(other, 1, -1).meta["seq"] == seq
    # A second report of the same order changes nothing; one of a closed order is refused.
    other.request(Op.REPORT, {"partition": 1, "seq": seq})
    other.request(Op.REPORT, {"partition": 1, "seq": seq, "late": True})
    assert "late" not in coordinator.wait_reports(1.0)[1][0]
    coordinator.order("train", {"round": 1})
    with pytest.raises(protocol.RemoteError, match="order 0 from partition 1 is not open"):
        other.request(Op.REPORT, {"partition": 1, "seq": seq})
    with pytest.raises(protocol.RemoteError, match=r"trains partitions \[0, 1\], not 5"):
        other.request(Op.REGISTER, {"partition": 5})
    retry.close()
    other.close()


def test_sync_task_loop_trains_pushes_and_reports_like_run_round():
    """run_fit_task in two threads against a coordinator wrapping the round exchange: the
    driver's mean equals the mean of run_round on each partition's block."""
    from sparkdl import layers
    from sparkdl.engine import optimizers
    from sparkdl.models import Sequential

    def model():
        net = Sequential([layers.Dense(3, input_shape=(4,), activation="softmax")])
        net.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
        return net

    rng = np.random.default_rng(0)
    blocks = [([rng.random((10, 4), dtype=np.float32)], rng.integers(0, 3, 10)) for _ in range(2)]
    driver = model()
    pull, push = exchange.round_layouts(driver, "weights")
    rounds = exchange.RoundExchange(push)
    coordinator = Coordinator(rounds, partitions=[0, 1], poll=0.2)
    with FrameServer(coordinator, TOKEN, timeout=5.0) as server:
        end = fit_task.FitEndpoint(server.address, TOKEN, 5.0, pull, push)
        nets = [model(), model()]
        threads = [threading.Thread(target=fit_task.run_fit_task, args=(nets[p], blocks[p], None, p, end))
                   for p in range(2)]
        for t in threads:
            t.start()
        spec = worker.RoundSpec(round=0, seed=1, batch_size=4, frequency="epoch", aggregate="weights")
        assert pull.names == ("weights",)          # plain SGD: no slots to average
        payload = pull.pack({"weights": driver.flat_weights})
        rounds.open_round(0, payload, {}, partitions=[0, 1])
        coordinator.order("train", {"spec": vars(spec), "iterations": 0, "label": "sparkdl round 1/1"}, payload)
        reports = coordinator.wait_reports(10.0)
        total, received = rounds.close_round()
        coordinator.stop()
        for t in threads:
            t.join(5)
    expected = [worker.run_round(model(), *blocks[p], spec, p, driver.flat_weights, None, {}, 0) for p in range(2)]
    assert received == {0: 10, 1: 10}
    mean = (total[:driver.flat_weights.size] / 20).astype(np.float32)
    np.testing.assert_allclose(mean, (expected[0].vector + expected[1].vector) / 2, rtol=1e-6, atol=1e-7)
    results = [fit_task.report_result(*reports[p]) for p in range(2)]
    assert [r.samples for r in results] == [10, 10] and [r.steps for r in results] == [3, 3]
    for got, want in zip(results, expected):
        assert got.loss_sum == pytest.approx(want.loss_sum)
        np.testing.assert_array_equal(got.metric_states[0], want.metric_states[0])
