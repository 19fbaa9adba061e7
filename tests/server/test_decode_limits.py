"""Uploads that decode big: refused with 413 from their header when over the decode budget."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from latentsearch.server.app import create_app
from latentsearch.server.limits import ServeLimits

if TYPE_CHECKING:
    from conftest import Built


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def test_float_upload_over_the_decode_budget_is_413(built: Built) -> None:
    # 1,000 x 1,000 pixels pass max_pixels; as floats (4 MB) they exceed 3 bytes x 1 Mpx.
    client = TestClient(create_app(built.index, limits=ServeLimits(max_pixels=1_000_000)))
    floats = _encoded(np.zeros((1000, 1000), np.float32), "TIFF")
    r = client.post("/search", files={"image": ("f.tif", floats)})
    assert r.status_code == 413, r.text
    assert "too large to decode" in r.json()["detail"]
    sixteen = _encoded(np.zeros((1000, 1000), np.uint16), "PNG")  # 2 MB: within the budget
    assert client.post("/search", files={"image": ("s.png", sixteen)}).status_code == 200


def _claimed_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height``."""
    import struct
    import zlib

    data = bytearray(_encoded(np.zeros((1, 1, 3), np.uint8), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_pillow_bomb_warning_becomes_a_plain_413(
    built: Built, recwarn: pytest.WarningsRecorder
) -> None:
    # 100 Mpx: over Pillow's warning limit (89 Mpx), under its error limit (179 Mpx).
    client = TestClient(create_app(built.index))
    r = client.post("/search", files={"image": ("bomb.png", _claimed_png(10_000, 10_000))})
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
