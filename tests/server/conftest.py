"""A real uvicorn server on a free loopback port, in a thread, over the 36-pair sample index."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

API_KEY = "test-key-0123456789"


@dataclass
class LiveServer:
    url: str
    port: int
    api_key: str | None
    app: Any

    def client(self, **kwargs: Any) -> Any:
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)


def start_server(app: Any) -> tuple[Any, threading.Thread, int]:
    """Run ``app`` under uvicorn on 127.0.0.1 with an OS-chosen port; wait until it listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return server, thread, port


@pytest.fixture(scope="session")
def echo_config() -> Any:
    from mmedrag.config import Component, Config

    return Config(generator=Component(name="echo"))


def _live(index_dir: Path, config: Any, api_key: str | None, **options: Any) -> Iterator[LiveServer]:
    from mmedrag.server.app import create_app

    app = create_app(index_dir, config=config, api_key=api_key, **options)
    server, thread, port = start_server(app)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", port, api_key, app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live(hashing_index: Any, echo_config: Any) -> Iterator[LiveServer]:
    """Open server (no API key) with the echo generator and a 2 MB upload limit."""
    yield from _live(hashing_index.dir, echo_config, None, max_upload_mb=2)


@pytest.fixture(scope="session")
def live_auth(hashing_index: Any, echo_config: Any) -> Iterator[LiveServer]:
    """Server that requires ``API_KEY``."""
    yield from _live(hashing_index.dir, echo_config, API_KEY)


@pytest.fixture(scope="session")
def sample_image(sample_dir: Path) -> Path:
    return sample_dir / "images" / "synpic19605.jpg"
