"""The wire protocol and the frame server, without Spark: frames, HMAC handshake, bounds,
malformed input, and the sync exchange's at-most-once accumulation."""
import socket
import struct
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkdl.distributed import exchange, protocol
from sparkdl.distributed.protocol import Frame, Op
from sparkdl.distributed.server import FrameServer, Refused


def pair(timeout=5.0):
    a, b = socket.socketpair()
    a.settimeout(timeout)
    b.settimeout(timeout)
    return a, b


# ---- frames ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.array(2.5, dtype=np.float64),
    np.zeros((0, 5), np.int64),
    np.arange(7, dtype=np.int32),
    np.frombuffer(b"bytes", np.uint8),
    np.arange(200_000, dtype=np.float32)[::2],          # not contiguous, and above the copy limit
    None,
])
def test_frames_round_trip(array):
    a, b = pair()
    meta = {"round": 3, "name": "é", "nested": [1, {"x": None}]}
    sender = threading.Thread(target=protocol.send_frame, args=(a, Op.PUSH, meta, array))
    sender.start()          # big frames do not fit in the socket buffer: read while sending
    frame = protocol.recv_frame(b, max_data=10**7)
    sender.join(5)
    assert frame.op == Op.PUSH and frame.meta == meta
    if array is None:
        assert frame.array is None
    else:
        assert frame.array.dtype == array.dtype and frame.array.shape == array.shape
        np.testing.assert_array_equal(frame.array, array)


def test_data_lands_in_the_given_buffer():
    a, b = pair()
    out = np.zeros(6, np.float32)
    protocol.send_frame(a, Op.PULL, {}, np.arange(6, dtype=np.float32))
    frame = protocol.recv_frame(b, 1000, out=out)
    assert np.shares_memory(frame.array, out)
    np.testing.assert_array_equal(out, np.arange(6))


@pytest.mark.parametrize("array, match", [
    (np.zeros(3, ">f4"), "little-endian"),
    (np.zeros(3, np.complex64), "float32"),
    (np.array(["a"], dtype=object), "float32"),
    (np.zeros((1,) * 9, np.float32), "at most 8 dimensions"),
])
def test_arrays_the_protocol_does_not_carry(array, match):
    a, _ = pair()
    with pytest.raises(protocol.ProtocolError, match=match):
        protocol.send_frame(a, Op.PUSH, {}, array)


def test_metadata_is_bounded_on_both_sides():
    a, b = pair()
    with pytest.raises(protocol.ProtocolError, match="metadata"):
        protocol.send_frame(a, Op.PUSH, {"x": "y" * protocol.MAX_META})
    a.sendall(protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, Op.PUSH, 0, 0, protocol.MAX_META + 1, 0))
    with pytest.raises(protocol.ProtocolError, match="metadata"):
        protocol.recv_frame(b, 100)


def raw_header(magic=protocol.MAGIC, version=protocol.VERSION, op=Op.PUSH, code=1, ndim=1,
               meta_len=2, data_len=8):
    return protocol.HEADER.pack(magic, version, op, code, ndim, meta_len, data_len)


@pytest.mark.parametrize("head, rest, match", [
    (raw_header(magic=b"HTTP"), b"", "magic"),
    (raw_header(version=9), b"", "version 9"),
    (raw_header(code=77), b"", "dtype code"),
    (raw_header(ndim=9), b"", "dimensions"),
    (raw_header(code=0, ndim=2, data_len=0), b"", "dimensions"),
    (raw_header(data_len=10**12), b"", "at most 4096"),
    (raw_header(data_len=12), struct.pack("!Q", 2) + b"{}", "does not match shape"),
    (raw_header(meta_len=3), struct.pack("!Q", 2) + b"{x}", "JSON"),
    (raw_header(meta_len=2), struct.pack("!Q", 2) + b"[]", "JSON object"),
    (raw_header(meta_len=2), struct.pack("!Q", 2) + b"\xff\xfe", "UTF-8"),
])
def test_malformed_frames_are_protocol_errors(head, rest, match):
    a, b = pair()
    a.sendall(head + rest)
    with pytest.raises(protocol.ProtocolError, match=match):
        protocol.recv_frame(b, 4096)


def test_truncated_frame_is_a_connection_error_and_silence_a_timeout():
    a, b = pair(timeout=0.05)
    a.sendall(protocol.encode_header(Op.PUSH, {}, np.zeros(4, np.float32)) + bytes(10))  # 10 of 16
    a.close()
    with pytest.raises(ConnectionError, match="closed after"):
        protocol.recv_frame(b, 100)
    c, d = pair(timeout=0.05)
    with pytest.raises(TimeoutError, match="waiting for the weights"):
        protocol.recv_frame(d, 100, what="the weights")


# ---- server ---------------------------------------------------------------------------------------
class Echo:
    """A service that answers with what it received, plus a counter."""
    max_data = 1 << 16

    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    def handle(self, frame):
        if frame.meta.get("refuse"):
            raise Refused("asked to refuse")
        with self.lock:
            self.count += 1
        return Frame(Op.OK, dict(frame.meta, count=self.count), frame.array)


@pytest.fixture
def echo_server():
    token = protocol.new_token()
    with FrameServer(Echo(), token, timeout=5) as server:
        yield server, token


def test_authenticated_requests_and_refusals(echo_server):
    server, token = echo_server
    with protocol.Connection(server.address, token, timeout=5) as conn:
        reply = conn.request(Op.PUSH, {"a": 1}, np.arange(3, dtype=np.float64))
        assert reply.op == Op.OK and reply.meta == {"a": 1, "count": 1}
        np.testing.assert_array_equal(reply.array, [0, 1, 2])
        with pytest.raises(protocol.RemoteError, match="asked to refuse"):
            conn.request(Op.PUSH, {"refuse": True})
        assert conn.request(Op.PUSH, {}).meta["count"] == 2     # a refusal keeps the connection


def test_a_client_without_the_token_is_refused(echo_server):
    server, _ = echo_server
    with pytest.raises(protocol.AuthenticationError, match="refused"):
        protocol.Connection(server.address, protocol.new_token(), timeout=5)
    assert server.stats["refused"] == 1
    assert server.service.count == 0


def test_a_server_without_the_token_is_not_trusted():
    """The client checks the server's proof too: a forged OK is an AuthenticationError."""
    client_side, server_side = pair()
    token = protocol.new_token()
    failures = []

    def client():
        try:
            protocol.client_handshake(client_side, token)
        except protocol.AuthenticationError as exc:
            failures.append(exc)
    thread = threading.Thread(target=client)
    thread.start()
    protocol.send_frame(server_side, Op.HELLO, {"nonce": "00" * 32})
    assert protocol.recv_frame(server_side, 0).op == Op.AUTH
    protocol.send_frame(server_side, Op.OK, {"mac": "0" * 64})
    thread.join(5)
    assert len(failures) == 1 and "could not prove" in str(failures[0])


def test_requests_before_authentication_and_control_ops_close_the_connection(echo_server):
    server, token = echo_server
    sock = socket.create_connection(server.address, timeout=5)
    protocol.recv_frame(sock, 0)                                      # HELLO
    protocol.send_frame(sock, Op.PUSH, {"mac": "x"})                  # not an AUTH
    assert protocol.recv_frame(sock, 0).op == Op.ERROR
    assert sock.recv(1) == b""
    with protocol.Connection(server.address, token, timeout=5) as conn:
        with pytest.raises(protocol.RemoteError, match="not a request"):
            conn.request(Op.OK, {})
    assert server.stats["protocol_errors"] == 1


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(min_size=1, max_size=64),
    st.builds(lambda head, cut: head[:cut], st.builds(
        raw_header, magic=st.sampled_from([protocol.MAGIC, b"SPDX"]), version=st.integers(0, 3),
        op=st.integers(0, 255), code=st.integers(0, 7), ndim=st.integers(0, 10),
        meta_len=st.integers(0, 2**32 - 1), data_len=st.integers(0, 2**64 - 1)),
        st.integers(1, protocol.HEADER.size)),
    st.builds(lambda head, tail: head + tail, st.builds(
        raw_header, op=st.integers(16, 20), code=st.integers(0, 5), ndim=st.integers(0, 3),
        meta_len=st.integers(0, 40), data_len=st.integers(0, 64)), st.binary(max_size=120)),
))
def test_garbage_closes_only_its_own_connection(shared_echo, garbage):
    """Whatever an authenticated client sends, the server answers it, refuses it or closes
    that connection; another client's connection keeps being served."""
    server, token, good = shared_echo
    with protocol.Connection(server.address, token, timeout=5) as bad:
        try:
            bad.sock.sendall(garbage)
            bad.sock.shutdown(socket.SHUT_WR)
            while bad.sock.recv(65536):     # the server answers or closes, never hangs
                pass
        except TimeoutError:
            raise
        except OSError:                     # reset: closed with our garbage unread
            pass
    before = good.request(Op.PUSH, {"ping": 1}).meta["count"]
    assert good.request(Op.PUSH, {"ping": 2}).meta["count"] == before + 1


@pytest.fixture(scope="module")
def shared_echo():
    token = protocol.new_token()
    with FrameServer(Echo(), token, timeout=5) as server:
        with protocol.Connection(server.address, token, timeout=5) as good:
            yield server, token, good


def test_close_frees_the_port_for_the_next_server():
    token = protocol.new_token()
    first = FrameServer(Echo(), token)
    port = first.address[1]
    with protocol.Connection(first.address, token, timeout=5) as conn:
        conn.request(Op.PUSH, {})
        first.close()
        with pytest.raises((ConnectionError, OSError)):
            conn.request(Op.PUSH, {})
    with FrameServer(Echo(), token, port=port) as second:
        with protocol.Connection(second.address, token, timeout=5) as conn:
            assert conn.request(Op.PUSH, {}).meta["count"] == 1


# ---- the sync exchange ------------------------------------------------------------------------------
def exchange_server(sizes=(5, 3), weighted=(True, True), max_inflight=2):
    layout = exchange.Layout(("weights", "state")[:len(sizes)], sizes, weighted)
    rounds = exchange.RoundExchange(layout, max_inflight=max_inflight, timeout=5)
    token = protocol.new_token()
    server = FrameServer(rounds, token, timeout=5)
    return rounds, server, exchange.Endpoint(server.address, token, 5.0, layout, layout)


def test_concurrent_pushes_sum_exactly_and_duplicates_count_once():
    rounds, server, end = exchange_server(max_inflight=1)
    try:
        rounds.open_round(4, np.arange(8, dtype=np.float32), {"iterations": 9}, partitions=range(4))
        parts, meta = exchange.pull(end, 4)
        assert meta == {"iterations": 9, "round": 4}
        np.testing.assert_array_equal(parts["state"], [5, 6, 7])
        rng = np.random.default_rng(0)
        pushed = {p: rng.integers(-1000, 1000, 8).astype(np.float32) for p in range(4)}
        samples = {p: int(rng.integers(1, 50)) for p in range(4)}
        applied = []

        def worker(p, attempt):
            vec = pushed[p]
            applied.append(exchange.push(end, 4, p, attempt, samples[p],
                                         {"weights": vec[:5], "state": vec[5:]}))
        threads = [threading.Thread(target=worker, args=(p, a)) for p in range(4) for a in range(2)]
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
            rounds.open_round(0, np.zeros(1, np.float32), {"iterations": 0}, partitions=[0, 1, 2])
            for p in arrival:
                assert exchange.push(end, 0, p, 0, 1, {"weights": np.array([values[p]], np.float32)})
            assert exchange.push(end, 0, arrival[0], 1, 1, {"weights": np.ones(1, np.float32)}) is False
            total, received = rounds.close_round()
            assert total.tolist() == [0.0], arrival
            assert received == {0: 1, 1: 1, 2: 1}
        assert rounds.waiting_most == 2
        # A partition the round does not expect is refused; one still held is not summed.
        rounds.open_round(1, np.zeros(1, np.float32), {"iterations": 0}, partitions=[0, 2])
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
        rounds.open_round(0, np.zeros(3, np.float32), {"iterations": 0}, partitions=[0, 1, 2])
        exchange.push(end, 0, 0, 0, 10, {"weights": np.array([1, 2], np.float32), "state": np.ones(1, np.float32)})
        with pytest.raises(protocol.RemoteError, match="round 1 is not open"):
            exchange.push(end, 1, 1, 0, 10, {"weights": np.ones(2, np.float32), "state": np.ones(1, np.float32)})
        with pytest.raises(protocol.RemoteError, match="round 1 is not open"):
            exchange.pull(end, 1)
        with protocol.Connection(end.address, end.token, 5) as conn:
            with pytest.raises(protocol.RemoteError, match="float32 vector of 3 values"):
                conn.request(Op.PUSH, {"round": 0, "partition": 2, "attempt": 0, "samples": 1},
                             np.ones(3, np.int32))
            with pytest.raises(protocol.RemoteError, match="samples >= 1"):
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
        rounds.open_round(0, np.zeros(8, np.float32), {"iterations": 0}, partitions=[0])
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


# ---- every wait ends, naming what it waited for -------------------------------------------------
def test_client_waits_end_with_errors_naming_what_was_awaited():
    # Nobody listening: refused at once, naming the address.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=rf"could not reach the sparkdl server at 127.0.0.1:{free_port}"):
        protocol.Connection(("127.0.0.1", free_port), protocol.new_token(), timeout=1)
    # A listener that never speaks: the handshake wait times out.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        with pytest.raises(TimeoutError, match=r"timed out after 0.1 s waiting for the server's HELLO"):
            protocol.Connection(silent.getsockname(), protocol.new_token(), timeout=0.1)


def test_server_closes_a_connection_silent_for_longer_than_its_timeout():
    token = protocol.new_token()
    with FrameServer(Echo(), token, timeout=0.2) as server:
        conn = protocol.Connection(server.address, token, timeout=5)
        conn.sock.settimeout(5)
        assert conn.sock.recv(1) == b""            # closed by the server after 0.2 s of silence
        conn.close()
        with protocol.Connection(server.address, token, timeout=5) as again:   # still serving
            assert again.request(Op.PUSH, {}).op == Op.OK


def test_a_push_waiting_for_a_receive_buffer_times_out():
    rounds = exchange.RoundExchange(exchange.Layout(("weights",), (4,), (True,)), max_inflight=1,
                                    timeout=0.1)
    assert rounds.receive_buffer(Op.PUSH, {}, (4,), np.float32) is not None
    with pytest.raises(TimeoutError, match=r"no receive buffer freed within 0.1 s"):
        rounds.receive_buffer(Op.PUSH, {}, (4,), np.float32)
