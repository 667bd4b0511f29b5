"""Run the app under uvicorn in a background thread on a free loopback port (tests, benchmarks,
notebooks).

Example:
    >>> from mmedrag.server.app import create_app
    >>> running = serve_in_thread(create_app("idx"))            # doctest: +SKIP
    >>> running.url                                              # doctest: +SKIP
    'http://127.0.0.1:41873'
    >>> running.stop()                                           # doctest: +SKIP
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from mmedrag.errors import MmedragError


@dataclass
class RunningServer:
    """A uvicorn server started by ``serve_in_thread``.

    Example:
        >>> with httpx.Client(base_url=running.url) as client:   # doctest: +SKIP
        ...     client.get("/healthz").json()["status"]
        'ok'
    """

    server: Any
    thread: threading.Thread
    port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=timeout)


def serve_in_thread(app: Any, port: int = 0, log_level: str = "warning",
                    timeout: float = 30.0, header_timeout: float = 10.0,
                    max_per_client: int = 32) -> RunningServer:
    """Bind 127.0.0.1:``port`` (0: any free port) and serve ``app`` until ``stop()``, with the
    connection limits of ``server.connections``."""
    import uvicorn

    from mmedrag.server.connections import uvicorn_options

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="off",
                                           **uvicorn_options(header_timeout, max_per_client)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="mmedrag-server")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise MmedragError("the server did not start (see the log above)")
        time.sleep(0.02)
    return RunningServer(server, thread, sock.getsockname()[1])
