"""Indexed files as the server reads them: names that are not UTF-8, paths that became pipes."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from latentsearch.data import load_data
from latentsearch.index import ImageIndex, all_images
from latentsearch.runs import load_run
from latentsearch.server.app import create_app

if TYPE_CHECKING:
    from conftest import Built

LATIN1 = os.fsdecode(b"caf\xe9.png")
"""A Latin-1 file name as Python sees it: the byte 0xE9 kept as a lone surrogate."""


def _indexed_copy(built: Built, tmp_path: Path, latin1: bool) -> tuple[Path, Path]:
    """A private copy of the fixture folder (plus ``odd/café.png`` named in Latin-1 when
    ``latin1``) and its index, by the fixture's run."""
    folder = tmp_path / "images"
    shutil.copytree(built.folder, folder)
    if latin1:
        (folder / "odd").mkdir()
        Image.new("RGB", (20, 20), (200, 30, 30)).save(folder / "odd" / LATIN1, format="PNG")
    data = all_images(load_data(str(folder), image_size=16, cache_dir=tmp_path / "cache"))
    ImageIndex.build(load_run(built.run), data).save(tmp_path / "own.index")
    return folder, tmp_path / "own.index"


@pytest.fixture
def own(built: Built, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the fixture folder and its index."""
    return _indexed_copy(built, tmp_path, latin1=False)


@pytest.fixture
def latin1(built: Built, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the fixture folder plus ``odd/café.png`` named in Latin-1, indexed."""
    return _indexed_copy(built, tmp_path, latin1=True)


def test_an_item_whose_name_is_not_utf8_is_listed_and_served(latin1: tuple[Path, Path]) -> None:
    folder, index = latin1
    client = TestClient(create_app(index))
    meta = client.get("/items/odd/caf%5Cxe9.png")
    assert meta.status_code == 200, meta.text
    body = meta.json()
    assert body["id"] == "odd/caf\\xe9.png" and body["filename"] == "caf\\xe9.png"
    image = client.get(body["image_url"])
    assert image.status_code == 200, image.text
    assert image.content == (folder / "odd" / LATIN1).read_bytes()
    assert "caf" in image.headers["content-disposition"]
    near = client.get(body["neighbors_url"], params={"k": 1}).json()
    assert near["neighbors"][0]["id"] == "odd/caf\\xe9.png"


def _answered(call: Callable[[], Any]) -> Any:
    """``call()``, failing (not hanging the suite) when it blocks on a named pipe."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(call()), daemon=True)
    worker.start()
    worker.join(timeout=60)  # a guard against a hang, not a timing check
    assert out, "the request blocked (on a named pipe?)"
    return out[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_file_that_became_a_named_pipe_is_a_prompt_404(own: tuple[Path, Path]) -> None:
    folder, index = own
    client = TestClient(create_app(index))
    target = folder / "red" / "0.png"
    target.unlink()
    os.mkfifo(target)
    try:
        r = _answered(lambda: client.get("/items/red/0.png/image"))
        assert r.status_code == 404, r.text
        detail = r.json()["detail"]
        assert "named pipe" in detail and "--update" in detail
        assert _answered(lambda: client.get("/health")).status_code == 200
    finally:
        with contextlib.suppress(OSError):  # unblocks a reader stuck in open (a regression)
            os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
