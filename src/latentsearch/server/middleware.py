"""ASGI middlewares of the server: the upload size limit and the ``Host`` check."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class UploadLimit:
    """ASGI middleware: refuses request bodies over ``max_body_size`` bytes with a JSON 413.

    A declared ``Content-Length`` over the limit is refused before any byte is read; without
    one (chunked uploads), bytes are counted as they arrive and reading stops at the first
    byte over the limit, so no request can make the server buffer more than that.
    """

    def __init__(self, app: ASGIApp, max_body_size: int, message: str) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_size:
            response = JSONResponse({"detail": self.message}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_size:
                    # Raised inside body parsing, so the app's handler turns it into JSON.
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, limited, send)


def _host_name(header: str) -> str:
    """The host of a ``Host`` header, port and IPv6 brackets removed, lower case."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _host_allowed(host: str, allowed: Sequence[str]) -> bool:
    for pattern in allowed:
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


class HostCheck:
    """ASGI middleware: refuses requests whose ``Host`` is not allowed, with a JSON 400.

    Against DNS rebinding: a page elsewhere reaching a server on this machine through a name it
    controls. Patterns are host names or addresses (``localhost``, ``::1``,
    ``photos.example.org``), ``*.example.org`` for any subdomain, or ``*`` for any host.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.allowed = [_host_name(h) if h != "*" else h for h in allowed_hosts]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host", "")
        if not _host_allowed(_host_name(header), self.allowed):
            shown = header[:100] or "(none)"
            response = JSONResponse(
                {
                    "detail": f"host {shown!r} is not allowed here; this server answers to "
                    f"{', '.join(self.allowed)} (latentsearch serve --allowed-host adds one)"
                },
                status_code=400,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
