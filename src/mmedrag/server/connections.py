"""Connection-level limits uvicorn lacks: slow-header clients and connections per client.

``guarded_protocol`` returns an h11 protocol class for ``uvicorn.Config(http=...)`` that

* closes a connection whose request headers are not complete ``header_timeout`` seconds after
  it opened (or after its previous response): a client trickling headers ("slowloris") holds a
  socket for seconds, not forever;
* refuses (closes at once) a connection beyond ``max_per_client`` open ones from the same
  address, so one client cannot take every socket.

Body read timeouts and request rates are enforced per request in ``security.GuardMiddleware``.

Example:
    >>> protocol = guarded_protocol(header_timeout=10, max_per_client=32)
    >>> protocol.max_per_client
    32
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

LOG = logging.getLogger("mmedrag.server")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a per-client connection cap."""

    header_timeout: ClassVar[float] = 10.0
    max_per_client: ClassVar[int] = 32
    open_per_client: ClassVar[dict[str, int]] = {}  # one event loop: no lock needed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._host: str | None = self.client[0] if self.client else "?"
        count = self.open_per_client.get(self._host or "?", 0)
        if count >= self.max_per_client:
            LOG.warning("refused a connection: client already holds %d", count)
            self._host = None
            transport.close()
            return
        self.open_per_client[self._host or "?"] = count + 1
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._header_task: Any = self.loop.call_later(self.header_timeout, self._header_deadline)

    def _header_deadline(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            LOG.info("closed a connection that sent no complete request headers in %.0f s",
                     self.header_timeout)
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        task = getattr(self, "_header_task", None)
        if task is not None:
            task.cancel()
        host = getattr(self, "_host", None)
        if host is not None:
            left = self.open_per_client.get(host, 1) - 1
            if left > 0:
                self.open_per_client[host] = left
            else:
                self.open_per_client.pop(host, None)
            self._host = None
        super().connection_lost(exc)


def guarded_protocol(header_timeout: float = 10.0, max_per_client: int = 32
                     ) -> type[GuardedH11Protocol]:
    """A ``GuardedH11Protocol`` subclass with these limits (its own per-client table)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {
        "header_timeout": float(header_timeout), "max_per_client": int(max_per_client),
        "open_per_client": {}})


def uvicorn_options(header_timeout: float = 10.0, max_per_client: int = 32) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``/``uvicorn.run`` that install these limits."""
    return {"http": guarded_protocol(header_timeout, max_per_client), "timeout_keep_alive": 5}
