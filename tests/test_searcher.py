"""The notebook API: its docstring examples run, and bad queries get clear errors."""

from __future__ import annotations

import doctest
import itertools
from pathlib import Path

import numpy as np
import pytest

import latentsearch
from latentsearch import searcher as searcher_module
from latentsearch.data import DataError, load_data
from latentsearch.index import ImageIndex, ImageIndexError, all_images
from latentsearch.runs import TrainConfig
from latentsearch.training import train


def test_the_docstring_examples_run() -> None:
    result = doctest.testmod(searcher_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("searcher")
    run = train(TrainConfig(data="digits", epochs=1), work / "run", progress=False)
    ImageIndex.build(run, all_images(load_data("digits")), progress=False).save(work / "index")
    return work


@pytest.fixture(scope="module")
def opened(work: Path) -> latentsearch.Searcher:
    return latentsearch.open_index(work / "index")


def test_arrays_of_another_size_are_resized_like_files(opened: latentsearch.Searcher) -> None:
    digit = load_data("digits").test.pixels[5]
    big = np.kron(digit[:, :, 0], np.ones((4, 4), dtype=np.uint8))  # (32, 32) grey
    assert opened.pixels(big).shape == (8, 8, 1)
    hits = opened.search(big, k=4)
    assert len(hits) == 4 and [h.rank for h in hits] == [1, 2, 3, 4]
    assert all(a.distance <= b.distance for a, b in itertools.pairwise(hits))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (np.zeros((8, 8, 4), dtype=np.uint8), r"must be \(H, W\)"),
        (np.zeros((8, 8), dtype=np.float32), "must be uint8"),
        ("no/such/file.png", "no such file"),
    ],
)
def test_bad_queries_are_refused_clearly(
    opened: latentsearch.Searcher, query: object, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        opened.search(query, k=1)  # type: ignore[arg-type]


def test_an_index_opened_with_another_run_is_refused(work: Path, tmp_path: Path) -> None:
    other = train(TrainConfig(data="digits", epochs=1, seed=9), tmp_path / "other", progress=False)
    with pytest.raises(ImageIndexError, match="not the run that built this index"):
        latentsearch.open_index(work / "index", run=other.path)


# ---------------------------------------------------------------------------- search by region
def _digit_png(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 32x24 grey PNG made of digits, and its pixels. Shape: (24, 32)."""
    from PIL import Image

    test = load_data("digits").test
    assert test is not None
    pixels = test.pixels
    big = np.hstack([np.kron(pixels[i][:, :, 0], np.ones((3, 3), np.uint8)) for i in (0, 7)])
    big = np.ascontiguousarray(big[:, 8:40])
    path = tmp_path / "two.png"
    Image.fromarray(big).save(path)
    return path, big


def test_a_box_is_cut_from_the_original_before_the_resize(
    opened: latentsearch.Searcher, tmp_path: Path
) -> None:
    path, big = _digit_png(tmp_path)
    part = big[2:20, 5:23]  # x 5, y 2, 18 x 18
    expected = opened.search(part, k=5)
    for query in (path, path.read_bytes(), big):
        got = opened.search(query, k=5, box=(5, 2, 18, 18))
        assert [h.id for h in got] == [h.id for h in expected]
        assert [h.distance for h in got] == pytest.approx([h.distance for h in expected])
    whole = opened.search(path, k=5)
    assert [h.distance for h in whole] != pytest.approx([h.distance for h in expected])


def test_a_box_follows_the_exif_orientation(opened: latentsearch.Searcher, tmp_path: Path) -> None:
    """The box is in the pixels as shown: a file stored sideways with an EXIF rotation is cut
    after turning it upright."""
    from PIL import Image

    _, big = _digit_png(tmp_path)  # as shown: 32 wide, 24 high
    stored = Image.fromarray(np.rot90(big, k=-1))  # 24 wide, 32 high; EXIF 6 turns it back
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "sideways.jpg", exif=exif, quality=100)
    shown = Image.open(tmp_path / "sideways.jpg").transpose(Image.Transpose.ROTATE_270)
    upright = np.asarray(shown)
    assert upright.shape == (24, 32)
    got = opened.search(tmp_path / "sideways.jpg", k=3, box=(20, 4, 12, 20))
    expected = opened.search(np.ascontiguousarray(upright[4:24, 20:32]), k=3)
    assert [h.id for h in got] == [h.id for h in expected]


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ((0, 0, 33, 24), "reaches outside the 32x24 image"),
        ((30, 0, 3, 3), "reaches outside"),
        ((0, 0, 0, 4), "at least 1 pixel"),
        ((-2, 0, 4, 4), "0 or more"),
        ((0, 0, 4), "four integers"),
        ((0, 0, 4.5, 4), "four integers"),
    ],
)
def test_bad_boxes_are_refused_clearly(
    opened: latentsearch.Searcher, tmp_path: Path, box: tuple[int, ...], message: str
) -> None:
    path, big = _digit_png(tmp_path)
    for query in (path, big):
        with pytest.raises(searcher_module.BadBox, match=message):
            opened.search(query, k=1, box=box)


@pytest.mark.parametrize(
    ("text", "box"), [("1,2,3,4", (1, 2, 3, 4)), (" 0, 0 ,10,7 ", (0, 0, 10, 7))]
)
def test_box_text_is_parsed(text: str, box: tuple[int, int, int, int]) -> None:
    assert searcher_module.parse_box(text) == box


@pytest.mark.parametrize("text", ["", "1,2,3", "1,2,3,4,5", "a,b,c,d", "1,2,0,4", "1,2,3,4.0"])
def test_bad_box_text_is_refused(text: str) -> None:
    with pytest.raises(searcher_module.BadBox, match="box"):
        searcher_module.parse_box(text)


def test_search_box_on_the_command_line(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from latentsearch.cli import main

    path, big = _digit_png(tmp_path)
    argv = ["search", str(work / "index"), str(path), "-k", "3"]
    assert main([*argv, "--box", "5,2,18,18", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["box"] == [5, 2, 18, 18]
    expected = latentsearch.open_index(work / "index").search(big[2:20, 5:23], k=3)
    assert [n["id"] for n in out["queries"][0]["neighbors"]] == [h.id for h in expected]

    assert main([*argv, "--box", "5,2,18,18"]) == 0
    text = capsys.readouterr().out
    assert "box 5,2,18,18" in text

    for bad, words in (("5,2,40,18", "reaches outside"), ("1,2", "four integers")):
        assert main([*argv, "--box", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert "--box" in err and words in err
