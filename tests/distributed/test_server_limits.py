"""The frame server (``sparkdl.distributed.server``) under floods, slow senders and bad bytes:
each test reproduces the attack on loopback, with bounded loops, and checks that a legitimate
client is still served afterwards (and, where pushes are involved, that nothing was applied).
The bounds themselves are covered by test_limits.py."""
import errno
import json
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest

from sparkdl.distributed import protocol, session
from sparkdl.distributed.protocol import Frame, Op
from sparkdl.distributed.server import SMALL_DATA, FrameServer, PushBuffers
from tests.helpers import ROOT, raw_header

SERVER_LOG = "sparkdl.distributed.server"


class Sums(PushBuffers):
    """A service that adds every PUSH of ``n`` float32 values into ``total`` (the weights), and
    answers any other request with OK."""

    def __init__(self, n=1000, buffers=2, wait=3.0, data_limits=None, block=None):
        self.total = np.zeros(n, np.float32)
        self.max_data = 4 * n
        self.lock = threading.Lock()
        self.block = block               # an Event a REPORT waits for (holding its array)
        if data_limits is not None:
            self.data_limits = data_limits
        self._setup_push_buffers(n, buffers, wait)

    def handle(self, frame):
        if frame.op == Op.PUSH:
            with self.lock:
                self.total += frame.array
        if frame.op == Op.REPORT and self.block is not None:
            self.block.wait(5)
        if frame.op == Op.STATS:
            raise ZeroDivisionError("a bug in the service")
        return Frame(Op.OK, {"size": 0 if frame.array is None else int(frame.array.size)})


@pytest.fixture
def no_thread_escapes(monkeypatch):
    """Fails the test if an exception leaves any thread."""
    escaped = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))
    yield
    assert escaped == []


def served(server, token):
    """A legitimate client still gets its request answered."""
    with protocol.Connection(server.address, token, timeout=5) as conn:
        return conn.request(Op.CLOCK, {}).op == Op.OK


def warnings_from_server(caplog):
    return [r for r in caplog.records if r.name == SERVER_LOG and r.levelno >= logging.WARNING]


def trickle(sock, data, pause=0.05):
    """Send ``data`` one byte every ``pause`` s until the server speaks or closes; the number
    of bytes sent."""
    for i in range(len(data)):
        try:
            sock.sendall(data[i:i + 1])
        except OSError:
            return i
        if select.select([sock], [], [], pause)[0]:
            return i + 1
    return len(data)


def answer_then_eof(sock, session=None):
    """The ERROR frame the server sends before it closes a connection (sealed by the
    connection's ``session`` after the handshake), and then EOF."""
    frame = protocol.recv_frame(sock, 0, session=session)
    assert frame.op == Op.ERROR
    try:
        assert sock.recv(1) == b""
    except ConnectionResetError:
        pass
    return frame.meta["error"]


# ---- floods of connections ----------------------------------------------------------------------
def test_accept_errors_back_off_and_accepting_continues(monkeypatch, caplog):
    """EMFILE from accept() used to end the accept loop silently."""
    real_accept = socket.socket.accept
    failures = []

    def accept(self):
        if threading.current_thread().name == "flooded-accept" and len(failures) < 3:
            failures.append(1)
            raise OSError(errno.EMFILE, "Too many open files")
        return real_accept(self)
    monkeypatch.setattr(socket.socket, "accept", accept)
    token = protocol.new_token()
    with caplog.at_level(logging.WARNING, logger=SERVER_LOG):
        with FrameServer(Sums(), token, timeout=2, name="flooded", log_interval=60) as server:
            assert served(server, token)
            assert server.stats["accept_errors"] == 3
    logged = warnings_from_server(caplog)
    assert len(logged) == 1 and "Too many open files" in logged[0].getMessage()


EMFILE_SCRIPT = """
import errno, json, resource, socket, sys, threading
from sparkdl.distributed import protocol
from sparkdl.distributed.protocol import Op
from tests.distributed.test_server_limits import Sums
from sparkdl.distributed.server import FrameServer

resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
token = protocol.new_token()
server = FrameServer(Sums(), token, timeout=5, max_connections=1000)
clients, exhausted = [], False
for _ in range(200):                       # connect until this process runs out of descriptors
    try:
        clients.append(socket.create_connection(server.address, timeout=2))
    except OSError as exc:
        exhausted = exc.errno == errno.EMFILE
        break
for _ in range(100):                       # the server meets EMFILE in accept()
    if server.stats["accept_errors"]:
        break
    threading.Event().wait(0.02)
for sock in clients:
    sock.close()
served = False
for _ in range(20):                        # bounded: the server's pause is at most 1 s
    try:
        with protocol.Connection(server.address, token, timeout=0.5) as conn:
            served = conn.request(Op.CLOCK, {}).op == Op.OK
        break
    except (OSError, protocol.RemoteError):
        threading.Event().wait(0.05)
server.close()
print(json.dumps({"exhausted": exhausted, "accept_errors": server.stats["accept_errors"], "served": served}))
"""


def test_a_server_out_of_file_descriptors_keeps_accepting_once_some_are_free():
    """A real EMFILE: the descriptor limit lowered in a child process."""
    pytest.importorskip("resource")
    result = subprocess.run([sys.executable, "-c", EMFILE_SCRIPT], cwd=ROOT, capture_output=True,
                            text=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"exhausted": True, "accept_errors": outcome["accept_errors"], "served": True}
    assert outcome["accept_errors"] >= 1


def test_a_thread_that_cannot_start_closes_only_its_connection_and_close_does_not_raise(monkeypatch):
    real_start = threading.Thread.start
    failed = []

    def start(self):
        if self.name == "starved-conn" and not failed:
            failed.append(self)
            raise RuntimeError("can't start new thread")
        return real_start(self)
    monkeypatch.setattr(threading.Thread, "start", start)
    token = protocol.new_token()
    server = FrameServer(Sums(), token, timeout=2, name="starved")
    with pytest.raises(protocol.RemoteError, match=r"could not serve this connection \(can't start new thread\)"):
        protocol.Connection(server.address, token, timeout=2)
    assert served(server, token)
    assert server.stats["accept_errors"] == 1
    server.close()                       # used to raise "cannot join thread before it is started"
    server.close()


def test_a_server_whose_accept_thread_cannot_start_raises_and_frees_its_port(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def start(self):
        raise RuntimeError("can't start new thread")
    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        FrameServer(Sums(), protocol.new_token(), port=port)
    monkeypatch.undo()
    token = protocol.new_token()
    with FrameServer(Sums(), token, port=port) as server:
        assert served(server, token)


def test_connections_over_the_limit_are_refused_and_the_server_keeps_serving(caplog):
    token = protocol.new_token()
    with caplog.at_level(logging.WARNING, logger=SERVER_LOG), \
            FrameServer(Sums(), token, timeout=2, max_connections=3, log_interval=60) as server:
        idle = [socket.create_connection(server.address, timeout=2) for _ in range(3)]
        for sock in idle:
            assert protocol.recv_frame(sock, 0).op == Op.HELLO       # admitted, then silent
        for _ in range(10):
            with pytest.raises(protocol.RemoteError, match="3 connections open, its limit"):
                protocol.Connection(server.address, token, timeout=2)
        assert server.stats["over_limit"] == 10
        assert len(warnings_from_server(caplog)) == 1
        idle.pop().close()
        ok = False
        for _ in range(100):                 # the server notices the close: a slot frees up
            try:
                ok = served(server, token)
                break
            except protocol.RemoteError:
                threading.Event().wait(0.02)
        assert ok
        for sock in idle:
            sock.close()


def test_failed_logins_are_counted_and_logged_at_a_bounded_rate(caplog):
    token = protocol.new_token()
    with caplog.at_level(logging.WARNING, logger=SERVER_LOG), \
            FrameServer(Sums(), token, timeout=2, log_interval=60) as server:
        for _ in range(20):
            with pytest.raises(protocol.AuthenticationError, match="refused"):
                protocol.Connection(server.address, protocol.new_token(), timeout=2)
        assert server.stats["refused"] == 20
        assert served(server, token)
    assert len(warnings_from_server(caplog)) == 1


# ---- slow senders ---------------------------------------------------------------------------------
def test_a_handshake_trickled_byte_by_byte_is_cut_at_its_deadline(no_thread_escapes):
    """Each byte arrives well within the per-recv timeout (2 s); the handshake as a whole
    may take 0.3 s."""
    token = protocol.new_token()
    with FrameServer(Sums(), token, timeout=2, handshake_timeout=0.3) as server:
        with socket.create_connection(server.address, timeout=2) as sock:
            hello = protocol.recv_frame(sock, 0)
            mine = bytes(32)
            keys = session.derive_keys(token, bytes.fromhex(hello.meta["nonce"]), mine, "integrity")
            auth = protocol.encode_frame(Op.AUTH, {"nonce": mine.hex(), "mode": "integrity",
                                                   "mac": keys.client_proof.hex()})
            assert trickle(sock, auth) < len(auth)
            assert "timed out after 0.3 s waiting for the client's AUTH as a whole" in answer_then_eof(sock)
        assert server.stats["timeouts"] == 1
        assert served(server, token)


def test_a_request_trickled_byte_by_byte_is_cut_at_its_deadline(no_thread_escapes):
    token = protocol.new_token()
    service = Sums(n=4)
    with FrameServer(service, token, timeout=0.3) as server:
        with protocol.Connection(server.address, token, timeout=2) as slow:
            push = protocol.encode_frame(Op.PUSH, {}, np.ones(4, np.float32), slow.session)
            assert trickle(slow.sock, push) < len(push)
            assert "waiting for a request as a whole" in answer_then_eof(slow.sock, slow.session)
        assert served(server, token)
    assert not service.total.any()


def stall_pushes(server, token, n, count, stop):
    """``count`` connections that each start a PUSH of ``n`` values, then send one data byte
    every 50 ms (until ``stop`` or the server closes them); returns their threads once each
    holds a receive buffer."""
    def stall():
        with protocol.Connection(server.address, token, timeout=5) as conn:
            sealed = protocol.encode_frame(Op.PUSH, {}, np.zeros(n, np.float32), conn.session)
            conn.sock.sendall(sealed[:-(4 * n + 32)])        # all but the data and its tag
            for _ in range(200):
                if stop.wait(0.05):
                    return
                try:
                    conn.sock.sendall(b"\0")
                except OSError:
                    return
    threads = [threading.Thread(target=stall) for _ in range(count)]
    for thread in threads:
        thread.start()
    for _ in range(250):
        if server.service._pool.empty():
            break
        stop.wait(0.02)
    assert server.service._pool.empty()
    return threads


def test_stalled_pushes_release_their_buffers_at_the_frame_deadline(no_thread_escapes):
    """Two pushes trickling one byte at a time hold both receive buffers; the frame deadline
    (0.5 s) cuts them, and a third push, waiting up to 3 s for a buffer, goes through."""
    token = protocol.new_token()
    service = Sums(n=1000, buffers=2, wait=3.0)
    stop = threading.Event()
    with FrameServer(service, token, timeout=0.5) as server:
        stallers = stall_pushes(server, token, 1000, 2, stop)
        with protocol.Connection(server.address, token, timeout=5) as conn:
            update = np.arange(1000, dtype=np.float32)
            assert conn.request(Op.PUSH, {}, update).op == Op.OK
        for _ in range(250):                # the other stalled push meets its deadline too
            if server.stats["timeouts"] == 2:
                break
            stop.wait(0.02)
        assert server.stats["timeouts"] == 2
        stop.set()
        for thread in stallers:
            thread.join(5)
    np.testing.assert_array_equal(service.total, update)     # the stalled pushes applied nothing


def test_a_push_that_finds_no_buffer_gets_the_documented_error_and_keeps_its_connection(no_thread_escapes):
    """It used to see "Connection reset by peer"."""
    token = protocol.new_token()
    service = Sums(n=1000, buffers=2, wait=0.2)
    stop = threading.Event()
    with FrameServer(service, token, timeout=3) as server:
        stallers = stall_pushes(server, token, 1000, 2, stop)
        with protocol.Connection(server.address, token, timeout=5) as conn:
            with pytest.raises(protocol.RemoteError, match=r"no receive buffer freed within 0.2 s"):
                conn.request(Op.PUSH, {}, np.ones(1000, np.float32))
            assert conn.request(Op.CLOCK, {}).op == Op.OK
        assert server.stats["busy"] == 1
        stop.set()
        for thread in stallers:
            thread.join(5)
    assert not service.total.any()


# ---- memory --------------------------------------------------------------------------------------
def test_ops_other_than_push_carry_small_arrays_unless_the_service_says_otherwise():
    token = protocol.new_token()
    big = np.zeros(SMALL_DATA // 4 + 1, np.float32)
    with FrameServer(Sums(n=1 << 16), token, timeout=2) as server:
        with protocol.Connection(server.address, token, timeout=2) as conn:
            conn.sock.sendall(protocol.encode_header(Op.REPORT, {}, big))     # refused before its data
            assert f"at most {SMALL_DATA} allowed" in answer_then_eof(conn.sock, conn.session)
        assert served(server, token)
    with FrameServer(Sums(n=4, data_limits={Op.REPORT: big.nbytes}), token, timeout=2) as server:
        with protocol.Connection(server.address, token, timeout=2) as conn:
            assert conn.request(Op.REPORT, {}, big).meta["size"] == big.size


def test_requests_beyond_the_memory_budget_wait_then_get_an_error(no_thread_escapes):
    token = protocol.new_token()
    block = threading.Event()
    report = np.ones(1 << 18, np.float32)                     # 1 MiB
    service = Sums(n=4, data_limits={Op.REPORT: report.nbytes}, block=block)
    with FrameServer(service, token, timeout=0.3, memory=report.nbytes) as server:
        with protocol.Connection(server.address, token, timeout=5) as first, \
                protocol.Connection(server.address, token, timeout=5) as second:
            first.send(Op.REPORT, {}, report)                 # held while its handler waits
            for _ in range(250):
                if server.memory.free == 0:
                    break
                block.wait(0.02)
            with pytest.raises(protocol.RemoteError, match=r"no memory freed within 0.3 s for a request "
                                                           r"of 1048576 bytes"):
                second.request(Op.REPORT, {}, report)
            block.set()
            assert first.receive().meta["size"] == report.size
            assert second.request(Op.REPORT, {}, report).meta["size"] == report.size
        assert server.memory.free == report.nbytes


# ---- bad bytes ------------------------------------------------------------------------------------
def auth_frame(meta_json: bytes) -> bytes:
    return protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, Op.AUTH, 0, 0, len(meta_json), 0) + meta_json


@pytest.mark.parametrize("answer, counter, match", [
    (auth_frame('{"mode":"integrity","nonce":"%s","mac":"%s"}'.encode() % (b"00" * 32, ("é" * 32).encode())),
     "refused", "authentication failed"),
    (auth_frame(b'{"mac":' + b"[" * 20000 + b"]" * 20000 + b"}"), "protocol_errors", "nests deeper"),
    (auth_frame(b'{"mac":1' + b"0" * 5000 + b"}"), "protocol_errors", "integer of 5001 digits"),
    (raw_header(op=Op.AUTH, code=1, ndim=2, meta_len=2, data_len=0) + struct.pack("!2Q", 2**64 - 1, 0)
     + b"{}", "protocol_errors", "elements along a dimension"),
], ids=["non-ascii-mac", "deep-json", "huge-integer", "huge-dimension"])
def test_bad_bytes_before_authentication_close_only_that_connection(no_thread_escapes, answer, counter, match):
    token = protocol.new_token()
    with FrameServer(Sums(), token, timeout=2) as server:
        with socket.create_connection(server.address, timeout=2) as sock:
            protocol.recv_frame(sock, 0)
            sock.sendall(answer)
            assert match in answer_then_eof(sock)
        assert server.stats[counter] == 1 and server.stats["errors"] == 0
        assert served(server, token)


def test_a_service_that_fails_closes_only_that_connection(no_thread_escapes, caplog):
    token = protocol.new_token()
    with caplog.at_level(logging.WARNING, logger=SERVER_LOG), FrameServer(Sums(), token, timeout=2) as server:
        with protocol.Connection(server.address, token, timeout=2) as conn:
            with pytest.raises(protocol.RemoteError, match="the server failed on this request"):
                conn.request(Op.STATS, {})
        assert server.stats["errors"] == 1
        assert served(server, token)
    assert "ZeroDivisionError" in caplog.text
