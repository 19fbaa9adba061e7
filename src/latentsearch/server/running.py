"""Running the app with uvicorn: on a socket bound up front, in the foreground or a thread.

Binding the socket ourselves, before uvicorn starts, turns "port in use" into a clear error
instead of uvicorn's exit, and lets port 0 pick a free port whose number is then known.

Slow clients cannot hold the server: a request's line and headers must arrive within
``ConnectionLimits.header_timeout_s`` of the connection (or of the previous answer on a kept
connection), its body may pause at most ``body_timeout_s`` between bytes, idle kept
connections close after ``keep_alive_s``, and beyond ``max_connections`` open connections
requests are answered 503. Uvicorn has the last two; the first two are :class:`GuardedH11`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

STARTUP_TIMEOUT_S = 60.0
"""How long :func:`serve_in_thread` waits for uvicorn to start before giving up."""


class ServerError(OSError):
    """The server could not listen where it was asked to."""


@dataclass(frozen=True)
class ConnectionLimits:
    """How long the server waits for a client, and for how many at once."""

    # A request's line and headers must have arrived this long after the connection opened
    # (or the previous answer was sent); else the connection is closed. Against slow headers.
    header_timeout_s: float = 10.0
    # Longest pause between two pieces of a request body before the connection is closed.
    body_timeout_s: float = 10.0
    # An idle kept-alive connection is closed after this long (uvicorn's timeout_keep_alive).
    keep_alive_s: float = 5.0
    # Open connections (and running requests) above which a request is answered 503 at once
    # (uvicorn's limit_concurrency); the others keep being served.
    max_connections: int = 1000
    # Largest request line plus headers, in bytes (400 above; h11's incomplete-event limit).
    max_header_bytes: int = 16 * 1024


class GuardedH11(H11Protocol):
    """Uvicorn's h11 protocol with a deadline for the request head and one for body pauses.

    Uvicorn times out only idle kept-alive connections: a client that opens a connection and
    sends nothing, or sends its headers a byte at a time, or stops halfway through a body,
    holds it for ever. The state of h11's parser tells which deadline applies: waiting for a
    request (``IDLE``), one per request head; reading a body (``SEND_BODY``), one per pause.
    """

    limits = ConnectionLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._guard: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm(self.limits.body_timeout_s)  # each piece of the body starts a new wait
        elif state is not h11.IDLE:
            self._disarm()  # a whole request: the app has it now
        # IDLE: the head is still incomplete; its deadline, set once, stands.

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm(self.limits.header_timeout_s)  # the next request's head

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._guard = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    def _expired(self) -> None:
        self._guard = None
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY and self.flow.read_paused:
            # The app has not taken the body read so far: the wait is ours, not the client's.
            self._arm(self.limits.body_timeout_s)
        elif state is h11.IDLE or state is h11.SEND_BODY:
            # A request still arriving (a pipelined one may have moved it on: then wait).
            self.transport.close()


def _config(app: Any, limits: ConnectionLimits, **kwargs: Any) -> uvicorn.Config:
    """Uvicorn's settings for ``app`` under ``limits``."""
    protocol = type("GuardedH11", (GuardedH11,), {"limits": limits})
    return uvicorn.Config(
        app,
        http=protocol,
        timeout_keep_alive=int(max(1, limits.keep_alive_s)),
        limit_concurrency=limits.max_connections,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        **kwargs,
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one).

    Raises:
        ServerError: When the address cannot be used (in use, not this machine's, bad port).
    """
    if not 0 <= port <= 65535:
        raise ServerError(f"port must be between 0 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServerError(f"cannot listen on {host!r}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        hint = ": choose another `port`" if e.errno in (98, 48, 10048) else ""
        raise ServerError(f"cannot listen on {host}:{port}: {e.strerror}{hint}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """The http URL a bound socket serves, e.g. ``http://127.0.0.1:8000``."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    app: Any,
    sock: socket.socket,
    *,
    log_level: str = "info",
    connections: ConnectionLimits | None = None,
) -> None:
    """Serves ``app`` on ``sock`` until interrupted (Ctrl+C); blocks.

    Args:
        app: The ASGI app.
        sock: A socket from :func:`bind`.
        log_level: Uvicorn's log level.
        connections: Timeouts and the connection limit; default :class:`ConnectionLimits`.
    """
    config = _config(
        app, connections or ConnectionLimits(), log_level=log_level, timeout_graceful_shutdown=5
    )
    uvicorn.Server(config).run(sockets=[sock])


@contextlib.contextmanager
def serve_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str = "warning",
    connections: ConnectionLimits | None = None,
) -> Iterator[str]:
    """Serves ``app`` from a background thread while the block runs (tests, benchmarks), with
    the same connection limits as :func:`serve`.

    Yields:
        The base URL, e.g. ``http://127.0.0.1:41234``.

    Raises:
        ServerError: When the address cannot be used or uvicorn does not start.
    """
    sock = bind(host, port)
    server = uvicorn.Server(_config(app, connections or ConnectionLimits(), log_level=log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ServerError("uvicorn did not start serving")
            time.sleep(0.02)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_S)
        sock.close()
