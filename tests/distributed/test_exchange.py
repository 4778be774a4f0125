"""The sync rounds' data plane (``sparkdl.distributed.exchange``) without Spark: the layout of a
round's vector, and the driver's exchange summing pushes weighted by their samples, in partition
order, at most once per partition, refusing what does not belong to the open round (a partition
it does not expect, a replaced attempt, another sample count, non-finite values) before anything
changes."""
import threading

import numpy as np
import pytest

from sparkdl import layers, optimizers
from sparkdl.distributed import exchange, protocol
from sparkdl.distributed.protocol import Op
from sparkdl.distributed.server import FrameServer
from sparkdl.models import Input, Sequential


# ---- layouts ------------------------------------------------------------------------------------
LAYOUT = exchange.Layout(("weights", "state", "slot:m"), (3, 1, 2), (True, True, False))


def test_layout_bounds_are_consecutive_segments():
    assert LAYOUT.size == 6
    assert list(LAYOUT.bounds()) == [("weights", 0, 3, True), ("state", 3, 4, True), ("slot:m", 4, 6, False)]


def test_split_gives_views_of_each_segment():
    vector = np.arange(6, dtype=np.float32)
    parts = LAYOUT.split(vector)
    assert list(parts) == ["weights", "state", "slot:m"]
    assert [p.tolist() for p in parts.values()] == [[0, 1, 2], [3], [4, 5]]
    assert all(np.shares_memory(p, vector) for p in parts.values())


def test_pack_lays_the_parts_back_to_back_flattened_into_the_given_buffer():
    parts = {"slot:m": np.array([[7.0, 8.0]]), "weights": np.array([[1.0], [2.0], [3.0]]),
             "state": np.array(4.0)}
    out = np.full(6, np.nan, np.float32)
    packed = LAYOUT.pack(parts, out=out)
    assert packed is out and packed.dtype == np.float32
    assert packed.tolist() == [1, 2, 3, 4, 7, 8]
    assert LAYOUT.pack(parts).tolist() == [1, 2, 3, 4, 7, 8]
    vector = np.arange(6, dtype=np.float32) * 1.5
    np.testing.assert_array_equal(LAYOUT.pack(LAYOUT.split(vector)), vector)


def _model_with_state():
    """Dense(5 -> 4), BatchNorm(4), Dense(4 -> 2): 24 + 8 + 10 = 42 weights, 8 statistics."""
    model = Sequential([Input((5,)), layers.Dense(4), layers.BatchNorm(), layers.Dense(2)])
    model.compile(optimizers.Adam(), "mse")
    return model


def test_round_layouts_for_model_averaging_carry_weights_state_and_slots_weighted():
    pull, push = exchange.round_layouts(_model_with_state(), "weights")
    assert push == pull
    assert pull.names == ("weights", "state", "slot:m", "slot:v")
    assert pull.sizes == (42, 8, 42, 42) and pull.weighted == (True, True, True, True)


def test_round_layouts_for_gradients_push_unweighted_sums_and_no_slots():
    pull, push = exchange.round_layouts(_model_with_state(), "gradients")
    assert pull.names == ("weights", "state") and pull.weighted == (True, True)
    assert push.names == ("gradients", "state") and push.sizes == (42, 8)
    assert push.weighted == (False, True)      # gradient sums are summed; statistics averaged


# ---- the round exchange ------------------------------------------------------------------------------
def exchange_server(sizes=(5, 3), weighted=(True, True), max_inflight=2):
    layout = exchange.Layout(("weights", "state")[:len(sizes)], sizes, weighted)
    rounds = exchange.RoundExchange(layout, max_inflight=max_inflight, timeout=5)
    token = protocol.new_token()
    server = FrameServer(rounds, token, timeout=5)
    return rounds, server, exchange.Endpoint(server.address, token, 5.0, layout, layout)


def test_concurrent_pushes_sum_exactly_and_duplicates_count_once():
    rounds, server, end = exchange_server(max_inflight=1)
    try:
        rng = np.random.default_rng(0)
        pushed = {p: rng.integers(-1000, 1000, 8).astype(np.float32) for p in range(4)}
        samples = {p: int(rng.integers(1, 50)) for p in range(4)}
        rounds.open_round(4, np.arange(8, dtype=np.float32), {"iterations": 9}, partitions=samples)
        parts, meta = exchange.pull(end, 4)
        assert meta == {"iterations": 9, "round": 4}
        np.testing.assert_array_equal(parts["state"], [5, 6, 7])
        applied = []

        def worker(p, attempt):
            vec = pushed[p]
            applied.append(exchange.push(end, 4, p, attempt, samples[p],
                                         {"weights": vec[:5], "state": vec[5:]}))
        # Two copies of each push (a task resending its result), sent at once.
        threads = [threading.Thread(target=worker, args=(p, 0)) for p in range(4) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        total, received = rounds.close_round()
        assert sorted(applied) == [False] * 4 + [True] * 4
        assert received == samples and rounds.duplicates == 4
        expected = sum(pushed[p].astype(np.float64) * samples[p] for p in range(4))
        np.testing.assert_array_equal(total, expected)
    finally:
        server.close()


def test_pushes_are_summed_in_partition_order_whatever_order_they_arrive_in():
    """Float addition is not associative: 1 + 3e30 - 3e30 is 0 in partition order and 1 in
    the order 1, 2, 0. Pushes arriving last-first are held and added in partition order, so
    the sum (and the model) does not depend on scheduling."""
    rounds, server, end = exchange_server(sizes=(1,), weighted=(False,))
    values = {0: 1.0, 1: 3e30, 2: -3e30}
    try:
        for arrival in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
            rounds.open_round(0, np.zeros(1, np.float32), {"iterations": 0}, partitions={0: 1, 1: 1, 2: 1})
            for p in arrival:
                assert exchange.push(end, 0, p, 0, 1, {"weights": np.array([values[p]], np.float32)})
            assert exchange.push(end, 0, arrival[0], 1, 1, {"weights": np.ones(1, np.float32)}) is False
            total, received = rounds.close_round()
            assert total.tolist() == [0.0], arrival
            assert received == {0: 1, 1: 1, 2: 1}
        assert rounds.waiting_most == 2
        # A partition the round does not expect is refused; one still held is not summed.
        rounds.open_round(1, np.zeros(1, np.float32), {"iterations": 0}, partitions={0: 1, 2: 5})
        with pytest.raises(protocol.RemoteError, match="expects no push from partition 1"):
            exchange.push(end, 1, 1, 0, 1, {"weights": np.ones(1, np.float32)})
        exchange.push(end, 1, 2, 0, 5, {"weights": np.ones(1, np.float32)})
        total, received = rounds.close_round()
        assert total.tolist() == [0.0] and received == {}
    finally:
        server.close()


def test_gradient_segments_are_not_weighted_and_stale_rounds_are_refused():
    rounds, server, end = exchange_server(sizes=(2, 1), weighted=(False, True))
    try:
        rounds.open_round(0, np.zeros(3, np.float32), {"iterations": 0}, partitions={0: 10, 1: 10, 2: 10})
        exchange.push(end, 0, 0, 0, 10, {"weights": np.array([1, 2], np.float32), "state": np.ones(1, np.float32)})
        with pytest.raises(protocol.RemoteError, match="round 1 is not open"):
            exchange.push(end, 1, 1, 0, 10, {"weights": np.ones(2, np.float32), "state": np.ones(1, np.float32)})
        with pytest.raises(protocol.RemoteError, match="round 1 is not open"):
            exchange.pull(end, 1)
        with protocol.Connection(end.address, end.token, 5) as conn:
            with pytest.raises(protocol.RemoteError, match="float32 vector of 3 values"):
                conn.request(Op.PUSH, {"round": 0, "partition": 2, "attempt": 0, "samples": 1},
                             np.ones(3, np.int32))
            with pytest.raises(protocol.RemoteError, match=r"expected samples=10 from partition 2 \(the "
                                                           r"rows it trains in round 0\), received 0"):
                conn.request(Op.PUSH, {"round": 0, "partition": 2, "attempt": 0, "samples": 0},
                             np.ones(3, np.float32))
            with pytest.raises(protocol.RemoteError, match="an int 'partition'"):
                conn.request(Op.PUSH, {"round": 0, "partition": "2", "attempt": 0, "samples": 1},
                             np.ones(3, np.float32))
        with protocol.Connection(end.address, end.token, 5) as conn:
            with pytest.raises(protocol.RemoteError, match="at most 12 allowed"):
                conn.request(Op.PUSH, {"round": 0, "partition": 2, "attempt": 0, "samples": 1},
                             np.ones(4, np.float32))
            with pytest.raises(OSError):            # an oversized frame ends its connection
                conn.request(Op.PULL, {"round": 0})
        total, received = rounds.close_round()
        np.testing.assert_array_equal(total, [1, 2, 10])
        assert received == {0: 10}
        with pytest.raises(protocol.RemoteError, match="round 0 is not open"):
            exchange.pull(end, 0)
    finally:
        server.close()


def test_a_push_cut_off_mid_frame_applies_nothing_and_frees_its_buffer():
    rounds, server, end = exchange_server(max_inflight=1)
    try:
        rounds.open_round(0, np.zeros(8, np.float32), {"iterations": 0}, partitions={0: 2})
        conn = protocol.Connection(end.address, end.token, 5)
        head = protocol.encode_header(Op.PUSH, {"round": 0, "partition": 0, "attempt": 0, "samples": 3},
                                      np.ones(8, np.float32))
        conn.sock.sendall(head + np.ones(8, np.float32).tobytes()[:13])
        conn.close()
        # The only receive buffer is back in the pool: a full push still goes through.
        vec = np.arange(8, dtype=np.float32)
        assert exchange.push(end, 0, 0, 1, 2, {"weights": vec[:5], "state": vec[5:]})
        total, received = rounds.close_round()
        np.testing.assert_array_equal(total, vec * 2)
        assert received == {0: 2}
    finally:
        server.close()


def test_a_push_waiting_for_a_receive_buffer_times_out():
    rounds = exchange.RoundExchange(exchange.Layout(("weights",), (4,), (True,)), max_inflight=1,
                                    timeout=0.1)
    assert rounds.receive_buffer(Op.PUSH, {}, (4,), np.float32) is not None
    with pytest.raises(TimeoutError, match=r"no receive buffer freed within 0.1 s"):
        rounds.receive_buffer(Op.PUSH, {}, (4,), np.float32)


# ---- every push is checked before anything changes ---------------------------------------------------
def _vector(values):
    vec = np.asarray(values, np.float32)
    return {"weights": vec[:5], "state": vec[5:]}


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_push_is_refused_and_the_sum_is_unchanged(bad):
    rounds, server, end = exchange_server()
    try:
        rounds.open_round(0, np.zeros(8, np.float32), {"iterations": 0}, partitions={0: 3, 1: 4})
        assert exchange.push(end, 0, 0, 0, 3, _vector(np.arange(8)))
        poisoned = np.ones(8, np.float32)
        poisoned[2] = bad
        with pytest.raises(protocol.RemoteError, match=r"expected finite values in the push of "
                                                       r"partition 1, received 1 NaN or infinite of 8"):
            exchange.push(end, 0, 1, 0, 4, _vector(poisoned))
        assert exchange.push(end, 0, 1, 0, 4, _vector(np.ones(8))) is True    # the real push counts
        total, received = rounds.close_round()
        np.testing.assert_array_equal(total, np.arange(8) * 3.0 + 4.0)
        assert received == {0: 3, 1: 4} and rounds.duplicates == 0
    finally:
        server.close()


@pytest.mark.parametrize("samples, shown", [(2**63 - 1, "a 19-digit int"), (5, "5"), (True, "True"),
                                            (4.0, "4.0")])
def test_a_push_with_another_sample_count_is_refused_whole(samples, shown):
    """samples=10**400 used to overflow halfway through adding the push (the weights segment
    added, the statistics not); the real push of the partition was then dropped as a copy.
    (Integers wider than 64 bits no longer pass the frame parser; the largest that does is
    refused here.)"""
    rounds, server, end = exchange_server()
    try:
        rounds.open_round(2, np.zeros(8, np.float32), {"iterations": 0}, partitions={0: 3, 1: 4})
        assert exchange.push(end, 2, 0, 0, 3, _vector(np.arange(8)))
        with pytest.raises(protocol.RemoteError, match=r"expected samples=4 from partition 1 \(the rows "
                                                       rf"it trains in round 2\), received {shown}"):
            exchange.push(end, 2, 1, 0, samples, _vector(np.ones(8)))
        assert exchange.push(end, 2, 1, 0, 4, _vector(np.full(8, 2))) is True
        total, received = rounds.close_round()
        np.testing.assert_array_equal(total, np.arange(8) * 3.0 + 8.0)
        assert received == {0: 3, 1: 4}
    finally:
        server.close()


def test_a_push_of_a_replaced_or_unregistered_attempt_is_refused():
    """Partition 0's attempt 1 registered (a retried task): attempt 0's push is refused, and so
    is one from attempt 2, which never registered. Without registrations (one Spark job per
    round), the newest attempt seen in the round replaces the older ones."""
    rounds, server, end = exchange_server()
    try:
        rounds.register(0, 0)
        rounds.register(0, 1)
        rounds.open_round(0, np.zeros(8, np.float32), {"iterations": 0}, partitions={0: 3, 1: 4})
        with pytest.raises(protocol.RemoteError, match=r"expected attempt 1 of partition 0 \(its newest\), "
                                                       r"received attempt 0, which a retry replaced"):
            exchange.push(end, 0, 0, 0, 3, _vector(np.full(8, 9)))
        with pytest.raises(protocol.RemoteError, match="received attempt 2, which never registered"):
            exchange.push(end, 0, 0, 2, 3, _vector(np.full(8, 9)))
        assert exchange.push(end, 0, 0, 1, 3, _vector(np.ones(8))) is True
        assert exchange.push(end, 0, 1, 1, 4, _vector(np.ones(8))) is True
        assert exchange.push(end, 0, 1, 1, 4, _vector(np.ones(8))) is False     # a copy: dropped
        with pytest.raises(protocol.RemoteError, match="received attempt 0, which a retry replaced"):
            exchange.push(end, 0, 1, 0, 4, _vector(np.full(8, 9)))
        total, received = rounds.close_round()
        np.testing.assert_array_equal(total, np.full(8, 7.0))
        assert received == {0: 3, 1: 4} and rounds.duplicates == 1
    finally:
        server.close()
