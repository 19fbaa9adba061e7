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
