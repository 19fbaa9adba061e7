"""Report thumbnails: from the original file, aspect kept; placeholders for what is not there."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentsearch.data import ImageData
from latentsearch.report.thumbnails import (
    CHANGED,
    MISSING,
    PAD_COLOR,
    THUMB,
    UNREADABLE,
    image_tiles,
    original_tile,
    pixel_tile,
    placeholder,
)


def _stripes(path: Path, width: int = 800, height: int = 400, stripe: int = 20) -> Path:
    """Black and white vertical stripes: 40 of them across, far more than 32 px can hold."""
    x = np.arange(width)
    row = np.where((x // stripe) % 2 == 0, 0, 255).astype(np.uint8)
    pixels = np.repeat(np.repeat(row[None, :, None], height, axis=0), 3, axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)
    return path


def _transitions(line: np.ndarray) -> int:
    dark = line < 128
    return int(np.count_nonzero(dark[1:] != dark[:-1]))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_thumbnail_keeps_the_originals_detail_and_aspect(tmp_path: Path, suffix: str) -> None:
    path = _stripes(tmp_path / f"stripes{suffix}")
    tile = original_tile(path, hashlib.sha256(path.read_bytes()).hexdigest())
    assert tile.status is None and tile.name == path.name and tile.caption == path.name
    assert tile.pixels.shape == (THUMB, THUMB, 3) and tile.pixels.dtype == np.uint8
    grey = tile.pixels.mean(axis=2)
    # 2:1 aspect kept: the picture spans the width and half the height, padded above and
    # below (not stretched to the square, not cropped).
    drawn_rows = np.flatnonzero((tile.pixels != PAD_COLOR).any(axis=(1, 2)))
    assert drawn_rows[0] == pytest.approx(THUMB / 4, abs=2)
    assert len(drawn_rows) == pytest.approx(THUMB / 2, abs=2)
    # All 40 stripes still there: 39 edges, more than a 32-px input could show.
    assert _transitions(grey[THUMB // 2]) >= 37


def test_a_gone_file_is_a_placeholder_that_says_missing(tmp_path: Path) -> None:
    tile = original_tile(tmp_path / "gone.jpg")
    assert tile.status == MISSING and tile.name == "gone.jpg"
    assert tile.caption == "gone.jpg (missing)"
    np.testing.assert_array_equal(tile.pixels, placeholder(MISSING))


def test_a_file_whose_content_changed_is_a_placeholder_that_says_changed(tmp_path: Path) -> None:
    path = _stripes(tmp_path / "edited.png")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    _stripes(path, stripe=10)  # same name, other content
    tile = original_tile(path, before)
    assert tile.status == CHANGED and tile.caption == "edited.png (changed)"
    assert not np.array_equal(placeholder(CHANGED), placeholder(MISSING))  # the word differs


def test_an_undecodable_file_is_a_placeholder_that_says_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image at all")
    assert original_tile(path).status == UNREADABLE


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_file_that_became_a_named_pipe_is_unreadable_not_a_hang(tmp_path: Path) -> None:
    import threading

    pipe = tmp_path / os.fsdecode(b"caf\xe9.jpg")
    os.mkfifo(pipe)
    out: list = []
    worker = threading.Thread(target=lambda: out.append(original_tile(pipe)), daemon=True)
    worker.start()
    worker.join(timeout=60)  # a guard against a hang, not a timing check
    if not out:  # unblock the reader a regression left waiting in open()
        with open(pipe, "wb"):
            pass
    assert out, "original_tile blocked on a named pipe"
    assert out[0].status == UNREADABLE and out[0].name == "caf\\xe9.jpg"


def test_images_without_files_are_drawn_from_their_pixels_crisply(tmp_path: Path) -> None:
    eight = np.zeros((8, 8, 1), np.uint8)
    eight[:, 4:] = 255
    tile = pixel_tile(eight)
    assert tile.shape == (THUMB, THUMB, 3)
    assert set(np.unique(tile)) == {0, 255}  # nearest: no blur between the halves
    files = ImageData(
        pixels=np.zeros((2, 4, 4, 3), np.uint8),
        labels=np.array([-1, -1]),
        class_names=[],
        ids=["a", "b"],
        paths=[str(_stripes(tmp_path / "a.png")), str(tmp_path / "b.png")],
    )
    a, b = image_tiles(files, [0, 1])
    assert a.status is None and a.name == "a.png" and b.status == MISSING
    arrays = ImageData(pixels=np.full((1, 4, 4, 3), 9, np.uint8), labels=np.array([-1]),
                       class_names=[], ids=["x"])  # fmt: skip
    (only,) = image_tiles(arrays, [0])
    assert only.name == "" and only.status is None and (only.pixels == 9).all()
