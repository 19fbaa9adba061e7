"""Running the app with uvicorn: on a socket bound up front, in the foreground or a thread.

Binding the socket ourselves, before uvicorn starts, turns "port in use" into a clear error
instead of uvicorn's exit, and lets port 0 pick a free port whose number is then known.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

STARTUP_TIMEOUT_S = 60.0
"""How long :func:`serve_in_thread` waits for uvicorn to start before giving up."""


class ServerError(OSError):
    """The server could not listen where it was asked to."""


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


def serve(app: Any, sock: socket.socket, *, log_level: str = "info") -> None:
    """Serves ``app`` on ``sock`` until interrupted (Ctrl+C); blocks."""
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


@contextlib.contextmanager
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning"
) -> Iterator[str]:
    """Serves ``app`` from a background thread while the block runs (tests, benchmarks).

    Yields:
        The base URL, e.g. ``http://127.0.0.1:41234``.

    Raises:
        ServerError: When the address cannot be used or uvicorn does not start.
    """
    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
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
