"""Least privilege of the HTTP endpoints and bounded metric labels (issue 15), against a
real server on a loopback port: loopback by default, read-only, a socket timeout per
connection, a bound on concurrent connections, a bound on detector label values."""

from __future__ import annotations

import http.client
import socket
import time

import pytest
from prometheus_client import CollectorRegistry

from promptcal.commands.cli import build_parser
from promptcal.stream.http import HealthServer
from promptcal.stream.settings import WorkerSettings


@pytest.fixture
def server():
    health = HealthServer(CollectorRegistry(), request_timeout=0.5, max_connections=2)
    health.start(0)
    health.set_ready(True)
    yield health
    health.stop()


def _request(port: int, method: str, path: str) -> tuple[int, bytes, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def test_loopback_is_the_default_everywhere(monkeypatch):
    assert HealthServer(CollectorRegistry()).host == "127.0.0.1"
    assert WorkerSettings(bootstrap="b", group_id="g", output="o").http_host == "127.0.0.1"
    argv = ["serve", "--bootstrap", "b", "--group", "g", "--refcat", "r", "--output", "o"]
    assert build_parser().parse_args(argv).http_host == "127.0.0.1"


def test_read_only(server):
    assert _request(server.port, "GET", "/readyz")[:2] == (200, b"ready\n")
    status, body, headers = _request(server.port, "HEAD", "/healthz")
    assert status == 200 and body == b"" and headers["Content-Length"] == "3"
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, _, headers = _request(server.port, method, "/metrics")
        assert status == 405 and headers["Allow"] == "GET, HEAD", method
    assert _request(server.port, "GET", "/readyz")[0] == 200  # still serving


def test_a_half_sent_request_is_dropped_after_the_timeout(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = time.monotonic()
        assert sock.recv(1024) == b""  # the server hung up
        assert time.monotonic() - started < 3.0


def test_connections_beyond_the_bound_are_closed(server):
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
    try:
        time.sleep(0.1)  # both accepted and waiting for a request line
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as extra:
            extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert extra.recv(1024) == b""  # closed unanswered
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 3
    while True:  # the slots are freed once the server sees the idle sockets close
        try:
            if _request(server.port, "GET", "/healthz")[0] == 200:
                break
        except http.client.RemoteDisconnected:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)
