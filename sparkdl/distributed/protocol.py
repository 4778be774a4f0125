"""sparkdl's wire protocol: length-prefixed binary frames over TCP, authenticated by HMAC.

A frame is a fixed header, the array's shape, a small JSON object and the array's raw bytes;
after the handshake, in modes "integrity" and "encrypted", the metadata and the data (in a
frame with an array) are each followed by a tag of the connection's session
(``sparkdl.distributed.session``)::

    magic b"SPDL" | version u8 | op u8 | dtype u8 | ndim u8 | meta_len u32 | data_len u64
    shape: ndim x u64 | meta: meta_len bytes of UTF-8 JSON | tag | data: data_len bytes | tag

All integers are big-endian. Every length is checked against a bound before anything is
allocated, the data length must equal ``prod(shape) * itemsize``, and nothing read from a
socket is unpickled: arrays are raw bytes, metadata is JSON.

A connection starts with a challenge: the server sends ``HELLO`` with a random nonce, the
client answers ``AUTH`` with a nonce of its own, the protection mode it speaks and its proof,
the server answers ``OK`` with its proof; both proofs and the session's keys derive from the
per-fit token, both nonces and the mode (``session.derive_keys``), so each side knows the
other holds the token, and a server refuses a client that speaks another mode than its own.
A receiver checks the metadata's tag before it parses the JSON and the data's before it
returns the frame. Every socket wait has a finite timeout; a timeout raises
``TimeoutError`` naming what was waited for. A receiver may also bound a frame, or the whole
handshake, as a whole (``deadline``): trickling bytes one at a time does not keep it waiting
longer.

Metadata is checked as it is parsed: at most ``MAX_DEPTH`` levels of nesting, integers of at
most 64 bits; and every dimension of a shape is at most ``MAX_DIM``.
"""
from __future__ import annotations

import hmac
import json
import math
import secrets
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from sparkdl.distributed.session import CHUNK, PLAIN, Session, check_mode, derive_keys
from sparkdl.errors import AuthenticationError, IntegrityError, ProtocolError, RemoteError  # noqa: F401  # IntegrityError: raised through session

MAGIC = b"SPDL"
VERSION = 2
HEADER = struct.Struct("!4sBBBBIQ")
MAX_NDIM = 8
MAX_META = 64 * 1024          # bytes of JSON per frame
MAX_DEPTH = 32                # levels of nesting in a frame's JSON
MAX_DIM = 1 << 40             # elements along one dimension of an array


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


class Busy(TimeoutError):
    """Raised by a receive-buffer provider that found no place for a frame's data in time: the
    receiver drains the frame (so the connection stays usable) and re-raises it."""


class Deadline:
    """A point in time a wait must end by, and the ``seconds`` it was set from (for messages)."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.at = time.monotonic() + self.seconds

    def left(self) -> float:
        return self.at - time.monotonic()


def new_token() -> bytes:
    """A random per-fit secret (32 bytes)."""
    return secrets.token_bytes(32)


# ---- encoding ---------------------------------------------------------------------------------
def encode_header(op: int, meta: dict | None, array: np.ndarray | None) -> bytes:
    """Header, shape and metadata of an unprotected frame (the array's bytes follow separately)."""
    head, meta_bytes = _encode(op, meta, array)
    return head + meta_bytes


def _encode(op: int, meta: dict | None, array: np.ndarray | None) -> tuple[bytes, bytes]:
    """``(header and shape, metadata)`` of a frame."""
    meta_bytes = json.dumps(meta or {}, separators=(",", ":")).encode()
    if len(meta_bytes) > MAX_META:
        raise ProtocolError(f"frame metadata is {len(meta_bytes)} bytes; at most {MAX_META} allowed")
    if array is None:
        return HEADER.pack(MAGIC, VERSION, op, 0, 0, len(meta_bytes), 0), meta_bytes
    code = _CODES.get(array.dtype.str)
    if code is None:
        raise ProtocolError(f"arrays on the wire are little-endian float32/float64/int32/int64/uint8; "
                            f"received dtype {array.dtype}")
    if array.ndim > MAX_NDIM:
        raise ProtocolError(f"arrays on the wire have at most {MAX_NDIM} dimensions; received {array.ndim}")
    shape = struct.pack(f"!{array.ndim}Q", *array.shape)
    return HEADER.pack(MAGIC, VERSION, op, code, array.ndim, len(meta_bytes), array.nbytes) + shape, \
        meta_bytes


def _bytes_of(array: np.ndarray | None) -> memoryview:
    if array is None:
        return memoryview(b"")
    return memoryview(array.reshape(-1)).cast("B")  # type: ignore[arg-type]  # numpy declares __buffer__ for Python >= 3.12 only


def _pieces(op: int, meta: dict | None, array: np.ndarray | None,
            session: Session | None) -> Iterator[bytes | bytearray | memoryview]:
    """A frame's bytes in order, sealed by ``session`` (counted as sent): header, shape,
    metadata and its tag in one piece, then the array's bytes and their tag. A piece may be a
    view of a scratch buffer that the next one reuses: send or copy it before asking for more."""
    if array is not None and not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    head, meta_bytes = _encode(op, meta, array)
    meta_seal, data_seal = (PLAIN, PLAIN) if session is None else session.sealers(head)
    first = bytearray(head)
    for piece in meta_seal.seal(memoryview(meta_bytes)):
        first += piece
    yield first + meta_seal.tag()
    if array is not None:
        yield from data_seal.seal(_bytes_of(array))
        yield data_seal.tag()


def encode_frame(op: int, meta: dict | None = None, array: np.ndarray | None = None,
                 session: Session | None = None) -> bytes:
    """A whole frame as bytes, sealed by ``session`` (counted as sent): for small frames."""
    return b"".join(bytes(piece) for piece in _pieces(op, meta, array, session))


def send_frame(sock: socket.socket, op: int, meta: dict | None = None,
               array: np.ndarray | None = None, session: Session | None = None) -> None:
    """Write one frame, sealed by ``session`` when given; the array's memory goes to the socket
    (through the hash, or the cipher's scratch buffer) without a copy."""
    if array is None or array.nbytes < 65536:
        sock.sendall(encode_frame(op, meta, array, session))
        return
    for piece in _pieces(op, meta, array, session):
        sock.sendall(piece)


def send_pieces(sock: socket.socket, op: int, meta: dict | None, dtype: np.dtype, size: int,
                pieces: Iterable[np.ndarray], session: Session | None = None) -> None:
    """Write one frame whose data, a vector of ``size`` values of ``dtype``, is the 1-d arrays
    ``pieces`` yields, one after the other: its header leaves at once and each piece as soon
    as it is yielded, sealed by ``session`` as it passes (a receiver sees a frame like any
    other). For data still being computed while the frame leaves: the iterator may wait."""
    head, meta_bytes = _encode(op, meta, np.broadcast_to(np.zeros(1, dtype), (size,)))
    meta_seal, data_seal = (PLAIN, PLAIN) if session is None else session.sealers(head)
    first = bytearray(head)
    for piece in meta_seal.seal(memoryview(meta_bytes)):
        first += piece
    sock.sendall(first + meta_seal.tag())
    sent = 0
    for array in pieces:
        if array.dtype != dtype or array.ndim != 1 or sent + array.size > size:
            raise ProtocolError(f"a frame of {size} values of {dtype} was given a piece of "
                                f"{array.size} {array.dtype} values after {sent}")
        for out in data_seal.seal(_bytes_of(array)):
            sock.sendall(out)
        sent += array.size
    if sent != size:
        raise ProtocolError(f"a frame of {size} values of {dtype} was given only {sent}")
    sock.sendall(data_seal.tag())


# ---- decoding ---------------------------------------------------------------------------------
def _recv_exact(sock: socket.socket, n: int, what: str, deadline: Deadline | None = None) -> bytearray:
    buf = bytearray(n)
    _recv_into(sock, memoryview(buf), what, deadline)
    return buf


def _recv_into(sock: socket.socket, view: memoryview, what: str,
               deadline: Deadline | None = None) -> None:
    got, n = 0, len(view)
    base = sock.gettimeout()
    try:
        while got < n:
            if deadline is not None:
                left = deadline.left()
                if left <= 0:
                    raise TimeoutError(f"timed out after {deadline.seconds} s waiting for {what} "
                                       f"as a whole ({got} of {n} bytes of the part being read had arrived)")
                sock.settimeout(left if base is None else min(left, base))
            try:
                k = sock.recv_into(view[got:], n - got)
            except socket.timeout as exc:
                if deadline is not None and deadline.left() <= 0:
                    raise TimeoutError(f"timed out after {deadline.seconds} s waiting for {what} "
                                       f"as a whole ({got} of {n} bytes of the part being read had arrived)") from exc
                raise TimeoutError(f"timed out after {base} s waiting for {what}") from exc
            if k == 0:
                raise ConnectionError(f"connection closed after {got} of {n} bytes of {what}")
            got += k
    finally:
        if deadline is not None:
            sock.settimeout(base)


def _drain(sock: socket.socket, n: int, what: str, deadline: Deadline | None, check) -> None:
    """Read and drop ``n`` bytes (the data of a frame that found no place to land), passing
    them through the frame's ``check`` so that its tag can still be verified."""
    scratch = memoryview(bytearray(min(n, 1 << 16)))
    while n:
        k = min(n, len(scratch))
        _recv_into(sock, scratch[:k], what, deadline)
        check.open(scratch[:k])
        n -= k


def _verify(sock: socket.socket, check, what: str, deadline: Deadline | None) -> None:
    """Read the frame's tag and check it (IntegrityError when it does not match)."""
    if check.size:
        check.check(bytes(_recv_exact(sock, check.size, what, deadline)))


def frame_arrives(sock: socket.socket, what: str) -> bool:
    """Wait (up to the socket's timeout) for the first byte of a frame; False when the other
    side closed the connection instead. A frame's deadline counts from its first byte, so a
    server that takes its time to answer is not cut short while the answer streams in."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except socket.timeout:
        raise TimeoutError(f"timed out after {sock.gettimeout()} s waiting for {what}") from None


def _json_int(text: str) -> int:
    if len(text) > 20:          # checked before int() converts thousands of digits
        raise ProtocolError(f"frame metadata holds an integer of {len(text)} digits; "
                            f"at most 64-bit integers allowed")
    value = int(text)
    if not -(1 << 63) <= value < (1 << 64):
        raise ProtocolError(f"frame metadata holds the integer {value}; at most 64-bit integers allowed")
    return value


def _check_depth(meta: dict) -> None:
    stack: list[tuple[object, int]] = [(meta, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ProtocolError(f"frame metadata nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def decode_meta(raw: bytes) -> dict:
    """A frame's metadata: a JSON object of bounded depth and 64-bit integers, or ProtocolError."""
    try:
        meta = json.loads(raw.decode("utf-8"), parse_int=_json_int)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame metadata is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"frame metadata nests deeper than {MAX_DEPTH} levels") from None
    if not isinstance(meta, dict):
        raise ProtocolError(f"frame metadata must be a JSON object, received {type(meta).__name__}")
    _check_depth(meta)
    return meta


def recv_frame(sock: socket.socket, max_data: int | Callable[[int], int],
               out: np.ndarray | Callable[..., np.ndarray | None] | None = None,
               what: str = "a frame", deadline: float | Deadline | None = None,
               session: Session | None = None) -> Frame:
    """Read one frame whose data is at most ``max_data`` bytes (or ``max_data(op)``).

    With ``out`` (a C-contiguous array of the expected dtype and size, or a function
    ``out(op, meta, shape, dtype)`` returning one or None) the data lands in it without
    another copy and the frame's array is a view of ``out``. If ``out`` raises ``Busy``, the
    frame's data is read and dropped, and ``Busy`` is re-raised.

    ``deadline``: seconds for the frame as a whole (counted again for the data once ``out``
    has given it a place, so a wait for a buffer does not eat into it), or a ``Deadline``
    shared with other waits (the handshake's).

    ``session``: the connection's, after the handshake: the metadata's tag is checked
    (IntegrityError) before the metadata is parsed, the data's before the frame is returned;
    encrypted metadata and data are decrypted (the data in place, in the array it landed in).
    """
    limit = deadline if isinstance(deadline, Deadline) or deadline is None else Deadline(deadline)
    raw = _recv_exact(sock, HEADER.size, what, limit)
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
    bound = max_data(op) if callable(max_data) else max_data
    if data_len > bound:
        raise ProtocolError(f"frame data of {data_len} bytes; at most {bound} allowed here")
    shape_raw = _recv_exact(sock, 8 * ndim, what, limit) if ndim else b""
    shape = struct.unpack(f"!{ndim}Q", shape_raw) if ndim else ()
    if any(d > MAX_DIM for d in shape):
        raise ProtocolError(f"frame shape {shape}: at most {MAX_DIM} elements along a dimension")
    dtype = _DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize if dtype is not None else 0
    if expected != data_len:
        raise ProtocolError(f"frame data of {data_len} bytes does not match shape {shape} of {dtype}")
    meta_check, check = (PLAIN, PLAIN) if session is None else session.openers(bytes(raw) + bytes(shape_raw))
    meta_raw = _recv_exact(sock, meta_len, what, limit)
    meta_check.open(memoryview(meta_raw))
    _verify(sock, meta_check, what, limit)
    meta = decode_meta(bytes(meta_raw)) if meta_len else {}
    if dtype is None:
        return Frame(op, meta)
    buffer = out
    if callable(out):
        try:
            buffer = out(op, meta, shape, dtype)
        except Busy:
            renewed = _renewed(deadline, limit)
            _drain(sock, data_len, what, renewed, check)
            _verify(sock, check, what, renewed)
            raise
        limit = _renewed(deadline, limit)
    array: np.ndarray
    if isinstance(buffer, np.ndarray) and buffer.dtype == dtype and buffer.nbytes == data_len and \
            buffer.flags.c_contiguous:
        array = buffer.reshape(shape)
    else:
        array = np.empty(shape, dtype)
    view = _bytes_of(array)
    step = CHUNK if check.size else max(data_len, 1)     # protected data is checked piece by piece as it lands
    for lo in range(0, data_len, step):
        piece = view[lo:lo + step]
        _recv_into(sock, piece, what, limit)
        check.open(piece)
    _verify(sock, check, what, limit)
    return Frame(op, meta, array)


def _renewed(given: float | Deadline | None, limit: Deadline | None) -> Deadline | None:
    """The data's deadline once a wait for its buffer is over: counted again from now, unless
    the caller's ``Deadline`` bounds more than this frame."""
    if limit is None or isinstance(given, Deadline):
        return limit
    return Deadline(limit.seconds)


# ---- handshake --------------------------------------------------------------------------------
def _nonce(value: object, what: str) -> bytes:
    """A 32-byte nonce sent as 64 hex digits, or ProtocolError."""
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ProtocolError(f"{what} did not carry a nonce of 64 hex digits; received {str(value)[:80]!r}")
    return bytes.fromhex(value)


def _proves(mac: object, expected: bytes) -> bool:
    return isinstance(mac, str) and mac.isascii() and hmac.compare_digest(mac, expected.hex())


def server_handshake(sock: socket.socket, token: bytes, timeout: float | None = None,
                     mode: str = "integrity") -> Session:
    """Challenge the client; its session, or AuthenticationError if it does not prove the token
    or speaks another mode than ``mode`` (the caller tells the client, after counting the
    refusal). ``timeout``: seconds for the whole handshake, however the client spreads its bytes."""
    deadline = None if timeout is None else Deadline(timeout)
    server_nonce = secrets.token_bytes(32)
    send_frame(sock, Op.HELLO, {"nonce": server_nonce.hex(), "version": VERSION, "mode": mode})
    frame = recv_frame(sock, 0, what="the client's AUTH", deadline=deadline)
    if frame.op != Op.AUTH:
        raise AuthenticationError("authentication failed")
    offered = frame.meta.get("mode")
    if offered != mode:
        raise AuthenticationError(f"the client speaks {str(offered)[:20]!r} frames; this server requires "
                                  f"{mode!r} frames (both follow spark.network.crypto.enabled, "
                                  f"spark.ssl.enabled and spark.sparkdl.dataPlane.integrity)")
    try:
        client_nonce = _nonce(frame.meta.get("nonce"), "the client's AUTH")
    except ProtocolError:
        raise AuthenticationError("authentication failed") from None
    keys = derive_keys(token, server_nonce, client_nonce, mode)
    if not _proves(frame.meta.get("mac"), keys.client_proof):
        raise AuthenticationError("authentication failed")
    send_frame(sock, Op.OK, {"mac": keys.server_proof.hex()})
    return Session.server(keys, mode)


def client_handshake(sock: socket.socket, token: bytes, mode: str = "integrity",
                     deadline: Deadline | None = None) -> Session:
    """Answer the server's challenge in ``mode``; the session, once the server proved the token."""
    hello = recv_frame(sock, 0, what="the server's HELLO", deadline=deadline)
    if hello.op == Op.ERROR:
        raise RemoteError(f"the server refused the connection: {hello.meta.get('error')}")
    if hello.op != Op.HELLO:
        raise ProtocolError(f"the server did not open with a HELLO challenge; received op {hello.op}")
    server_nonce = _nonce(hello.meta.get("nonce"), "the server's HELLO challenge")
    client_nonce = secrets.token_bytes(32)
    keys = derive_keys(token, server_nonce, client_nonce, mode)
    send_frame(sock, Op.AUTH, {"nonce": client_nonce.hex(), "mode": mode, "mac": keys.client_proof.hex()})
    reply = recv_frame(sock, 0, what="the server's answer to AUTH", deadline=deadline)
    if reply.op == Op.ERROR:
        raise AuthenticationError(f"the server refused this client: {reply.meta.get('error')}")
    if reply.op != Op.OK or not _proves(reply.meta.get("mac"), keys.server_proof):
        raise AuthenticationError("the server could not prove it holds the job's token")
    return Session.client(keys, mode)


# ---- both ends --------------------------------------------------------------------------------
class Channel:
    """A socket, and once its handshake is done the ``session`` that seals and checks its frames."""

    def __init__(self, sock: socket.socket, session: Session | None = None):
        self.sock = sock
        self.session = session

    def send(self, op: int, meta: dict | None = None, array: np.ndarray | None = None) -> None:
        send_frame(self.sock, op, meta, array, self.session)

    def send_pieces(self, op: int, meta: dict | None, dtype: np.dtype, size: int,
                    pieces: Iterable[np.ndarray]) -> None:
        """``send_pieces`` on this channel: a frame whose data leaves piece by piece."""
        send_pieces(self.sock, op, meta, dtype, size, pieces, self.session)

    def recv(self, max_data: int | Callable[[int], int],
             out: np.ndarray | Callable[..., np.ndarray | None] | None = None,
             what: str = "a frame", deadline: float | Deadline | None = None) -> Frame:
        return recv_frame(self.sock, max_data, out, what, deadline, self.session)


# ---- client -----------------------------------------------------------------------------------
class Connection(Channel):
    """An authenticated client connection: ``request`` sends a frame and reads the answer.
    ``timeout`` bounds the connection, the handshake as a whole, the wait for an answer to
    begin and each answer as a whole from its first byte; ``security``: the protection mode
    the server requires (``session.MODES``)."""

    def __init__(self, address: tuple[str, int], token: bytes, timeout: float,
                 max_reply: int = 1 << 34, security: str = "integrity"):
        self.address = tuple(address)
        self.max_reply = max_reply
        self.timeout = float(timeout)
        mode = check_mode(security, "Connection")
        try:
            sock = socket.create_connection(self.address, timeout=timeout)  # type: ignore[arg-type]  # (host, port)
        except socket.timeout as exc:
            raise TimeoutError(f"timed out after {timeout} s connecting to the sparkdl server at "
                               f"{self.address[0]}:{self.address[1]}") from exc
        except OSError as exc:
            raise ConnectionError(f"could not reach the sparkdl server at {self.address[0]}:"
                                  f"{self.address[1]}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().__init__(sock, client_handshake(sock, token, mode, Deadline(self.timeout)))
        except BaseException:
            sock.close()
            raise

    def request(self, op: int, meta: dict | None = None, array: np.ndarray | None = None,
                out: np.ndarray | None = None, what: str = "the server's answer") -> Frame:
        self.send(op, meta, array)
        return self.receive(out=out, what=what)

    def send(self, op: int, meta: dict | None = None, array: np.ndarray | None = None) -> None:
        """Send a request without waiting for its answer: requests sent back to back are
        answered in order (``receive`` once for each), saving a round trip per request."""
        super().send(op, meta, array)

    def receive(self, out: np.ndarray | None = None, what: str = "the server's answer") -> Frame:
        """The answer to the oldest request not yet answered; RemoteError for an ERROR frame."""
        if not frame_arrives(self.sock, what):
            raise ConnectionError(f"the server closed the connection instead of sending {what}")
        reply = self.recv(self.max_reply, out=out, what=what, deadline=self.timeout)
        if reply.op == Op.ERROR:
            raise RemoteError(str(reply.meta.get("error", "the server refused the request")))
        return reply

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
