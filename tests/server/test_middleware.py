"""The server's middlewares over a tiny app: the ``Host`` check and the security headers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from latentsearch.server.app import create_app
from latentsearch.server.middleware import HostCheck, parse_host

if TYPE_CHECKING:
    from conftest import Built


def _hosted(allowed: list[str]) -> TestClient:
    app = FastAPI()

    @app.get("/ok")
    def ok() -> dict[str, bool]:
        return {"ok": True}

    app.add_middleware(HostCheck, allowed_hosts=allowed)
    return TestClient(app)


LOOPBACK = ["localhost", "127.0.0.1", "::1"]


@pytest.mark.parametrize(
    ("allowed", "host"),
    [
        (LOOPBACK, "localhost"),
        (LOOPBACK, "localhost:8000"),
        (LOOPBACK, "localhost."),
        (LOOPBACK, "LOCALHOST"),
        (LOOPBACK, "127.0.0.1:1234"),
        (LOOPBACK, "[::1]"),
        (LOOPBACK, "[::1]:8000"),
        (LOOPBACK, "localhost:"),  # an empty port is allowed by RFC 3986
        (["*.example.org"], "a.example.org"),
        (["*.example.org"], "a.b.example.org:443"),
        (["*"], "anything.example"),
    ],
)
def test_allowed_hosts_pass(allowed: list[str], host: str) -> None:
    assert _hosted(allowed).get("/ok", headers={"host": host}).status_code == 200


@pytest.mark.parametrize(
    ("allowed", "host"),
    [
        (LOOPBACK, "localhost:1@evil.example"),
        (LOOPBACK, "evil.example"),
        (LOOPBACK, "localhost.evil.example:8000"),
        (LOOPBACK, "127.0.0.2"),
        (LOOPBACK, "localhost:80:80"),
        (LOOPBACK, "localhost:http"),
        (LOOPBACK, "[::1]evil"),
        (LOOPBACK, "[::1"),
        (LOOPBACK, "[localhost]"),
        (LOOPBACK, "local host"),
        (LOOPBACK, ""),
        (["*.example.org"], "evil.com#.example.org"),
        (["*.example.org"], "evil.com/.example.org"),
        (["*.example.org"], "x@a.example.org"),
        (["*.example.org"], "evil.com?.example.org"),
        (["*.example.org"], "evil.com\\.example.org"),
        (["*.example.org"], "evil.com%2f.example.org"),
        (["*.example.org"], "example.org"),
        (["*"], "x@evil.example"),
        (["*"], "evil.example/path"),
    ],
)
def test_bad_or_foreign_hosts_are_400(allowed: list[str], host: str) -> None:
    r = _hosted(allowed).get("/ok", headers={"host": host})
    assert r.status_code == 400
    assert "not allowed" in r.json()["detail"]


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("Example.ORG:8080", "example.org"),
        ("example.org.", "example.org"),
        ("[2001:DB8::1]:80", "2001:db8::1"),
        ("10.0.0.1", "10.0.0.1"),
        ("a@b", None),
        ("a b", None),
        ("[::1]x", None),
        ("[zz::1]", None),
        ("host:123456", None),
        ("..", None),
    ],
)
def test_parse_host(header: str, host: str | None) -> None:
    assert parse_host(header) == host


# ---------------------------------------------------------------------------- security headers
@pytest.mark.parametrize(
    ("path", "html"),
    [
        ("/", True),
        ("/static/index.html", True),
        ("/docs", True),
        ("/redoc", True),
        ("/health", False),
        ("/openapi.json", False),
        ("/items/no-such-id", False),  # a refusal
        ("/no/such/route", False),
        ("/static/app.js", False),
    ],
)
def test_every_response_has_nosniff_and_every_page_a_csp(
    built: Built, path: str, html: bool
) -> None:
    app = create_app(built.index, allowed_hosts=["testserver"])
    r = TestClient(app).get(path)
    assert r.headers["x-content-type-options"] == "nosniff"
    if html:
        assert r.headers["content-type"].startswith("text/html")
        policy = r.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "object-src 'none'" in policy
        assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]


def test_refused_host_has_nosniff(built: Built) -> None:
    app = create_app(built.index, allowed_hosts=["localhost"])
    r = TestClient(app).get("/health", headers={"host": "evil.example"})
    assert r.status_code == 400 and r.headers["x-content-type-options"] == "nosniff"


def test_swagger_inline_script_is_allowed_by_its_hash(built: Built) -> None:
    import base64
    import hashlib
    import re

    r = TestClient(create_app(built.index)).get("/docs")
    (script,) = re.findall(r"<script>(.*?)</script>", r.text, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in r.headers["content-security-policy"]
