"""The wire protocol (``sparkdl.distributed.protocol``) without Spark: frames, their bounds and
malformed input, the client's side of the HMAC handshake, and client waits that end with an
error naming what they waited for. The server is covered by test_server.py."""
import socket
import struct
import threading

import numpy as np
import pytest

from sparkdl.distributed import protocol
from sparkdl.distributed.protocol import Op
from tests.helpers import raw_header, socket_pair


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
    a, b = socket_pair()
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
    a, b = socket_pair()
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
    a, _ = socket_pair()
    with pytest.raises(protocol.ProtocolError, match=match):
        protocol.send_frame(a, Op.PUSH, {}, array)


def test_metadata_is_bounded_on_both_sides():
    a, b = socket_pair()
    with pytest.raises(protocol.ProtocolError, match="metadata"):
        protocol.send_frame(a, Op.PUSH, {"x": "y" * protocol.MAX_META})
    a.sendall(protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, Op.PUSH, 0, 0, protocol.MAX_META + 1, 0))
    with pytest.raises(protocol.ProtocolError, match="metadata"):
        protocol.recv_frame(b, 100)


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
    (raw_header(meta_len=40002), struct.pack("!Q", 2) + b"[" * 20001 + b"]" * 20001, "nests deeper than 32"),
    *[(raw_header(meta_len=len(meta)), struct.pack("!Q", 2) + meta, match) for meta, match in [
        (b'{"a":[' * 17 + b"1" + b"]}" * 17, "nests deeper than 32"),
        (b'{"a":1' + b"0" * 5000 + b"}", "integer of 5001 digits"),
        (b'{"a":18446744073709551616}', "at most 64-bit")]],
    (raw_header(ndim=2, data_len=0), struct.pack("!2Q", 2**64 - 1, 0), "elements along a dimension"),
])
def test_malformed_frames_are_protocol_errors(head, rest, match):
    a, b = socket_pair()
    a.sendall(head + rest)
    with pytest.raises(protocol.ProtocolError, match=match):
        protocol.recv_frame(b, 4096)


def test_truncated_frame_is_a_connection_error_and_silence_a_timeout():
    a, b = socket_pair(timeout=0.05)
    a.sendall(protocol.encode_header(Op.PUSH, {}, np.zeros(4, np.float32)) + bytes(10))  # 10 of 16
    a.close()
    with pytest.raises(ConnectionError, match="closed after"):
        protocol.recv_frame(b, 100)
    c, d = socket_pair(timeout=0.05)
    with pytest.raises(TimeoutError, match="waiting for the weights"):
        protocol.recv_frame(d, 100, what="the weights")


def test_a_server_without_the_token_is_not_trusted():
    """The client checks the server's proof too: a forged OK is an AuthenticationError."""
    client_side, server_side = socket_pair()
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


# ---- every wait ends, naming what it waited for ------------------------------------------------
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


def test_a_server_whose_challenge_is_not_hex_is_a_protocol_error():
    client_side, server_side = socket_pair()
    failures = []

    def client():
        try:
            protocol.client_handshake(client_side, protocol.new_token())
        except protocol.ProtocolError as exc:
            failures.append(exc)
    thread = threading.Thread(target=client)
    thread.start()
    protocol.send_frame(server_side, Op.HELLO, {"nonce": "zz" * 32})
    thread.join(5)
    assert len(failures) == 1 and "nonce of 64 hex digits; received 'zzzz" in str(failures[0])
