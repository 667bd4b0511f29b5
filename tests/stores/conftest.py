"""A real Milvus server for the store contract suite (``milvus_server_uri``).

The ``milvus`` PyPI package (``mmedrag[milvus-server]``) ships a Milvus Standalone binary with an
embedded etcd and local storage. The fixture starts it once per session in a temporary folder
on a free port, and stops it at the end; without the package the tests that need it skip.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a Milvus Standalone server started for this session."""
    milvus = pytest.importorskip(
        "milvus", reason="the Milvus server package is not installed (pip install "
                         "'mmedrag[milvus-server]')")
    pytest.importorskip("pymilvus")
    base: Path = tmp_path_factory.mktemp("milvus-server")
    server = milvus.MilvusServer()
    server.set_base_dir(str(base))
    server.listen_port = _free_port()
    try:
        server.start()  # waits for /healthz (up to 180 s)
    except Exception as exc:  # noqa: BLE001 - report why, then skip
        server.stop()
        log = base / "logs" / "milvus-stderr.log"
        tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
        pytest.skip(f"the Milvus server did not start: {exc}; {tail}")
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()
