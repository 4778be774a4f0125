"""sparkdl's wire protocol: length-prefixed binary frames over TCP, authenticated by HMAC.

A frame is a fixed header, the array's shape, a small JSON object and the array's raw bytes::

    magic b"SPDL" | version u8 | op u8 | dtype u8 | ndim u8 | meta_len u32 | data_len u64
    shape: ndim x u64 | meta: meta_len bytes of UTF-8 JSON | data: data_len bytes

All integers are big-endian. Every length is checked against a bound before anything is
allocated, the data length must equal ``prod(shape) * itemsize``, and nothing read from a
socket is unpickled: arrays are raw bytes, metadata is JSON.

A connection starts with a challenge: the server sends ``HELLO`` with a random nonce, the
client answers ``AUTH`` with ``HMAC-SHA256(token, "client" + nonce)``, the server answers
``OK`` with ``HMAC-SHA256(token, "server" + nonce)``, so each side knows the other holds the
per-fit token. Every socket wait has a finite timeout; a timeout raises ``TimeoutError``
naming what was waited for.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import socket
import struct
from dataclasses import dataclass, field

import numpy as np

from sparkdl.errors import AuthenticationError, ProtocolError, RemoteError

MAGIC = b"SPDL"
VERSION = 1
HEADER = struct.Struct("!4sBBBBIQ")
MAX_NDIM = 8
MAX_META = 64 * 1024          # bytes of JSON per frame


class Op:
    """Frame kinds. 1-15: connection control; 16+: what services define."""
    HELLO = 1
    AUTH = 2
    OK = 3
    ERROR = 4
    PULL = 16
    PUSH = 17
    CLOCK = 18
    STATS = 19
    REGISTER = 20
    NEXT = 21
    REPORT = 22


_DTYPES = {0: None, 1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"),
           4: np.dtype("<i8"), 5: np.dtype("u1")}
_CODES = {np.dtype(v).str: k for k, v in _DTYPES.items() if v is not None}


@dataclass
class Frame:
    op: int
    meta: dict = field(default_factory=dict)
    array: np.ndarray | None = None


def new_token() -> bytes:
    """A random per-fit secret (32 bytes)."""
    return secrets.token_bytes(32)


def _mac(token: bytes, side: bytes, nonce: bytes) -> str:
    return hmac.new(token, side + nonce, hashlib.sha256).hexdigest()


# ---- encoding ---------------------------------------------------------------------------------
def encode_header(op: int, meta: dict | None, array: np.ndarray | None) -> bytes:
    """Header, shape and metadata of a frame (the array's bytes follow separately)."""
    meta_bytes = json.dumps(meta or {}, separators=(",", ":")).encode()
    if len(meta_bytes) > MAX_META:
        raise ProtocolError(f"frame metadata is {len(meta_bytes)} bytes; at most {MAX_META} allowed")
    if array is None:
        return HEADER.pack(MAGIC, VERSION, op, 0, 0, len(meta_bytes), 0) + meta_bytes
    code = _CODES.get(array.dtype.str)
    if code is None:
        raise ProtocolError(f"arrays on the wire are little-endian float32/float64/int32/int64/uint8; "
                            f"received dtype {array.dtype}")
    if array.ndim > MAX_NDIM:
        raise ProtocolError(f"arrays on the wire have at most {MAX_NDIM} dimensions; received {array.ndim}")
    shape = struct.pack(f"!{array.ndim}Q", *array.shape)
    return HEADER.pack(MAGIC, VERSION, op, code, array.ndim, len(meta_bytes), array.nbytes) + \
        shape + meta_bytes


def send_frame(sock: socket.socket, op: int, meta: dict | None = None,
               array: np.ndarray | None = None) -> None:
    """Write one frame; the array's memory goes to the socket without a copy."""
    if array is not None and not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    head = encode_header(op, meta, array)
    if array is None or array.nbytes < 65536:
        sock.sendall(head + (array.tobytes() if array is not None else b""))
        return
    sock.sendall(head)
    sock.sendall(memoryview(array.reshape(-1)).cast("B"))  # type: ignore[arg-type]  # numpy declares __buffer__ for Python >= 3.12 only


# ---- decoding ---------------------------------------------------------------------------------
def _recv_exact(sock: socket.socket, n: int, what: str) -> bytearray:
    buf = bytearray(n)
    _recv_into(sock, memoryview(buf), what)
    return buf


def _recv_into(sock: socket.socket, view: memoryview, what: str) -> None:
    got, n = 0, len(view)
    while got < n:
        try:
            k = sock.recv_into(view[got:], n - got)
        except socket.timeout as exc:
            raise TimeoutError(f"timed out after {sock.gettimeout()} s waiting for {what}") from exc
        if k == 0:
            raise ConnectionError(f"connection closed after {got} of {n} bytes of {what}")
        got += k


def recv_frame(sock: socket.socket, max_data: int, out: np.ndarray | None = None,
               what: str = "a frame") -> Frame:
    """Read one frame whose data is at most ``max_data`` bytes.

    With ``out`` (a C-contiguous array of the expected dtype and size, or a function
    ``out(op, meta, shape, dtype)`` returning one or None) the data lands in it without
    another copy and the frame's array is a view of ``out``.
    """
    raw = _recv_exact(sock, HEADER.size, what)
    magic, version, op, code, ndim, meta_len, data_len = HEADER.unpack(raw)
    if magic != MAGIC:
        raise ProtocolError(f"not a sparkdl frame (magic {bytes(magic)!r})")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}; this side speaks {VERSION}")
    if code not in _DTYPES:
        raise ProtocolError(f"unknown dtype code {code}")
    if ndim > MAX_NDIM or (code == 0 and ndim):
        raise ProtocolError(f"{ndim} dimensions for dtype code {code}")
    if meta_len > MAX_META:
        raise ProtocolError(f"frame metadata of {meta_len} bytes; at most {MAX_META} allowed")
    if data_len > max_data:
        raise ProtocolError(f"frame data of {data_len} bytes; at most {max_data} allowed here")
    shape = struct.unpack(f"!{ndim}Q", _recv_exact(sock, 8 * ndim, what)) if ndim else ()
    dtype = _DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize if dtype is not None else 0
    if expected != data_len:
        raise ProtocolError(f"frame data of {data_len} bytes does not match shape {shape} of {dtype}")
    meta_raw = _recv_exact(sock, meta_len, what) if meta_len else b"{}"
    try:
        meta = json.loads(bytes(meta_raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame metadata is not UTF-8 JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ProtocolError(f"frame metadata must be a JSON object, received {type(meta).__name__}")
    if dtype is None:
        return Frame(op, meta)
    if callable(out):
        out = out(op, meta, shape, dtype)
    if out is not None and out.dtype == dtype and out.nbytes == data_len and out.flags.c_contiguous:
        array = out.reshape(shape)
    else:
        array = np.empty(shape, dtype)
    if data_len:
        _recv_into(sock, memoryview(array.reshape(-1)).cast("B"), what)  # type: ignore[arg-type]  # as in send
    return Frame(op, meta, array)


# ---- handshake --------------------------------------------------------------------------------
def server_handshake(sock: socket.socket, token: bytes) -> None:
    """Challenge the client; AuthenticationError if it does not answer with the token's HMAC
    (the caller tells the client, after counting the refusal)."""
    nonce = secrets.token_bytes(32)
    send_frame(sock, Op.HELLO, {"nonce": nonce.hex(), "version": VERSION})
    frame = recv_frame(sock, 0, what="the client's AUTH")
    mac = frame.meta.get("mac")
    if frame.op != Op.AUTH or not isinstance(mac, str) or \
            not hmac.compare_digest(mac, _mac(token, b"client", nonce)):
        raise AuthenticationError("authentication failed")
    send_frame(sock, Op.OK, {"mac": _mac(token, b"server", nonce)})


def client_handshake(sock: socket.socket, token: bytes) -> None:
    hello = recv_frame(sock, 0, what="the server's HELLO")
    nonce_hex = hello.meta.get("nonce")
    if hello.op != Op.HELLO or not isinstance(nonce_hex, str) or len(nonce_hex) != 64:
        raise ProtocolError("the server did not open with a HELLO challenge")
    nonce = bytes.fromhex(nonce_hex)
    send_frame(sock, Op.AUTH, {"mac": _mac(token, b"client", nonce)})
    reply = recv_frame(sock, 0, what="the server's answer to AUTH")
    if reply.op == Op.ERROR:
        raise AuthenticationError(f"the server refused this client: {reply.meta.get('error')}")
    mac = reply.meta.get("mac")
    if reply.op != Op.OK or not isinstance(mac, str) or \
            not hmac.compare_digest(mac, _mac(token, b"server", nonce)):
        raise AuthenticationError("the server could not prove it holds the job's token")


# ---- client -----------------------------------------------------------------------------------
class Connection:
    """An authenticated client connection: ``request`` sends a frame and reads the answer."""

    def __init__(self, address: tuple[str, int], token: bytes, timeout: float,
                 max_reply: int = 1 << 34):
        self.address = tuple(address)
        self.max_reply = max_reply
        try:
            self.sock = socket.create_connection(self.address, timeout=timeout)  # type: ignore[arg-type]  # (host, port)
        except socket.timeout as exc:
            raise TimeoutError(f"timed out after {timeout} s connecting to the sparkdl server at "
                               f"{self.address[0]}:{self.address[1]}") from exc
        except OSError as exc:
            raise ConnectionError(f"could not reach the sparkdl server at {self.address[0]}:"
                                  f"{self.address[1]}: {exc}") from exc
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client_handshake(self.sock, token)
        except BaseException:
            self.sock.close()
            raise

    def request(self, op: int, meta: dict | None = None, array: np.ndarray | None = None,
                out: np.ndarray | None = None, what: str = "the server's answer") -> Frame:
        self.send(op, meta, array)
        return self.receive(out=out, what=what)

    def send(self, op: int, meta: dict | None = None, array: np.ndarray | None = None) -> None:
        """Send a request without waiting for its answer: requests sent back to back are
        answered in order (``receive`` once for each), saving a round trip per request."""
        send_frame(self.sock, op, meta, array)

    def receive(self, out: np.ndarray | None = None, what: str = "the server's answer") -> Frame:
        """The answer to the oldest request not yet answered; RemoteError for an ERROR frame."""
        reply = recv_frame(self.sock, self.max_reply, out=out, what=what)
        if reply.op == Op.ERROR:
            raise RemoteError(str(reply.meta.get("error", "the server refused the request")))
        return reply

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
