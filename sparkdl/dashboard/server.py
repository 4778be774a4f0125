"""The dashboard's web server: standard library only, one daemon thread serving, one
draining the feed into the state.

Every URL starts with the dashboard's random token, ``http://host:port/<token>/``: the page
(``index.html``, ``dashboard.js``, ``dashboard.css``, shipped in ``sparkdl/dashboard/static``)
and ``<token>/api/state?since=N`` (JSON, see ``sparkdl.dashboard.state``). A request whose
path does not start with the token gets 403 and nothing else.
"""
from __future__ import annotations

import hmac
import json
import logging
import queue
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sparkdl.dashboard.feed import DEFAULT_MAXSIZE, Feed
from sparkdl.dashboard.state import State

logger = logging.getLogger(__name__)

_STATIC = {"": ("index.html", "text/html; charset=utf-8"),
           "index.html": ("index.html", "text/html; charset=utf-8"),
           "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
           "dashboard.css": ("dashboard.css", "text/css; charset=utf-8")}


def _static(name: str) -> bytes:
    return resources.files("sparkdl.dashboard").joinpath("static").joinpath(name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = 30          # seconds a client may take to send its request
    server_version = "sparkdl-dashboard"
    sys_version = ""

    def do_GET(self) -> None:         # noqa: N802 (http.server's name)
        dashboard = self.server.dashboard
        url = urlsplit(self.path)
        prefix, _, rest = url.path.lstrip("/").partition("/")
        if not hmac.compare_digest(prefix.encode(), dashboard.token.encode()):
            self._send(403, b"403: this dashboard's URL carries its token\n", "text/plain; charset=utf-8")
            return
        if rest in _STATIC:
            name, kind = _STATIC[rest]
            self._send(200, _static(name), kind)
        elif rest == "api/state":
            try:
                since = max(int(parse_qs(url.query).get("since", ["0"])[0]), 0)
            except ValueError:
                self._send(400, b"400: expected since=<int>\n", "text/plain; charset=utf-8")
                return
            body = json.dumps(dashboard.snapshot(since), allow_nan=False).encode()
            self._send(200, body, "application/json")
        else:
            self._send(404, b"404\n", "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:     # noqa: A002 (http.server's name)
        logger.debug("dashboard %s: " + format, self.address_string(), *args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], dashboard: Dashboard):
        self.dashboard = dashboard
        super().__init__(address, _Handler)


class Dashboard:
    """A live page for one fit, served from ``host:port`` (port 0: an ephemeral one) and
    advertised as ``advertise`` (default ``host``) in ``url``. The fit publishes to
    ``feed``; ``finish(failed)`` records the end and, unless ``keep``, stops the server."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, advertise: str | None = None,
                 keep: bool = False, maxsize: int = DEFAULT_MAXSIZE):
        self.feed = Feed(maxsize)
        self.state = State()
        self.keep = bool(keep)
        self.token = secrets.token_urlsafe(24)
        self._httpd = _HTTPServer((host, int(port)), self)
        self.port = int(self._httpd.server_address[1])
        shown = advertise or host
        shown = f"[{shown}]" if ":" in shown else shown
        self.url = f"http://{shown}:{self.port}/{self.token}/"
        self._stop = threading.Event()
        self._closed = False
        self._serving = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                         name="sparkdl-dashboard-http", daemon=True)
        self._draining = threading.Thread(target=self._drain, name="sparkdl-dashboard-feed", daemon=True)
        self._serving.start()
        self._draining.start()
        _OPEN.add(self)

    @property
    def running(self) -> bool:
        """True until the dashboard is closed."""
        return not self._closed

    def snapshot(self, since: int = 0) -> dict[str, Any]:
        """The fit's state as the page's JSON (what ``/state`` serves), with the points after index ``since``."""
        self.state.dropped = self.feed.dropped
        return self.state.snapshot(since)

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                kind, event = self.feed.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._apply(kind, event)

    def _apply(self, kind: str, event: dict[str, Any]) -> None:
        try:
            self.state.apply(kind, event)
        except Exception:          # a bad event costs that event, never the fit or the server
            logger.exception("dashboard: could not record a %r event", kind)

    def _drain_rest(self) -> None:
        """Stop the draining thread and apply what is left in the queue."""
        self._stop.set()
        self._draining.join(timeout=5)
        while True:
            try:
                kind, event = self.feed.queue.get_nowait()
            except queue.Empty:
                return
            self._apply(kind, event)

    def finish(self, failed: bool) -> None:
        """The fit ended: the state is made final (every queued event applied, then the end),
        and the server stops unless the dashboard was asked to ``keep``."""
        self._drain_rest()
        self._apply("end", {"status": "failed" if failed else "finished", "time": time.time()})
        if not self.keep:
            self.close()

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._serving.join(timeout=5)
        _OPEN.discard(self)
        logger.debug("dashboard at %s stopped", self.url)


_OPEN: set[Dashboard] = set()
