"""A real llama-cpp-python OpenAI-compatible server in a subprocess, for the backend tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def llama_server(log_path: Path, *args: str) -> Iterator[str]:
    """Start ``llama_cpp.server`` with the shipped SmolLM2 GGUF and ``args``; yield its base
    URL once ``/v1/models`` answers (fail with the log's tail if it dies or takes 90 s)."""
    from mmedrag.generation.llama_cpp import default_gguf

    port = free_port()
    log = open(log_path, "w")  # noqa: SIM115 - a file, not a pipe: llama.cpp logs a lot
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(default_gguf()),
         "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1", *args],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 90 s")
            time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
