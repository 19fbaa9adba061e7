"""The server on a real socket: slow clients are cut off, the others still answered."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI, Request

from latentsearch.server.running import ConnectionLimits, serve_in_thread

HANG_GUARD_S = 30.0
"""Longest any socket operation here may wait: a test that hangs fails instead."""

LIMITS = ConnectionLimits(header_timeout_s=0.5, body_timeout_s=0.5, keep_alive_s=1)


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ok")
    def ok() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/slow")
    def slow() -> dict[str, bool]:
        time.sleep(1.5)  # longer than every timeout: the app's own time is never cut
        return {"ok": True}

    return app


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    with serve_in_thread(_app(), connections=LIMITS) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        yield parts.hostname, parts.port


def _connect(address: tuple[str, int], first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(address, timeout=HANG_GUARD_S)
    if first:
        sock.sendall(first)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection (reads to EOF; the hang guard bounds it)."""
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return True


def _get(address: tuple[str, int], path: str) -> int:
    conn = http.client.HTTPConnection(*address, timeout=HANG_GUARD_S)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_slow_clients_are_cut_off_and_others_answered(address: tuple[str, int]) -> None:
    idle = [_connect(address) for _ in range(3)]
    slow_head = [_connect(address, b"GET /ok HTTP/1.1\r\nHost: x\r\n") for _ in range(3)]
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    slow_body = [_connect(address, head + b"0123456789") for _ in range(3)]
    assert _get(address, "/ok") == 200  # while they hang on
    for sock in idle + slow_head + slow_body:
        assert _closed_by_server(sock)
    assert _get(address, "/ok") == 200


def test_a_slow_header_trickle_is_cut_at_the_deadline(address: tuple[str, int]) -> None:
    # One byte at a time, each well within any per-byte timeout: only a deadline stops it.
    sock = _connect(address)
    cut = False
    try:
        for byte in b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
            sock.sendall(bytes([byte]))
            time.sleep(0.05)
    except (BrokenPipeError, ConnectionResetError):
        cut = True
    assert cut or _closed_by_server(sock)


def test_kept_connection_gets_a_new_head_deadline(address: tuple[str, int]) -> None:
    sock = _connect(address, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in sock.recv(4096)
    sock.sendall(b"GET /ok HTTP/1.1\r\n")  # the next request's head, never finished
    assert _closed_by_server(sock)


def test_slow_app_and_paced_body_are_not_cut(address: tuple[str, int]) -> None:
    assert _get(address, "/slow") == 200
    sock = _connect(address, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n")
    for _ in range(3):
        time.sleep(0.2)  # pauses shorter than the body timeout
        sock.sendall(b"0123456789")
    answer = b""
    while not answer.endswith(b"}") and (piece := sock.recv(4096)):
        answer += piece
    sock.close()
    assert b"200 OK" in answer and answer.endswith(b'{"bytes":30}')
