"""The frame server (``sparkdl.distributed.server``) without Spark: authenticated requests and
refusals, unauthenticated clients, garbage from an authenticated client (which closes only its
own connection), idle connections, and the port freed on close."""
import socket
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkdl.distributed import protocol
from sparkdl.distributed.protocol import Frame, Op
from sparkdl.distributed.server import FrameServer, Refused
from tests.helpers import raw_header


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


def test_server_closes_a_connection_silent_for_longer_than_its_timeout():
    token = protocol.new_token()
    with FrameServer(Echo(), token, timeout=0.2) as server:
        conn = protocol.Connection(server.address, token, timeout=5)
        with pytest.raises(protocol.RemoteError, match=r"timed out after 0.2 s waiting for a request"):
            conn.receive()                         # closed by the server after 0.2 s of silence
        assert conn.sock.recv(1) == b""
        conn.close()
        assert server.stats["timeouts"] == 1
        with protocol.Connection(server.address, token, timeout=5) as again:   # still serving
            assert again.request(Op.PUSH, {}).op == Op.OK
