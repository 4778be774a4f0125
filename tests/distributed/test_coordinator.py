"""The coordinator of a one-job fit, without Spark: tasks in threads ask for orders, carry
them out and report; retried tasks register again and pick up the open order; a partition
that already reported waits for the next one; stop reaches every task."""
import numpy as np
import pytest

from sparkdl.distributed import protocol
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


def test_a_retried_task_takes_back_its_partitions_own_state(served):
    """Workers that keep state (async modes, EASGD) get it back on REGISTER: as of the last
    completed order, or after the open one when their partition already reported it. An
    EASGD round reports the state before the exchange; the one handed back has the exchange
    against the round's center applied: ``x - alpha (x - center)``."""
    coordinator, server = served
    meta = {"slots": [], "iterations": 3, "weights": True}
    coordinator.worker_states = {0: (meta, np.full(2, 1.0, np.float32)), 1: (meta, np.full(2, 2.0, np.float32))}
    center = np.array([0.0, 4.0], np.float32)
    seq = coordinator.order("elastic", {"spec": {"alpha": 0.25}}, center, [0, 1])
    reported = dict(meta, iterations=5)
    with connect(server) as conn:
        conn.request(Op.REPORT, {"partition": 1, "seq": seq, "metric_shapes": [[2]], "worker_state": reported},
                     np.array([7.0, 8.0, 6.0, -4.0]))        # metric states, then the worker's state
    with connect(server) as conn:
        first = conn.request(Op.REGISTER, {"partition": 0})
        assert first.meta["worker_state"] == meta
        np.testing.assert_array_equal(first.array, [1.0, 1.0])
    with connect(server) as conn:
        second = conn.request(Op.REGISTER, {"partition": 1})
        assert second.meta["worker_state"] == reported
        np.testing.assert_array_equal(second.array, [6.0 - 0.25 * 6.0, -4.0 - 0.25 * (-8.0)])
    # An async epoch's report holds the state after it, handed back as it is.
    seq = coordinator.order("train", {"spec": {}}, None, [0, 1])
    with connect(server) as conn:
        conn.request(Op.REPORT, {"partition": 0, "seq": seq, "worker_state": reported}, np.array([3.0, 9.0]))
        again = conn.request(Op.REGISTER, {"partition": 0})
        np.testing.assert_array_equal(again.array, [3.0, 9.0])
        assert again.meta["attempt"] == 1
