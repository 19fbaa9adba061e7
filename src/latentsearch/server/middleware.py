"""ASGI middlewares of the server: the upload size limit, the ``Host`` check and the security
headers every response carries."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""The CSP of an HTML response that sets none: nothing from elsewhere, no inline script."""


class SecurityHeaders:
    """ASGI middleware: the headers every response needs, whichever route or mount made it.

    Every response gets ``X-Content-Type-Options: nosniff`` (a browser keeps the declared type
    of JSON, scripts and images); every HTML response without a ``Content-Security-Policy`` of
    its own gets ``html_policy``. Routes that need another policy (the API docs) set theirs.
    """

    def __init__(self, app: ASGIApp, html_policy: str = PAGE_SECURITY_POLICY) -> None:
        self.app = app
        self.html_policy = html_policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("x-content-type-options", "nosniff")
                html = headers.get("content-type", "").lower().startswith("text/html")
                if html and "content-security-policy" not in headers:
                    headers["content-security-policy"] = self.html_policy
            await send(message)

        await self.app(scope, receive, send_with_headers)


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


_REG_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
"""A host name (or IPv4 address) as a ``Host`` header may carry it: dot-separated labels of
letters, digits, ``-`` and ``_``, one trailing dot allowed. Nothing else of RFC 3986's
reg-name (``%``, ``!``, ``*``, ...) has a use in a host this server answers to."""
_PORT = re.compile(r"[0-9]{0,5}")


def _host_name(header: str) -> str:
    """An allowed-host pattern's host: port and IPv6 brackets removed, lower case."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def parse_host(header: str) -> str | None:
    """The host of a ``Host`` header, lower case, without port, brackets or trailing dot.

    Strict (RFC 9110's ``uri-host [ ":" port ]``): a host name, an IPv4 address or a bracketed
    IPv6 address, then at most ``:`` and digits. Anything else (``user@host``, a path, a
    fragment, spaces, a second colon) is None, so no suffix match can be fooled by it.
    """
    host, port = header.lower(), ""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        literal, rest = host[1:end], host[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return None
        return literal if _PORT.fullmatch(rest[1:]) else None
    if ":" in host:
        host, port = host.split(":", 1)
    if not _REG_NAME.fullmatch(host) or not _PORT.fullmatch(port):
        return None
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
    ``photos.example.org``), ``*.example.org`` for any subdomain, or ``*`` for any host. The
    header is parsed strictly (:func:`parse_host`): a malformed one is refused even with ``*``.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.allowed = [_host_name(h) if h != "*" else h for h in allowed_hosts]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host", "")
        host = parse_host(header) if header else ""
        if host is None or not _host_allowed(host, self.allowed):
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
