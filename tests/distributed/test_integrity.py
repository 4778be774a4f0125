"""Frames after the handshake are bound to the session (``sparkdl.distributed.session``): a
relay that forwards the handshake, then changes, replays, reorders or drops frames, or rewrites
the server's answer, is caught; nothing it touched reaches the parameter server's weights, and a
legitimate client is served correctly afterwards. In mode "encrypted" the relay sees no array
bytes. Real sockets on loopback; every loop is bounded by a frame count or a socket timeout."""
import contextlib
import socket
import sys
import threading

import numpy as np
import pytest

from sparkdl.distributed import protocol, session
from sparkdl.distributed.parameter_server import Client, ParameterServer
from sparkdl.distributed.protocol import HEADER, Frame, Op
from sparkdl.distributed.server import FrameServer
from sparkdl.errors import IntegrityError

N = 1000
INIT = np.arange(N, dtype=np.float32) * 0.25 - 7.0
PUSH_META = {"epoch": 0, "partition": 0, "attempt": 0, "samples": 1}
TAG = {"plain": 0, "integrity": 32, "encrypted": 16}


def _needs_cipher(mode):
    if mode == "encrypted":
        pytest.importorskip("cryptography")


# ---- a relay --------------------------------------------------------------------------------------
def _read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read_frame(sock, tag_size):
    """``(op, the frame's bytes)``, or ``(None, None)`` at EOF. A protected frame has a tag after
    its metadata, and another after its data when it holds an array."""
    head = _read_exact(sock, HEADER.size)
    if head is None:
        return None, None
    _, _, op, code, ndim, meta_len, data_len = HEADER.unpack(head)
    rest = _read_exact(sock, 8 * ndim + meta_len + tag_size + ((data_len + tag_size) if code else 0))
    return (None, None) if rest is None else (op, head + rest)


def offset(frame, part, tag_size):
    """Where a frame's metadata ("meta") or array bytes ("data") start."""
    _, _, _, _, ndim, meta_len, _ = HEADER.unpack(frame[:HEADER.size])
    return HEADER.size + 8 * ndim + (meta_len + tag_size if part == "data" else 0)


class Relay:
    """Forwards connections to ``server``: the handshake's frames (AUTH one way, HELLO and OK the
    other) as they are, every later frame through ``tamper(direction, op, frame)``, which returns
    the frames to forward in its place ("up": client to server, "down": back). ``wire`` keeps
    every byte that passed, per direction."""

    def __init__(self, server, tamper=None):
        self.target, self.tag = server.address, TAG[server.security]
        self.tamper = tamper or (lambda direction, op, frame: [frame])
        self.wire = {"up": bytearray(), "down": bytearray()}
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=5)
            client.settimeout(5)
            for args in ((client, upstream, "up", 1), (upstream, client, "down", 2)):
                thread = threading.Thread(target=self._pump, args=args, daemon=True)
                self.threads.append(thread)
                thread.start()

    def _pump(self, src, dst, direction, handshake_frames):
        try:
            while True:
                op, frame = _read_frame(src, 0 if handshake_frames else self.tag)
                if frame is None:
                    break
                if handshake_frames:
                    handshake_frames -= 1
                    out = [frame]
                else:
                    out = self.tamper(direction, op, frame)
                for f in out:
                    self.wire[direction] += f
                    dst.sendall(f)
        except OSError:
            pass
        finally:
            # Half-close: everything read from src has been passed on. The other direction
            # goes on until its own end, so a frame the server sent before closing (its ERROR
            # answer to a tampered frame) still reaches the client.
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self):
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)     # wakes the accepting thread
        self.listener.close()
        for thread in self.threads:
            thread.join(5)


@contextlib.contextmanager
def ps_behind_relay(tamper=None, security="integrity"):
    """A parameter server (async, weights ``INIT``) behind a FrameServer, and a relay to it:
    ``(ps, server, relay, token)``."""
    token = protocol.new_token()
    ps = ParameterServer(INIT.copy(), mode="async", rows={0: 100, 1: 100})
    ps.begin_epoch(0)
    with FrameServer(ps, token, timeout=5, security=security, name="relayed") as server:
        relay = Relay(server, tamper)
        try:
            yield ps, server, relay, token
        finally:
            relay.close()


def still_served(ps, server, token, partition=1):
    """A legitimate client, straight to the server, pushes once and pulls the weights it expects."""
    before = ps.snapshot().copy()
    update = np.full(N, 0.5, np.float32)
    client = Client(server.address, token, 5, 0, partition, 0, N, server.security)
    try:
        assert client.push(0, 1, update) is True
        np.testing.assert_array_equal(client.pull(0), before + update)
    finally:
        client.close()


def flip_data_byte(direction_wanted, op_wanted, mode="integrity", part="data"):
    def tamper(direction, op, frame):
        if direction == direction_wanted and op == op_wanted:
            edited = bytearray(frame)
            edited[offset(frame, part, TAG[mode]) + 5] ^= 0x01
            return [bytes(edited)]
        return [frame]
    return tamper


# ---- tampering ------------------------------------------------------------------------------------
@pytest.mark.parametrize("part", ["data", "meta"])
@pytest.mark.parametrize("mode", ["integrity", "encrypted"])
def test_a_push_with_one_byte_flipped_is_refused(mode, part):
    """A byte of the array, or of the metadata (refused before its JSON is parsed)."""
    _needs_cipher(mode)
    with ps_behind_relay(flip_data_byte("up", Op.PUSH, mode, part), mode) as (ps, server, relay, token):
        client = Client(relay.address, token, 5, 0, 0, 0, N, mode)
        try:
            with pytest.raises(protocol.RemoteError, match="failed its"):
                client.push(0, 1, np.ones(N, np.float32))
        finally:
            client.close()
        np.testing.assert_array_equal(ps.snapshot(), INIT)
        assert server.stats["tampered"] == 1 and ps.stats["pushes"] == 0
        assert server.stats["protocol_errors"] == 0
        still_served(ps, server, token)


def test_without_integrity_the_same_flip_is_applied():
    """The control of the test above: the relay's flip does reach the weights in mode "plain"."""
    with ps_behind_relay(flip_data_byte("up", Op.PUSH, "plain"), "plain") as (ps, server, relay, token):
        client = Client(relay.address, token, 5, 0, 0, 0, N, "plain")
        try:
            assert client.push(0, 1, np.ones(N, np.float32)) is True
        finally:
            client.close()
        assert (ps.snapshot() != INIT + 1).sum() == 1


def test_a_replayed_push_is_refused():
    def replay(direction, op, frame):
        return [frame, frame] if direction == "up" and op == Op.PUSH else [frame]
    with ps_behind_relay(replay) as (ps, server, relay, token):
        with protocol.Connection(relay.address, token, 5) as conn:
            update = np.ones(N, np.float32)
            assert conn.request(Op.PUSH, dict(PUSH_META, sequence=0), update).meta["applied"] is True
            with pytest.raises(protocol.RemoteError, match="failed its integrity check"):
                conn.receive()              # the server's answer to the replayed copy
        np.testing.assert_array_equal(ps.snapshot(), INIT + update)
        assert server.stats["tampered"] == 1
        assert ps.stats["pushes"] == 1 and ps.stats["duplicates"] == 0   # refused before the server
        still_served(ps, server, token)


@pytest.mark.parametrize("edit", ["reorder", "drop"])
def test_a_reordered_or_dropped_frame_is_refused(edit):
    held = []

    def tamper(direction, op, frame):
        if direction != "up" or op != Op.PUSH:
            return [frame]
        if not held:                        # the first push: held back (and later sent, or dropped)
            held.append(frame)
            return []
        return [frame, held[0]] if edit == "reorder" else [frame]
    with ps_behind_relay(tamper) as (ps, server, relay, token):
        with protocol.Connection(relay.address, token, 5) as conn:
            for sequence in (0, 1):         # back to back, answered in order
                conn.send(Op.PUSH, dict(PUSH_META, sequence=sequence), np.full(N, sequence + 1, np.float32))
            with pytest.raises(protocol.RemoteError, match="failed its integrity check"):
                conn.receive()
        np.testing.assert_array_equal(ps.snapshot(), INIT)
        assert server.stats["tampered"] == 1 and ps.stats["pushes"] == 0
        still_served(ps, server, token)


@pytest.mark.parametrize("mode", ["integrity", "encrypted"])
def test_a_rewritten_answer_to_a_pull_is_refused_by_the_client(mode):
    _needs_cipher(mode)
    with ps_behind_relay(flip_data_byte("down", Op.OK, mode), mode) as (ps, server, relay, token):
        client = Client(relay.address, token, 5, 0, 0, 0, N, mode)
        try:
            with pytest.raises(IntegrityError, match="failed its"):
                client.pull(0)
        finally:
            client.close()
        np.testing.assert_array_equal(ps.snapshot(), INIT)
        still_served(ps, server, token)


def test_a_frame_with_its_tag_cut_off_is_not_returned():
    """The tag is read and checked before a frame is returned: without it, the receiver waits
    for it (and reads EOF here), it never hands out the frame."""
    def strip(direction, op, frame):
        return [frame[:-32]] if direction == "up" and op == Op.PUSH else [frame]
    with ps_behind_relay(strip) as (ps, server, relay, token):
        with protocol.Connection(relay.address, token, 5) as conn:
            conn.send(Op.PUSH, dict(PUSH_META, sequence=0), np.ones(N, np.float32))
            conn.sock.shutdown(socket.SHUT_WR)
            with pytest.raises(ConnectionError):
                conn.receive()
        np.testing.assert_array_equal(ps.snapshot(), INIT)
        still_served(ps, server, token)


# ---- encryption -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, visible", [("integrity", True), ("encrypted", False)])
def test_encrypted_frames_hide_the_arrays_from_the_relay(mode, visible):
    _needs_cipher(mode)
    update = np.linspace(-1, 1, N, dtype=np.float32)
    with ps_behind_relay(security=mode) as (ps, server, relay, token):
        client = Client(relay.address, token, 5, 0, 0, 0, N, mode)
        try:
            assert client.push(0, 1, update) is True
            pulled = client.pull(0).copy()
        finally:
            client.close()
        np.testing.assert_array_equal(pulled, INIT + update)
    assert (update.tobytes()[:64] in relay.wire["up"]) is visible
    assert (pulled.tobytes()[:64] in relay.wire["down"]) is visible
    assert (b'"sequence"' in relay.wire["up"]) is visible                  # the metadata too


def test_an_encrypted_server_refuses_a_client_in_integrity_mode():
    pytest.importorskip("cryptography")
    token = protocol.new_token()
    ps = ParameterServer(INIT.copy(), mode="async", rows={0: 100, 1: 100})
    ps.begin_epoch(0)
    with FrameServer(ps, token, timeout=5, security="encrypted") as server:
        with pytest.raises(protocol.AuthenticationError,
                           match="the client speaks 'integrity' frames; this server requires 'encrypted'"):
            protocol.Connection(server.address, token, 5, security="integrity")
        assert server.stats["refused"] == 1
        still_served(ps, server, token)


def test_a_relay_that_rewrites_the_mode_breaks_the_handshake():
    """A downgrade: the relay turns the client's AUTH "encrypted" into "integrity" for an
    integrity server; the mode is part of the proofs, so the server refuses it."""
    pytest.importorskip("cryptography")
    token = protocol.new_token()
    with FrameServer(Echo(), token, timeout=5) as server:
        listener = socket.create_server(("127.0.0.1", 0))
        with listener:
            def relay():
                client, _ = listener.accept()
                with client, socket.create_connection(server.address, timeout=5) as upstream:
                    client.settimeout(5)
                    _, hello = _read_frame(upstream, 0)
                    client.sendall(hello)
                    _, auth = _read_frame(client, 0)
                    meta = protocol.decode_meta(auth[HEADER.size:])
                    upstream.sendall(protocol.encode_frame(Op.AUTH, dict(meta, mode="integrity")))
                    _, answer = _read_frame(upstream, 0)
                    client.sendall(answer)
            thread = threading.Thread(target=relay, daemon=True)
            thread.start()
            with pytest.raises(protocol.AuthenticationError, match="authentication failed"):
                protocol.Connection(listener.getsockname(), token, 5, security="encrypted")
            thread.join(5)
        assert server.stats["refused"] == 1


class Echo:
    max_data = 1 << 22

    def handle(self, frame):
        return Frame(Op.OK, frame.meta, frame.array)


@pytest.mark.parametrize("mode", session.MODES)
def test_round_trips_in_every_mode(mode):
    _needs_cipher(mode)
    token = protocol.new_token()
    small, big = np.arange(7, dtype=np.int64), np.linspace(0, 1, 300_000, dtype=np.float32)
    with FrameServer(Echo(), token, timeout=5, security=mode) as server:
        with protocol.Connection(server.address, token, 5, security=mode) as conn:
            for meta, array in (({"a": [1, "b"]}, None), ({}, small), ({"x": 1}, big), ({"x": 2}, big)):
                answer = conn.request(Op.PUSH, meta, array)
                assert answer.meta == meta
                if array is not None:
                    np.testing.assert_array_equal(answer.array, array)
        assert server.stats["tampered"] == 0 and server.stats["requests"] == 4


# ---- keys -----------------------------------------------------------------------------------------
def test_keys_differ_with_either_nonce_the_token_and_the_mode():
    token, a, b = bytes(range(32)), bytes(32), bytes([1]) * 32
    keys = session.derive_keys(token, a, b, "integrity")
    assert keys == session.derive_keys(token, a, b, "integrity")
    values = [keys.client_proof, keys.server_proof, keys.client_to_server, keys.server_to_client]
    assert len(set(values)) == 4 and all(len(v) == 32 for v in values)
    for other in (session.derive_keys(token, b, b, "integrity"), session.derive_keys(token, a, a, "integrity"),
                  session.derive_keys(bytes(32), a, b, "integrity"), session.derive_keys(token, a, b, "encrypted")):
        assert other.client_to_server != keys.client_to_server
        assert other.server_to_client != keys.server_to_client
        assert other.client_proof != keys.client_proof


@pytest.mark.parametrize("mode", ["integrity", "encrypted"])
def test_a_frame_sealed_for_one_direction_does_not_open_in_the_other(mode):
    _needs_cipher(mode)
    keys = session.derive_keys(protocol.new_token(), bytes(32), bytes([7]) * 32, mode)
    client, server = session.Session.client(keys, mode), session.Session.server(keys, mode)
    a, b = socket.socketpair()
    with a, b:
        array = np.arange(10, dtype=np.float32)
        a.sendall(protocol.encode_frame(Op.PUSH, {"k": 1}, array, client))
        np.testing.assert_array_equal(protocol.recv_frame(b, 1000, session=server).array, array)
        a.sendall(protocol.encode_frame(Op.PUSH, {"k": 1}, array, server))     # the reply's keys
        with pytest.raises(IntegrityError):
            protocol.recv_frame(b, 1000, session=session.Session.server(keys, mode))


# ---- settings ---------------------------------------------------------------------------------------
def test_bad_modes_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"FrameServer: expected security to be one of 'plain', "
                                         r"'integrity', 'encrypted', received security='tls'"):
        FrameServer(Echo(), protocol.new_token(), security="tls")
    with pytest.raises(ValueError, match=r"Connection: expected security to be one of .* received security=None"):
        protocol.Connection(("127.0.0.1", 1), protocol.new_token(), 1, security=None)


def test_without_cryptography_encryption_fails_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers", None)
    with pytest.raises(ImportError, match=r'pip install "sparkdl\[crypto\]"'):
        FrameServer(Echo(), protocol.new_token(), security="encrypted")
    with FrameServer(Echo(), protocol.new_token(), security="integrity"):     # the other modes need nothing
        pass


# ---- the client's deadline ------------------------------------------------------------------------
def test_the_client_bounds_an_answer_as_a_whole():
    """Each byte of the answer arrives well within the socket timeout; the frame as a whole
    may take the connection's timeout (0.3 s) from its first byte."""
    token = protocol.new_token()
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def slow_server():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            sealed = protocol.server_handshake(conn, token, 5)
            protocol.recv_frame(conn, 0, session=sealed)
            answer = protocol.encode_frame(Op.OK, {"pad": "x" * 200}, None, sealed)
            for i in range(len(answer)):             # at most ~250 bytes, one every 50 ms
                if stop.wait(0.05):
                    return
                try:
                    conn.sendall(answer[i:i + 1])
                except OSError:
                    return
    thread = threading.Thread(target=slow_server, daemon=True)
    thread.start()
    with listener:
        with protocol.Connection(listener.getsockname(), token, 0.3) as conn:
            with pytest.raises(TimeoutError, match=r"timed out after 0.3 s waiting for the answer as a whole"):
                conn.request(Op.CLOCK, {}, what="the answer")
        stop.set()
        thread.join(5)


# ---- arrays that change while they are sent ---------------------------------------------------------
def test_hogwild_pulls_of_a_vector_changing_under_them_keep_their_tags():
    """Hogwild serves its vector without a lock while pushes change it: the tag must cover the
    bytes that left, not the array as it is once they have."""
    size = 2_000_000                                    # 8 MB: several pieces per frame
    token = protocol.new_token()
    ps = ParameterServer(np.zeros(size, np.float32), mode="hogwild", rows={0: 10**6, 1: 10**6})
    ps.begin_epoch(0)
    errors = []
    pulled = threading.Event()
    with FrameServer(ps, token, timeout=10) as server:
        def pusher():
            client = Client(server.address, token, 10, 0, 1, 0, size)
            try:
                for sequence in range(200):
                    if pulled.is_set():
                        return
                    client.push(sequence, 1, np.full(size, 1.0, np.float32))
            except Exception as exc:                    # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                client.close()
        thread = threading.Thread(target=pusher, daemon=True)
        thread.start()
        client = Client(server.address, token, 10, 0, 0, 0, size)
        try:
            for _ in range(15):
                client.pull(0)
        finally:
            pulled.set()
            client.close()
            thread.join(30)
        assert errors == [] and server.stats["tampered"] == 0
        assert ps.stats["pulls"] == 15 and ps.stats["pushes"] > 0
