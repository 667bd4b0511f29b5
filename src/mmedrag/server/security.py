"""Who may call the API and how much they may send.

* ``check_bind`` refuses to serve a non-loopback address without an API key.
* ``GuardMiddleware`` (pure ASGI, outermost) checks the API key on ``/v1/*`` and bounds every
  request body: a ``Content-Length`` over the limit is answered 413 before a byte of the body is
  read, and a body sent without one (chunked) is cut off as soon as it passes the limit.

Example:
    >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0")
    (True, False)
"""

from __future__ import annotations

import hmac
import ipaddress
import json
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


class GuardMiddleware:
    """API-key check and request-size limit in front of the whole app.

    Args:
        app: The ASGI app to guard.
        api_key: Required key (header ``X-API-Key`` or ``Authorization: Bearer``); None: open.
        max_body: Largest request body in bytes.
        headers: Added to every response that lacks them (security headers).

    Example:
        >>> app.add_middleware(GuardMiddleware, api_key="k", max_body=20 << 20)  # doctest: +SKIP
    """

    def __init__(self, app: Any, api_key: str | None, max_body: int,
                 headers: dict[str, str] | None = None) -> None:
        self.app = app
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

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
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


async def _reply(send: Send, status: int, message: str,
                 extra: dict[str, str] | None = None) -> None:
    body = error_body(status, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"x-content-type-options", b"nosniff")]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
