"""The coordinator of a one-job fit, without Spark: tasks in threads ask for orders, carry
them out and report; retried tasks register again and pick up the open order; a partition
that already reported waits for the next one; stop reaches every task; reports (and pushes that
carry theirs) are checked before they are kept or applied."""
import numpy as np
import pytest

from sparkdl.distributed import exchange, protocol
from sparkdl.distributed.coordinator import Coordinator
from sparkdl.distributed.protocol import Connection, Op
from sparkdl.distributed.server import FrameServer

TOKEN = b"t" * 32


@pytest.fixture
def served():
    coordinator = Coordinator(partitions=[0, 1], poll=0.2, state_sizes=(2, 0))
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
        conn.request(Op.REPORT, {"partition": p, "attempt": 0, "seq": seq, "loss_sum": float(p)},
                     np.full(3, p, np.float64))
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
    first.request(Op.REPORT, {"partition": 0, "attempt": 0, "seq": seq})
    first.close()                                 # the task dies; Spark retries the stage
    retry, other = connect(server), connect(server)
    assert retry.request(Op.REGISTER, {"partition": 0}).meta["attempt"] == 1
    assert other.request(Op.REGISTER, {"partition": 1}).meta["attempt"] == 0
    # Partition 0 reported order 0 already: it waits for the next order; partition 1 gets it.
    assert retry.request(Op.NEXT, {"partition": 0, "after": -1}).meta["kind"] == "wait"
    assert next_order(other, 1, -1).meta["seq"] == seq
    # A second report of the same order changes nothing; one of a closed order is refused.
    other.request(Op.REPORT, {"partition": 1, "attempt": 0, "seq": seq})
    other.request(Op.REPORT, {"partition": 1, "attempt": 0, "seq": seq, "late": True})
    assert "late" not in coordinator.wait_reports(1.0)[1][0]
    coordinator.order("train", {"round": 1})
    with pytest.raises(protocol.RemoteError, match="order 0 from partition 1 is not open"):
        other.request(Op.REPORT, {"partition": 1, "attempt": 0, "seq": seq})
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
        assert conn.request(Op.REGISTER, {"partition": 1}).meta["attempt"] == 0
        conn.request(Op.REPORT, {"partition": 1, "attempt": 0, "seq": seq, "metric_shapes": [[2]],
                                 "worker_state": reported},
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
        conn.request(Op.REPORT, {"partition": 0, "attempt": 0, "seq": seq, "worker_state": reported},
                     np.array([3.0, 9.0]))
        again = conn.request(Op.REGISTER, {"partition": 0})
        np.testing.assert_array_equal(again.array, [3.0, 9.0])
        assert again.meta["attempt"] == 1


# ---- every report is checked before it is kept --------------------------------------------------------
STATE_META = {"slots": ["m"], "iterations": 3, "weights": False}


@pytest.mark.parametrize("edit, array, match", [
    ({"partition": 5}, None, r"expected a partition this fit trains \(\[0, 1\]\), received partition 5"),
    ({"attempt": 0}, None, r"expected a report of attempt 1 of partition 0 \(its newest registration\), "
                           r"received attempt 0"),
    ({"attempt": 2}, None, "received attempt 2"),
    ({"samples": 2**60}, None, r"expected samples between 0 and 9007199254740992 \(a sane bound\), "
                               r"received a 19-digit int"),
    ({"steps": -1}, None, "expected steps between 0"),
    ({}, [1.0, np.nan, 2.0], r"expected finite values in the report of partition 0, received 1 NaN or "
                             r"infinite of 3"),
    ({"metric_shapes": [[10**6]]}, None, r"expected 1000000 metric values in the report of partition 0, "
                                         r"received 3 values"),
    ({"loss_sum": "0.5"}, None, "expected loss_sum as a number, received '0.5'"),
    ({"worker_state": [1]}, None, "expected a worker state after 1 metric values for partition 0"),
    ({}, [1.0, 2.0, 3.0, 4.0], r"expected a worker state of 2 values for partition 0 \(1 slots\), received 3"),
    ({"worker_state": dict(STATE_META, weights=True)}, None,
     r"expected a worker state of 4 values for partition 0 \(1 slots, with weights\), received 2"),
    ({"worker_state": dict(STATE_META, slots="m")}, None, "expected a worker state naming its slots"),
    ({"metric_shapes": "x"}, None, "expected metric_shapes as a list of shapes"),
])
def test_a_report_is_refused_whole_and_the_real_one_is_kept(served, edit, array, match):
    """A report carrying a worker state (what a retried task takes back, and what checkpoints
    keep) from a phantom partition, a replaced or unregistered attempt, with absurd counts,
    non-finite values or metric shapes that do not fit is refused; the partition's task then
    reports and its state is the one handed back."""
    coordinator, server = served
    coordinator.worker_states = {p: (STATE_META, np.zeros(2, np.float32)) for p in (0, 1)}
    seq = coordinator.order("train", {"spec": {}}, None, [0, 1])
    real = {"partition": 0, "attempt": 1, "seq": seq, "samples": 6, "steps": 2, "metric_shapes": [[]],
            "worker_state": STATE_META}
    with connect(server) as conn:
        for _ in range(2):                       # the first task of partition 0 died: attempt 1 runs
            conn.request(Op.REGISTER, {"partition": 0})
        with pytest.raises(protocol.RemoteError, match=match):
            conn.request(Op.REPORT, dict(real, **edit), np.array(array or [5.0, 1.0, 2.0]))
        assert coordinator.wait_reports(0.01) is None
        conn.request(Op.REPORT, real, np.array([5.0, 1.0, 2.0]))
        conn.request(Op.REGISTER, {"partition": 1})
        conn.request(Op.REPORT, dict(real, partition=1, attempt=0), np.array([4.0, 7.0, 8.0]))
        reports = coordinator.wait_reports(1.0)
        assert reports is not None and reports[0][0] == real
        np.testing.assert_array_equal(reports[0][1], [5.0, 1.0, 2.0])
        again = conn.request(Op.REGISTER, {"partition": 0})
        assert again.meta["attempt"] == 2 and again.meta["worker_state"] == STATE_META
        np.testing.assert_array_equal(again.array, [1.0, 2.0])


def test_a_push_carrying_its_report_is_checked_before_the_push_is_applied():
    """The coordinator passes each registration to the round exchange; a push whose report is
    refused (another partition's, a replaced attempt's) changes neither the sum nor the
    reports, and the exchange refuses the replaced attempt's bare pushes too."""
    layout = exchange.Layout(("weights",), (3,), (True,))
    rounds = exchange.RoundExchange(layout, timeout=5)
    coordinator = Coordinator(rounds, partitions=[0, 1], poll=0.2)
    with FrameServer(coordinator, TOKEN, timeout=5.0) as server, connect(server) as conn:
        for _ in range(2):
            conn.request(Op.REGISTER, {"partition": 0})
        rounds.open_round(0, np.zeros(3, np.float32), {}, partitions={0: 4})
        seq = coordinator.order("train", {}, None, [0])
        push = {"round": 0, "partition": 0, "attempt": 1, "samples": 4}
        report = {"partition": 0, "attempt": 1, "seq": seq, "samples": 4, "metric_values": []}
        for bad_push, bad_report, match in (
                ({}, {"partition": 1}, "expected a report of the pushing partition 0, received one of partition 1"),
                ({}, {"attempt": 0}, "expected a report of attempt 1 of partition 0"),
                ({"attempt": 0}, {}, "received attempt 0, which a retry replaced"),
                ({}, {"metric_values": "x"}, "expected the report's metric_values as a list of numbers")):
            with pytest.raises(protocol.RemoteError, match=match):
                conn.request(Op.PUSH, dict(push, report=dict(report, **bad_report), **bad_push),
                             np.full(3, 9, np.float32))
        assert coordinator.wait_reports(0.01) is None
        reply = conn.request(Op.PUSH, dict(push, report=report), np.ones(3, np.float32))
        assert reply.meta["applied"] is True
        assert sorted(coordinator.wait_reports(1.0)) == [0]
        total, received = rounds.close_round()
    np.testing.assert_array_equal(total, [4.0, 4.0, 4.0])
    assert received == {0: 4}


def test_with_redo_a_retried_task_carries_out_the_open_order_again():
    """transport="allreduce": an order needs every partition's task at once, so a registering
    task gets the open order even if its partition reported it (and its report is dropped)."""
    coordinator = Coordinator(partitions=[0, 1], poll=0.2, redo=True)
    with FrameServer(coordinator, TOKEN, timeout=5.0) as server, connect(server) as conn:
        seq = coordinator.order("ring", {})
        conn.request(Op.REGISTER, {"partition": 0})
        assert next_order(conn, 0, -1).meta["seq"] == seq
        conn.request(Op.REPORT, {"partition": 0, "attempt": 0, "seq": seq, "loss_sum": 1.0})
        assert coordinator.missing() == [1]
        assert conn.request(Op.REGISTER, {"partition": 0}).meta["attempt"] == 1
        assert coordinator.missing() == [0, 1]
        assert next_order(conn, 0, -1).meta["seq"] == seq


def test_a_report_may_carry_a_worker_state_larger_than_the_servers_vector(monkeypatch):
    """Weights mode with Adam: the state holds two slots the size of the weights, sent in
    float64 after the metric states: four times the server's float32 vector, which a report
    may carry beyond the metric states' allowance."""
    from sparkdl.distributed import coordinator as module
    monkeypatch.setattr(module, "MAX_REPORT", 64)
    coordinator = Coordinator(partitions=[0], poll=0.2, state_sizes=(10, 0))
    server = FrameServer(coordinator, TOKEN, timeout=5.0)
    try:
        state = {"slots": ["m", "v"], "iterations": 4, "weights": False}
        coordinator.worker_states = {0: (dict(state, iterations=0), np.zeros(20, np.float32))}
        seq = coordinator.order("train", {"spec": {}}, None, [0])
        with connect(server) as conn:
            assert conn.request(Op.REGISTER, {"partition": 0}).meta["attempt"] == 0
            conn.request(Op.REPORT, {"partition": 0, "attempt": 0, "seq": seq, "metric_shapes": [[2]],
                                     "worker_state": state}, np.arange(22, dtype=np.float64))
        meta, array = coordinator.wait_reports(5.0)[0]
        assert meta["worker_state"] == state
        np.testing.assert_array_equal(array, np.arange(22))
    finally:
        server.close()
