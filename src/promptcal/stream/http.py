"""A tiny HTTP server for ``/healthz``, ``/readyz`` and ``/metrics``.

- ``/healthz`` (liveness): 200 while the worker loop is alive, that is while it has
  called :meth:`HealthServer.heartbeat` within ``liveness_timeout`` seconds and has not
  been marked unhealthy; else 503, and Kubernetes restarts the pod.
- ``/readyz`` (readiness): 200 after :meth:`HealthServer.set_ready`, 503 before it and
  after ``set_ready(False)`` (e.g. on SIGTERM while draining).
- ``/metrics``: the Prometheus text exposition of the injected registry.

Threaded (stdlib ``http.server``), so a slow scrape never blocks a probe; the worker
loop itself runs elsewhere and only flips flags.

Least privilege (issue 15): bound to loopback unless told otherwise (a pod passes
``--http-host 0.0.0.0`` or its IP for the kubelet and Prometheus); read-only (``GET``
and ``HEAD``; anything else is 405); each connection has a socket timeout, so a client
that sends half a request cannot hold a thread; at most ``max_connections`` are
served at once, more are closed at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)


class HealthServer:
    """Serve health, readiness and metrics for one worker.

    Parameters
    ----------
    registry : prometheus_client.CollectorRegistry
        Registry exported at ``/metrics``.
    host : str
        Interface to bind: loopback by default; ``"0.0.0.0"`` so probes and scrapes
        reach a pod.
    liveness_timeout : float or None
        Longest silence between heartbeats that still counts as alive [s]; ``None``
        disables the check. Set it above the worst-case time of one exposure.
    clock : callable
        Monotonic time [s] (injectable for tests).
    request_timeout : float
        Socket timeout of one connection [s].
    max_connections : int
        Connections served at once; more are closed unanswered.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str = "127.0.0.1",
        liveness_timeout: float | None = 900.0,
        clock: Callable[[], float] = time.monotonic,
        request_timeout: float = 5.0,
        max_connections: int = 16,
    ) -> None:
        self.registry = registry
        self.host = host
        self.request_timeout = float(request_timeout)
        self.max_connections = int(max_connections)
        self.liveness_timeout = liveness_timeout
        self._clock = clock
        self._ready = False
        self._failed = False
        self._last_beat = clock()
        self._server: _BoundedServer | None = None
        self._thread: threading.Thread | None = None

    # -- state flipped by the worker ------------------------------------------------------

    def heartbeat(self) -> None:
        """The worker loop is alive (call once per poll iteration)."""
        self._last_beat = self._clock()

    def set_ready(self, ready: bool = True) -> None:
        """Mark the worker ready (warm, connected) or not (starting, draining)."""
        self._ready = bool(ready)

    def set_unhealthy(self) -> None:
        """The worker is broken for good; ``/healthz`` answers 503 from now on."""
        self._failed = True

    def is_alive(self) -> bool:
        """What ``/healthz`` reports."""
        if self._failed:
            return False
        if self.liveness_timeout is None:
            return True
        return self._clock() - self._last_beat <= self.liveness_timeout

    def is_ready(self) -> bool:
        """What ``/readyz`` reports."""
        return self._ready and self.is_alive()

    # -- server -------------------------------------------------------------------------

    def start(self, port: int = 0) -> int:
        """Start serving in a daemon thread; returns the bound port (``0`` = any free)."""
        if self._server is not None:
            raise RuntimeError("HealthServer already started")
        handler = _make_handler(self)
        self._server = _BoundedServer((self.host, port), handler, self.max_connections)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how fast stop() returns [s]
            name="promptcal-http",
            daemon=True,
        )
        self._thread.start()
        bound = int(self._server.server_address[1])
        logger.info("health/metrics server on %s:%d", self.host, bound)
        return bound

    @property
    def port(self) -> int | None:
        """The bound port while serving."""
        return int(self._server.server_address[1]) if self._server is not None else None

    def stop(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _BoundedServer(ThreadingHTTPServer):
    """A threading HTTP server that serves at most ``limit`` connections at once."""

    daemon_threads = True

    def __init__(self, address, handler, limit: int) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            logger.warning("HTTP: too many connections; closing one from %s", client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _make_handler(state: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = state.request_timeout  # socket timeout of the connection [s]

        def do_HEAD(self) -> None:
            self.do_GET()

        def _refuse(self) -> None:
            self.send_response(405)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok = state.is_alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"not alive\n")
            elif path == "/readyz":
                ok = state.is_ready()
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            elif path == "/metrics":
                self._send(200, generate_latest(state.registry), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("%s %s", self.address_string(), format % args)

    return Handler
