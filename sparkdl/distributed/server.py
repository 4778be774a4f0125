"""A threaded frame server on the driver, alive for one ``fit``.

``FrameServer(service, token)`` listens on an ephemeral port (unless one is given), checks
every connection's HMAC answer, then hands each request frame to ``service.handle(frame)``
and sends back the frame it returns. ``security`` (``session.MODES``) is the protection every
frame after the handshake gets: "integrity" (the default) tags each frame, "encrypted" also
encrypts it; a client speaking another mode is refused. A connection that breaks the
protocol (bad frame, too big, wrong token, another mode, a frame that fails its tag, silent
for longer than the timeout, a handshake or a frame that does not arrive whole in time) is
closed; the others keep being served. ``close()`` (or leaving the
``with`` block) stops accepting, closes every connection and frees the port; it never raises.

The server outlives hostile or unlucky conditions: at most ``max_connections`` connections
at a time (one more gets an ERROR frame and is closed); an ``accept`` or a thread start that
fails for lack of resources (EMFILE, thread limits) is retried after a growing pause instead
of ending the accept loop; no exception escapes a connection thread (each closes that
connection and is counted in ``stats``); and warnings about such events are rate-limited.

Memory: a frame's data is bounded per op. ``service.max_data`` bounds PUSH frames; every
other op carries at most ``SMALL_DATA`` bytes unless the service lists a larger bound in
``service.data_limits`` (``{op: bytes}``). Arrays the server allocates (those the service
does not give a place) share a budget of ``memory`` bytes: a frame waits up to ``timeout``
for its share, then is drained and answered with an ERROR naming the wait.

A service may also define ``receive_buffer(op, meta, shape, dtype)`` to give the array of an
incoming frame a place to land (it may block to bound memory, raising ``protocol.Busy``
when it gives up) and ``release()``, called in the same thread once the request is answered
or has failed.
"""
from __future__ import annotations

import logging
import queue
import socket
import threading
import time

import numpy as np

from sparkdl.distributed import limits, protocol, session
from sparkdl.distributed.protocol import Frame, Op
from sparkdl.engine import checks

logger = logging.getLogger(__name__)

#: bytes of data a request other than PUSH carries, unless its service says otherwise
SMALL_DATA = 64 * 1024


class PushBuffers:
    """Mixin for services: PUSH frames of ``size`` float32 values land in one of ``count``
    reusable buffers, so concurrent pushes hold at most ``count`` vectors in memory (a push
    waits up to ``timeout`` for a free one). With a ``codec`` (``sparkdl.distributed.
    compression``), pushes are that codec's bytes: a buffer then has room for them after its
    float32 values, and ``push_values`` decodes them there."""

    def _setup_push_buffers(self, size: int, count: int, timeout: float, codec=None) -> None:
        self._push_size, self._push_timeout = int(size), float(timeout)
        self._push_codec = codec
        self._payload_size = 0 if codec is None else codec.nbytes(self._push_size)
        self._pool: queue.Queue = queue.Queue()
        self._pool_count = max(1, count)
        for _ in range(self._pool_count):
            self._pool.put(np.empty(4 * self._push_size + self._payload_size, np.uint8))
        self._held = threading.local()

    def receive_buffer(self, op, meta, shape, dtype):
        if op != Op.PUSH:
            return None
        codec = self._push_codec
        if codec is None and (shape != (self._push_size,) or dtype != np.float32):
            return None
        if codec is not None and (meta.get("codec") != codec.name or shape != (self._payload_size,)
                                  or dtype != np.uint8):
            return None
        try:
            buf = self._pool.get(timeout=self._push_timeout)
        except queue.Empty:
            raise protocol.Busy(f"no receive buffer freed within {self._push_timeout} s "
                                f"({self._pool_count} pushes already landing)") from None
        self._held.buffer = buf
        return buf[:4 * self._push_size].view(np.float32) if codec is None else buf[4 * self._push_size:]

    def push_values(self, frame) -> np.ndarray:
        """A push's ``size`` float32 values (decoded into its buffer when pushes are
        compressed), or Refused naming what the push should have carried."""
        array, codec = frame.array, self._push_codec
        if codec is None:
            if array is None or array.shape != (self._push_size,) or array.dtype != np.float32:
                got = None if array is None else (array.dtype.name, array.shape)
                raise Refused(f"expected a float32 vector of {self._push_size} values, received {got}")
            return array
        held = getattr(self._held, "buffer", None)
        if frame.meta.get("codec") != codec.name or held is None or array is None or \
                array.shape != (self._payload_size,) or array.dtype != np.uint8:
            shown = None if array is None else (frame.meta.get("codec"), array.dtype.name, array.shape)
            raise Refused(f"expected a push compressed with {codec.name!r}: {self._payload_size} bytes "
                          f"for {self._push_size} values, received {shown!r:.200}")
        return codec.decode(array, self._push_size, out=held[:4 * self._push_size].view(np.float32))

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
    """Serves ``service`` to authenticated clients, one thread per connection (see the module
    docstring). ``timeout``: seconds a connection may stay silent between requests, and for a
    request frame as a whole; ``handshake_timeout`` (default ``min(timeout, 10)``): seconds for
    the whole handshake; ``max_connections``: connections served at once; ``memory``: bytes
    of request arrays the server allocates at once (default twice the largest op bound);
    ``log_interval``: seconds between two warnings of the same kind; ``security``: the
    protection of every frame after the handshake (see the module docstring)."""

    def __init__(self, service, token: bytes, host: str = "127.0.0.1", port: int = 0,
                 timeout: float = 120.0, name: str = "sparkdl-server", max_connections: int = 256,
                 handshake_timeout: float | None = None, memory: int | None = None,
                 log_interval: float = 10.0, security: str = "integrity"):
        if not isinstance(token, bytes) or len(token) < 16:
            raise ValueError("FrameServer: expected a token of at least 16 bytes")
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"FrameServer: expected max_connections >= 1 (an int), "
                             f"received max_connections={max_connections!r}")
        self.security = session.check_mode(security, "FrameServer")
        if self.security == "encrypted":
            session.require_cipher()
        self.service = service
        self._release = getattr(service, "release", None)
        self._provider = getattr(service, "receive_buffer", None)
        self.token = token
        self.timeout = float(timeout)
        self.handshake_timeout = min(self.timeout, 10.0) if handshake_timeout is None else float(handshake_timeout)
        self.max_connections = max_connections
        self.name = name
        self.data_limits = {Op.PUSH: int(service.max_data), **getattr(service, "data_limits", {})}
        biggest = max(SMALL_DATA, *self.data_limits.values())
        self.memory = limits.MemoryBudget(max(biggest, 2 * biggest if memory is None else int(memory)))
        self.stats = {"connections": 0, "refused": 0, "protocol_errors": 0, "requests": 0,
                      "over_limit": 0, "timeouts": 0, "busy": 0, "errors": 0, "accept_errors": 0,
                      "tampered": 0}
        self._warn = limits.RateLimitedLog(logger, log_interval)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._closed = False
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=128)
        self.address = (host, self._sock.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True)
        try:
            self._acceptor.start()
        except BaseException:
            self._sock.close()
            raise
        logger.debug("%s listening on %s:%d", name, *self.address)

    # ---- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop accepting, close every connection, free the port. Never raises: it runs in
        ``finally`` blocks, where an error of its own would hide the one being handled."""
        try:
            self._close()
        except Exception as exc:
            logger.warning("%s: error while closing (ignored): %r", self.name, exc)

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._conns)
            threads = list(self._threads)
        self._stopping.set()
        for sock in [self._sock] + conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        deadline = time.monotonic() + 5
        for thread in [self._acceptor] + threads:
            if thread.ident is not None and thread is not threading.current_thread():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        logger.debug("%s on %s:%d closed", self.name, *self.address)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- accepting ----------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        """Only ``close()`` ends this loop: failures back off (growing pauses) and retry."""
        backoff = limits.Backoff()
        while not self._stopping.is_set():
            try:
                conn, peer = self._sock.accept()
            except OSError as exc:
                if self._stopping.is_set() or self._sock.fileno() < 0:
                    return              # closed: the only way this loop ends
                self._back_off(backoff, "accept failed", exc)
                continue
            try:
                if not self._admit(conn, peer):
                    continue            # refused at once: a flood must not slow the others down
                if self._start(conn, peer):
                    backoff.reset()
                else:
                    self._stopping.wait(backoff.pause())
            except Exception as exc:       # a bug here must not end the accept loop
                conn.close()
                self._back_off(backoff, "could not take a connection", exc)

    def _back_off(self, backoff: limits.Backoff, what: str, exc: BaseException) -> None:
        self._count("accept_errors")
        pause = backoff.pause()
        self._warn(logging.WARNING, what, "%s: %s (%s); accepting again in %.2f s",
                   self.name, what, exc, pause)
        self._stopping.wait(pause)

    def _admit(self, conn: socket.socket, peer) -> bool:
        """Count the connection in, or refuse it when ``max_connections`` are open."""
        with self._lock:
            full = self._closed or len(self._conns) >= self.max_connections
            if not full:
                self._conns.add(conn)
                self.stats["connections"] += 1
                return True
            self.stats["over_limit"] += 1
        self._warn(logging.WARNING, "over limit", "%s: refused a connection from %s: already %d "
                   "connections open (max_connections)", self.name, peer, self.max_connections)
        self._try_error(protocol.Channel(conn), f"the server has {self.max_connections} connections open, "
                                                f"its limit (max_connections); expected fewer clients at once")
        conn.close()
        return False

    def _start(self, conn: socket.socket, peer) -> bool:
        thread = threading.Thread(target=self._serve, args=(conn, peer), name=f"{self.name}-conn",
                                  daemon=True)
        with self._lock:
            self._threads.add(thread)
        try:
            thread.start()
            return True
        except Exception as exc:          # RuntimeError: can't start new thread
            with self._lock:
                self._threads.discard(thread)
                self._conns.discard(conn)
                self.stats["accept_errors"] += 1
            self._try_error(protocol.Channel(conn), f"the server could not serve this connection ({exc}); "
                                                    f"try again later")
            conn.close()
            self._warn(logging.WARNING, "thread start", "%s: closed a connection from %s: could "
                       "not start its thread (%s)", self.name, peer, exc)
            return False

    # ---- serving ------------------------------------------------------------------------------
    def _serve(self, conn: socket.socket, peer) -> None:
        """One connection's thread: no exception leaves it; each ends the connection, counted."""
        channel = protocol.Channel(conn)
        try:
            self._session(channel)
        except protocol.IntegrityError as exc:
            self._count("tampered")
            self._warn(logging.WARNING, "tampered", "%s: closed a connection from %s: %s",
                       self.name, peer, exc)
            self._try_error(channel, str(exc))
        except protocol.AuthenticationError as exc:
            self._count("refused")
            self._warn(logging.WARNING, "refused", "%s: refused a connection from %s (%s)",
                       self.name, peer, exc)
            self._try_error(channel, str(exc))
        except protocol.ProtocolError as exc:
            self._count("protocol_errors")
            self._warn(logging.WARNING, "protocol", "%s: closed a connection from %s: %s",
                       self.name, peer, exc)
            self._try_error(channel, str(exc))
        except TimeoutError as exc:
            self._count("timeouts")
            self._warn(logging.INFO, "timeout", "%s: closed a connection from %s: %s", self.name, peer, exc)
            self._try_error(channel, str(exc))
        except OSError as exc:          # ConnectionError included: the client went away
            logger.debug("%s: connection from %s ended: %s", self.name, peer, exc)
        except Exception as exc:        # RecursionError, MemoryError, a service's bug...
            self._count("errors")
            self._warn(logging.WARNING, "error", "%s: closed a connection from %s after %s: %s",
                       self.name, peer, type(exc).__name__, exc)
            self._try_error(channel, f"the server failed on this request ({type(exc).__name__})")
        finally:
            conn.close()
            with self._lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())

    def _session(self, channel: protocol.Channel) -> None:
        conn = channel.sock
        conn.settimeout(self.timeout)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        channel.session = protocol.server_handshake(conn, self.token, self.handshake_timeout, self.security)
        held = [0]          # bytes of the memory budget the request in hand holds
        provide = self._receive_buffer(held)
        while True:
            try:
                frame = self._next_request(channel, provide)
                if frame is None:
                    return
                reply = self._answer(frame)
            except protocol.Busy as exc:         # the frame was drained: the connection goes on
                self._count("busy")
                reply = Frame(Op.ERROR, {"error": str(exc)})
            finally:
                if self._release is not None:
                    self._release()
                if held[0]:
                    self.memory.give(held[0])
                    held[0] = 0
            channel.send(reply.op, reply.meta, reply.array)

    def _receive_buffer(self, held: list):
        """Where a request's array lands: the service's buffer, else a new array paid for from
        the memory budget (Busy when the budget does not free up within ``timeout``)."""
        def provide(op, meta, shape, dtype):
            n = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if self._provider is not None:
                buf = self._provider(op, meta, shape, dtype)
                if buf is not None and buf.nbytes == n:
                    return buf
            if not self.memory.take(n, self.timeout):
                raise protocol.Busy(f"no memory freed within {self.timeout} s for a request of {n} "
                                    f"bytes (the server holds at most {self.memory.total} bytes of "
                                    f"requests at once)")
            held[0] += n
            return None
        return provide

    def _data_limit(self, op: int) -> int:
        return self.data_limits.get(op, SMALL_DATA)

    def _next_request(self, channel: protocol.Channel, provide) -> Frame | None:
        """The next request, or None when the client closed the connection between frames."""
        if not protocol.frame_arrives(channel.sock, "a request"):
            return None
        return channel.recv(self._data_limit, out=provide, what="a request", deadline=self.timeout)

    def _answer(self, frame: Frame) -> Frame:
        self._count("requests")
        if frame.op < 16:
            raise protocol.ProtocolError(f"op {frame.op} is not a request")
        try:
            return self.service.handle(frame)
        except Refused as exc:
            return Frame(Op.ERROR, {"error": str(exc)})

    def _try_error(self, channel: protocol.Channel, message: str) -> None:
        """Tell the client why it is being closed, if that can be done without waiting (sealed
        by the connection's session once its handshake is done)."""
        try:
            channel.sock.settimeout(0)
            channel.send(Op.ERROR, {"error": message[:1000]})
        except (OSError, ValueError):
            pass

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1
