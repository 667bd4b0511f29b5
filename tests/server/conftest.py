"""A real uvicorn server on a free loopback port, in a thread, over the 36-pair sample index."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
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


@pytest.fixture(scope="session")
def echo_config() -> Any:
    from mmedrag.config import Component, Config

    return Config(generator=Component(name="echo"))


def _live(index_dir: Path, config: Any, api_key: str | None,
          **options: Any) -> Iterator[LiveServer]:
    from mmedrag.server.app import create_app
    from mmedrag.server.background import serve_in_thread

    app = create_app(index_dir, config=config, api_key=api_key, **options)
    running = serve_in_thread(app)
    try:
        yield LiveServer(running.url, running.port, api_key, app)
    finally:
        running.stop()


@pytest.fixture(scope="session")
def start_live() -> Any:
    """Context-manager factory: ``with start_live(index_dir, config, api_key) as server: ...``."""
    from contextlib import contextmanager

    return contextmanager(_live)


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
