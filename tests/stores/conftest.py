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


def _wait_healthy(server: object, timeout: float) -> None:
    """Poll the server's /healthz until OK; fail at once if its process exits (the package's
    own wait keeps polling a dead process for 180 s)."""
    import time
    import urllib.request

    process = server.server_proc  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{server.webservice_port}/healthz"  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if b"OK" in reply.read():
                    time.sleep(1.0)
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no healthy answer from {url} in {timeout:.0f} s")


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a Milvus Standalone server started for this session."""
    milvus = pytest.importorskip(
        "milvus", reason="the Milvus server package is not installed (pip install "
                         "'mmedrag[milvus-server]')")
    pytest.importorskip("pymilvus")
    base: Path = tmp_path_factory.mktemp("milvus-server")
    server = milvus.MilvusServer(wait_for_started=False)
    server.set_base_dir(str(base))
    server.listen_port = _free_port()
    try:
        server.start()
        _wait_healthy(server, timeout=120.0)
    except Exception as exc:  # noqa: BLE001 - report why, then skip
        server.stop()
        log = base / "logs" / "milvus-stderr.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        first = next((line for line in lines if "panic" in line or "rror" in line), "")
        pytest.skip(f"the Milvus server did not start: {exc} {first[:300]}")
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()
