"""A bounded fuzz run over the app's OpenAPI schema: every route, random parameters and
uploads (garbage, truncated, bomb headers, real images), and not one 5xx."""

from __future__ import annotations

import io
import random
import struct
import zlib
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from latentsearch.server.app import create_app
from latentsearch.server.limits import ServeLimits

if TYPE_CHECKING:
    from conftest import Built

CASES_PER_OPERATION = 60
"""Requests per (path, method) of the schema: a few seconds in all."""

_TEXT = [
    "",
    "red/0.png",
    "blue/shade/image",
    "../../etc/passwd",
    "%2e%2e/%2e%2e",
    "a\nb",
    "\x00",
    "ü/ß/漢字",
    "/",
    "//",
    "x" * 3000,
    "red/0.png/image",
    "?k=1",
    "#",
    "%",
    "%ZZ",
]
_K = ["1", "0", "-1", "100", "101", "1e3", "abc", "", "9" * 40, "1.5", " 3", "NaN"]


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (w % 256, h % 256, 7)).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_header(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 32)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _upload(rng: random.Random) -> bytes:
    good = _png(rng.randint(1, 64), rng.randint(1, 64))
    kind = rng.randrange(6)
    if kind == 0:
        return good
    if kind == 1:
        return good[: rng.randint(0, len(good))]
    if kind == 2:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 500)))
    if kind == 3:
        return _bomb_header(rng.choice([1, 10**5, 2**31 - 1]), rng.choice([1, 10**5, 2**31 - 1]))
    if kind == 4:
        flipped = bytearray(good)
        for _ in range(5):
            flipped[rng.randrange(len(flipped))] ^= 0xFF
        return bytes(flipped)
    return b"<svg xmlns='http://www.w3.org/2000/svg'/>"


def _request(client: TestClient, rng: random.Random, path: str, method: str) -> Any:
    # Escaped as a client would, or with "%", "?" and "#" left raw (control bytes always escaped).
    safe = "/" if rng.random() < 0.6 else "/%?#"
    item_id = quote(rng.choice(_TEXT), safe=safe)
    url = path.replace("{item_id}", item_id) if "{item_id}" in path else path
    params = {"k": rng.choice(_K)} if rng.random() < 0.7 else {}
    if method == "get":
        return client.get(url, params=params)
    if path == "/search":
        kind = rng.randrange(4)
        if kind == 0:  # no image field
            return client.post(url, data={"k": rng.choice(_K)}, params=params)
        if kind == 1:  # a body that is not multipart at all
            return client.post(
                url, content=_upload(rng), headers={"content-type": rng.choice(["text/plain", ""])}
            )
        data = {"k": rng.choice(_K)} if kind == 2 else {}
        files = {"image": (rng.choice(_TEXT) or "q", _upload(rng), "image/png")}
        return client.post(url, files=files, data=data, params=params)
    return client.request(method.upper(), url, params=params)


@pytest.mark.parametrize("seed", [0, 1])
def test_no_request_from_the_schema_gets_a_5xx(built: Built, seed: int) -> None:
    rng = random.Random(seed)
    client = TestClient(
        create_app(built.index, limits=ServeLimits(max_k=100)), raise_server_exceptions=False
    )
    schema = client.get("/openapi.json").json()
    operations = [(p, m) for p, ops in schema["paths"].items() for m in ops]
    assert len(operations) >= 7
    statuses: dict[int, int] = {}
    for path, method in operations:
        for _ in range(CASES_PER_OPERATION):
            r = _request(client, rng, path, method)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (path, method, r.status_code, r.text[:300])
            if (
                r.headers.get("content-type", "").startswith("application/json")
                and r.status_code >= 400
            ):
                assert isinstance(r.json().get("detail"), str), r.text[:300]
    assert sum(statuses.values()) == len(operations) * CASES_PER_OPERATION
    assert 200 in statuses and any(400 <= s < 500 for s in statuses)
