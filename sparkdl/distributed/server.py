"""A threaded frame server on the driver, alive for one ``fit``.

``FrameServer(service, token)`` listens on an ephemeral port (unless one is given), checks
every connection's HMAC answer, then hands each request frame to ``service.handle(frame)``
and sends back the frame it returns. A connection that breaks the protocol (bad frame, too
big, wrong token, silent for longer than the timeout) is closed; the others keep being
served. ``close()`` (or leaving the ``with`` block) stops accepting, closes every connection
and frees the port.

A service may also define ``receive_buffer(op, meta, shape, dtype)`` to give the array of an
incoming frame a place to land (it may block to bound memory) and ``release()``, called in
the same thread once the request is answered or has failed.
"""
from __future__ import annotations

import logging
import queue
import socket
import threading

import numpy as np

from sparkdl.distributed import protocol
from sparkdl.distributed.protocol import Frame, Op
from sparkdl.engine import checks

logger = logging.getLogger(__name__)


class PushBuffers:
    """Mixin for services: PUSH frames of ``size`` float32 values land in one of ``count``
    reusable buffers, so concurrent pushes hold at most ``count`` vectors in memory (a push
    waits up to ``timeout`` for a free one)."""

    def _setup_push_buffers(self, size: int, count: int, timeout: float) -> None:
        self._push_size, self._push_timeout = int(size), float(timeout)
        self._pool: queue.Queue = queue.Queue()
        for _ in range(max(1, count)):
            self._pool.put(np.empty(self._push_size, np.float32))
        self._held = threading.local()

    def receive_buffer(self, op, meta, shape, dtype):
        if op != Op.PUSH or shape != (self._push_size,) or dtype != np.float32:
            return None
        try:
            buf = self._pool.get(timeout=self._push_timeout)
        except queue.Empty:
            raise TimeoutError(f"no receive buffer freed within {self._push_timeout} s") from None
        self._held.buffer = buf
        return buf

    def release(self) -> None:
        buf = getattr(self._held, "buffer", None)
        if buf is not None:
            self._held.buffer = None
            self._pool.put(buf)


class Refused(Exception):
    """Raised by a service: the request is answered with an ERROR frame, the connection stays."""


def int_field(meta: dict, key: str) -> int:
    """The int ``meta[key]`` of a request, or Refused: services check a field before using it."""
    return checks.integer(meta.get(key), repr(key), "request", error=Refused)


class FrameServer:
    def __init__(self, service, token: bytes, host: str = "127.0.0.1", port: int = 0,
                 timeout: float = 120.0, name: str = "sparkdl-server"):
        if not isinstance(token, bytes) or len(token) < 16:
            raise ValueError("FrameServer: expected a token of at least 16 bytes")
        self.service = service
        self._release = getattr(service, "release", None)
        self.token = token
        self.timeout = float(timeout)
        self.name = name
        self.stats = {"connections": 0, "refused": 0, "protocol_errors": 0, "requests": 0}
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._closed = False
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=128)
        self.address = (host, self._sock.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True)
        self._acceptor.start()
        logger.debug("%s listening on %s:%d", name, *self.address)

    # ---- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._conns)
            threads = list(self._threads)
        for sock in [self._sock] + conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._acceptor.join(timeout=5)
        for thread in threads:
            thread.join(timeout=5)
        logger.debug("%s on %s:%d closed", self.name, *self.address)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- serving ------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while True:
            try:
                conn, peer = self._sock.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._conns.add(conn)
                self.stats["connections"] += 1
                thread = threading.Thread(target=self._serve, args=(conn, peer),
                                          name=f"{self.name}-conn", daemon=True)
                self._threads.add(thread)
            thread.start()

    def _serve(self, conn: socket.socket, peer) -> None:
        try:
            conn.settimeout(self.timeout)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                protocol.server_handshake(conn, self.token)
            except protocol.AuthenticationError as exc:
                self._count("refused")
                logger.warning("%s: refused a connection from %s (wrong token)", self.name, peer)
                self._try_error(conn, str(exc))
                return
            while True:
                try:
                    frame = self._next_request(conn)
                    if frame is None:
                        return
                    reply = self._answer(frame)
                finally:
                    if self._release is not None:
                        self._release()
                protocol.send_frame(conn, reply.op, reply.meta, reply.array)
        except protocol.ProtocolError as exc:
            self._count("protocol_errors")
            logger.warning("%s: closed a connection from %s: %s", self.name, peer, exc)
            self._try_error(conn, str(exc))
        except (ConnectionError, TimeoutError, OSError) as exc:
            logger.debug("%s: connection from %s ended: %s", self.name, peer, exc)
        finally:
            conn.close()
            with self._lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())

    def _next_request(self, conn) -> Frame | None:
        """The next request, or None when the client closed the connection between frames."""
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except socket.timeout:
            raise TimeoutError(f"no request within {self.timeout} s") from None
        if not first:
            return None
        provider = getattr(self.service, "receive_buffer", None)
        return protocol.recv_frame(conn, self.service.max_data, out=provider,
                                   what="a request")

    def _answer(self, frame: Frame) -> Frame:
        self._count("requests")
        if frame.op < 16:
            raise protocol.ProtocolError(f"op {frame.op} is not a request")
        try:
            return self.service.handle(frame)
        except Refused as exc:
            return Frame(Op.ERROR, {"error": str(exc)})

    def _try_error(self, conn, message: str) -> None:
        try:
            protocol.send_frame(conn, Op.ERROR, {"error": message[:1000]})
        except OSError:
            pass

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1
