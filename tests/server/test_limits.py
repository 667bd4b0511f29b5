"""Deployment limits: slow-header clients closed, connections per client capped, request rate
limited per client and key, stalled bodies answered 408 — and other clients still served."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mmedrag.server.app import create_app
from mmedrag.server.background import serve_in_thread


@pytest.fixture(scope="module")
def limited(hashing_index: Any, echo_config: Any) -> Iterator[Any]:
    app = create_app(hashing_index.dir, config=echo_config, rate=5.0, burst=5,
                     body_timeout=1.0, refresh_seconds=0)
    running = serve_in_thread(app, header_timeout=1.0, max_per_client=40)
    yield running
    running.stop()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_slow_header_clients_are_closed_others_served(limited: Any) -> None:
    sockets = []
    for _ in range(30):
        sock = socket.create_connection(("127.0.0.1", limited.port))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sockets.append(sock)
    started = time.monotonic()
    with httpx.Client(base_url=limited.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
    for sock in sockets:
        sock.sendall(b"X-Slow: 1\r\n")
    closed = [closed_within(sock, 4.0) for sock in sockets]
    assert all(closed) and time.monotonic() - started < 6
    for sock in sockets:
        sock.close()


def test_connections_per_client_are_capped(hashing_index: Any, echo_config: Any) -> None:
    running = serve_in_thread(create_app(hashing_index.dir, config=echo_config,
                                         refresh_seconds=0), header_timeout=30, max_per_client=4)
    try:
        held = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(4)]
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", running.port))
        assert closed_within(extra, 2.0)
        for sock in held:
            sock.close()
        time.sleep(0.2)
        with httpx.Client(base_url=running.url, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
    finally:
        running.stop()


def test_rate_limit_per_client_and_key(limited: Any) -> None:
    with httpx.Client(base_url=limited.url, timeout=10) as client:
        time.sleep(1.2)  # a full bucket
        codes = [client.get("/v1/info").status_code for _ in range(8)]
        assert codes[:5] == [200] * 5 and 429 in codes[5:]
        limited_response = client.get("/v1/info")
        assert limited_response.status_code == 429 and limited_response.headers["retry-after"]
        assert client.get("/healthz").status_code == 200  # liveness is not rate limited
        other_key = client.get("/v1/info", headers={"X-API-Key": "another"})
        assert other_key.status_code == 200  # a different key has its own bucket


def test_stalled_body_gets_408(limited: Any) -> None:
    time.sleep(1.2)
    sock = socket.create_connection(("127.0.0.1", limited.port))
    sock.sendall(b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"text\": ")
    sock.settimeout(5)
    reply = b""
    try:  # the headers and the body may come in separate packets: read until closed
        while chunk := sock.recv(4096):
            reply += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    sock.close()
    assert reply.startswith(b"HTTP/1.1 408") and b"stalled" in reply, reply[:300]
