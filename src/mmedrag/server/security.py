"""Who may call the API and how much they may send.

* ``check_bind`` refuses to serve a non-loopback address without an API key.
* ``GuardMiddleware`` (pure ASGI, outermost) checks the API key on ``/v1/*`` and bounds every
  request body: a ``Content-Length`` over the limit is answered 413 before a byte of the body is
  read, and a body sent without one (chunked) is cut off as soon as it passes the limit; a body
  that stalls longer than ``body_timeout`` between chunks is answered 408; ``/v1/*`` requests
  beyond ``rate`` per second (burst ``burst``) per client and key are answered 429 with
  Retry-After. (Header deadlines and connections per client: ``server.connections``.)

Example:
    >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0")
    (True, False)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mmedrag.errors import UsageError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROTECTED_PREFIX = "/v1/"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (127.0.0.0/8, ::1); False for 0.0.0.0 and names."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Raise UsageError when ``host`` is reachable from other machines and no key is set."""
    if not is_loopback(host) and not api_key:
        raise UsageError(
            f"refusing to serve on {host} without an API key: set one in an environment "
            "variable and pass --api-key-env VAR (or bind to 127.0.0.1)")


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode("utf-8")


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is over the limit of {limit} bytes")


class BodyTimeout(Exception):
    """Raised from ``receive`` when the client stops sending its body."""


class RateLimiter:
    """Token bucket per identity: ``rate`` requests per second, bursts up to ``burst``.

    Example:
        >>> limiter = RateLimiter(rate=1.0, burst=2)
        >>> [limiter.allow("a", now=0.0) for _ in range(3)]
        [True, True, False]
    """

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate, self.burst, self.max_clients = float(rate), float(burst), max_clients
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, identity: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(identity, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) >= self.max_clients and identity not in self._buckets:
            self._buckets.clear()  # bounded memory under a flood of addresses
        allowed = tokens >= 1.0
        self._buckets[identity] = (tokens - 1.0 if allowed else tokens, now)
        return allowed


class GuardMiddleware:
    """API-key check and request-size limit in front of the whole app.

    Args:
        app: The ASGI app to guard.
        api_key: Required key (header ``X-API-Key`` or ``Authorization: Bearer``); None: open.
        max_body: Largest request body in bytes.
        headers: Added to every response that lacks them (security headers).
        body_timeout: Seconds a request body may stall between chunks (408 after).
        rate: ``/v1/*`` requests per second per client address and key (None: no limit).
        burst: Requests a client may make at once before ``rate`` applies.

    Example:
        >>> app.add_middleware(GuardMiddleware, api_key="k", max_body=20 << 20)  # doctest: +SKIP
    """

    def __init__(self, app: Any, api_key: str | None, max_body: int,
                 headers: dict[str, str] | None = None, body_timeout: float = 30.0,
                 rate: float | None = 20.0, burst: int = 60) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.limiter = RateLimiter(rate, burst) if rate else None
        self.api_key = api_key
        self.max_body = max_body
        self.headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key and scope["path"].startswith(PROTECTED_PREFIX):
            if not self._authorised(headers):
                await _reply(send, 401, "missing or wrong API key (send X-API-Key or "
                                        "Authorization: Bearer)", {"www-authenticate": "Bearer"})
                return
        if self.limiter is not None and scope["path"].startswith(PROTECTED_PREFIX):
            if not self.limiter.allow(_identity(scope, headers)):
                await _reply(send, 429, "too many requests; slow down",
                             {"retry-after": str(max(1, round(1 / self.limiter.rate)))})
                return
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _reply(send, 400, f"invalid Content-Length {declared!r}")
                return
            if int(declared) > self.max_body:
                await _reply(send, 413, f"request body of {int(declared)} bytes is over the "
                                        f"limit of {self.max_body} bytes")
                return
        await self._call_limited(scope, receive, send)

    def _authorised(self, headers: dict[str, str]) -> bool:
        supplied = headers.get("x-api-key", "")
        auth = headers.get("authorization", "")
        if not supplied and auth.lower().startswith("bearer "):
            supplied = auth[7:].strip()
        assert self.api_key is not None
        return bool(supplied) and hmac.compare_digest(supplied.encode("utf-8", "replace"),
                                                      self.api_key.encode("utf-8"))

    async def _call_limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = False

        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body, receive() only waits for a disconnect
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except asyncio.TimeoutError:
                raise BodyTimeout() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if not started:
                await _reply(send, 413, str(exc))
        except BodyTimeout:
            if not started:
                await _reply(send, 408, f"request body stalled for {self.body_timeout:.0f} s",
                             {"connection": "close"})


def _identity(scope: Scope, headers: dict[str, str]) -> str:
    """Who is asking: the client address plus a digest of the key it sent (never the key)."""
    client = (scope.get("client") or ("?", 0))[0]
    key = headers.get("x-api-key") or headers.get("authorization", "")
    return f"{client}|{hashlib.sha256(key.encode('utf-8', 'replace')).hexdigest()[:16]}"


async def _reply(send: Send, status: int, message: str,
                 extra: dict[str, str] | None = None) -> None:
    body = error_body(status, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"x-content-type-options", b"nosniff")]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
