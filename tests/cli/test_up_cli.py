"""`latentsearch up` end to end on a tiny folder (without serving)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentsearch.cli import main


def _photos(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name, tint in (("sky", (0, 0, 200)), ("grass", (0, 200, 0))):
        for i in range(6):
            px = np.clip(rng.integers(0, 50, (10, 10, 3)) + np.array(tint), 0, 255)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(px.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_up_prepares_then_reuses_and_says_where_everything_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos, work = _photos(tmp_path / "photos"), tmp_path / "work"
    argv = ["up", str(photos), "--work", str(work), "--epochs", "1", "--no-serve", "--no-report"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trained now" in out and "12 images" in out
    assert f"latentsearch serve {work / 'index'}" in out
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "reused" in out and "0 embedded now" in out


def test_up_on_a_folder_without_images_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no pictures here")
    rc = main(["up", str(tmp_path / "empty"), "--work", str(tmp_path / "w"), "--no-serve"])
    err = capsys.readouterr().err
    assert rc == 2 and "no readable image" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--port", "70000"], "--port must be from 0 to 65535"),
        (["--port", "-1"], "--port must be from 0 to 65535"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_bad_server_options_are_refused_before_any_training(
    flag: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos, work = _photos(tmp_path / "photos"), tmp_path / "work"
    rc = main(["up", str(photos), "--work", str(work), *flag])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not work.exists()  # nothing trained, nothing written


def test_a_work_folder_inside_the_photos_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = _photos(tmp_path / "photos")
    rc = main(["up", str(photos), "--work", str(photos / "lw"), "--no-serve"])
    err = capsys.readouterr().err
    assert rc == 2 and "inside the photos folder" in err and "Traceback" not in err
    assert not (photos / "lw").exists()


def test_up_on_names_that_are_not_utf8_and_a_named_pipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    photos, work = _photos(tmp_path / "photos"), tmp_path / "work"
    Image.new("RGB", (10, 10), (200, 0, 0)).save(photos / "sky" / os.fsdecode(b"caf\xe9.png"))
    (photos / "sky" / os.fsdecode(b"b\xe4d.png")).write_bytes(b"not an image")
    if hasattr(os, "mkfifo"):
        os.mkfifo(photos / "sky" / "pipe.png")
    argv = ["up", str(photos), "--work", str(work), "--epochs", "1", "--no-serve", "--no-report"]
    # capsys writes UTF-8 strictly, as a terminal in a UTF-8 locale does.
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "13 images" in out and "b\\xe4d.png: " in out
    if hasattr(os, "mkfifo"):
        assert "pipe.png: a named pipe (FIFO), not a file; ignored" in out
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "reused" in out and "0 embedded now" in out  # found again by the same ids
