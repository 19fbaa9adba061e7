"""``search --grid``: thumbnails of the files with their names; verdicts only with labels."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from latentsearch.data import load_data
from latentsearch.index import ImageIndex
from latentsearch.index.streaming import index_images
from latentsearch.report import figures
from latentsearch.report.search_grid import GRID_TILE, search_grid
from latentsearch.report.thumbnails import PAD_COLOR
from latentsearch.runs import Run

SIZE = 8  # the session's colour runs' input size


def _index(run: Run, folder: Path, cache: Path, *, labels: bool) -> ImageIndex:
    data = load_data(str(folder), image_size=SIZE, cache_dir=cache)
    data = data if labels else data.without_labels()
    built = index_images(run, data.train, data_spec=str(folder))
    assert built.index is not None
    return built.index


def _search(
    index: ImageIndex, run: Run, queries: list[Path], k: int, cache: Path
) -> list[list[Any]]:
    data = load_data(str(queries[0].parent.parent), image_size=SIZE, cache_dir=cache)
    by_path = {Path(p): i for i, p in enumerate(data.train.paths or [])}
    pixels = np.stack([data.train.pixels[by_path[q]] for q in queries])
    return index.search_images(run, pixels, k)


@pytest.fixture
def folder(rgb_runs: tuple[Run, Run], tmp_path: Path) -> Path:
    """A copy of the folder the colour runs were trained on (blue/, green/, red/), 48 x 24 px."""
    source = Path(rgb_runs[0].config.data)
    copy = Path(shutil.copytree(source, tmp_path / "images"))
    for path in copy.rglob("*.png"):  # wider than tall, so the kept aspect shows
        with Image.open(path) as img:
            img.resize((48, 24), Image.Resampling.NEAREST).save(path)
    return copy


@pytest.fixture
def grid_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    original = figures.retrieval_grid

    def spy(*args: Any, **kwargs: Any) -> Path:
        calls.append({"args": args, **kwargs})
        return original(*args, **kwargs)

    monkeypatch.setattr("latentsearch.report.search_grid.retrieval_grid", spy)
    return calls


def test_an_index_without_labels_gets_names_and_distances_not_verdicts(
    rgb_runs: tuple[Run, Run], folder: Path, tmp_path: Path, grid_calls: list[dict[str, Any]]
) -> None:
    run = rgb_runs[0]
    index = _index(run, folder, tmp_path / "cache", labels=False)
    assert not index.labelled
    queries = [folder / "blue" / "0.png", folder / "red" / "1.png"]
    results = _search(index, run, queries, 3, tmp_path / "cache")
    # One result gone since indexing, another changed.
    gone, changed = Path(results[0][1].path), Path(results[1][2].path)
    gone.unlink()
    with Image.open(changed) as img:
        Image.fromarray(255 - np.asarray(img)).save(changed)
    out = search_grid(tmp_path / "grid.png", index, [str(q) for q in queries], results)
    assert out.is_file()
    (call,) = grid_calls
    assert call["correct"] is None
    q_tiles = call["args"][0]
    assert q_tiles.shape == (2, GRID_TILE, GRID_TILE, 3)
    drawn_rows = np.flatnonzero((q_tiles[0] != PAD_COLOR).any(axis=(1, 2)))
    assert len(drawn_rows) == pytest.approx(GRID_TILE / 2, abs=2)  # 2:1 kept, not stretched
    titles = call["neighbor_titles"]
    for row, found in zip(titles, results, strict=True):
        for title, n in zip(row, found, strict=True):
            assert title.splitlines()[0] == f"d²={n.distance:.3g}"
            assert Path(n.path).name in title.splitlines()[1]
            assert not any(c in title for c in ("blue", "green", "red"))
    assert titles[0][1].endswith("(missing)") and titles[1][2].endswith("(changed)")


def test_an_index_with_labels_keeps_its_verdicts(
    rgb_runs: tuple[Run, Run], folder: Path, tmp_path: Path, grid_calls: list[dict[str, Any]]
) -> None:
    run = rgb_runs[0]
    index = _index(run, folder, tmp_path / "cache", labels=True)
    assert index.labelled
    queries = [folder / "green" / "2.png"]
    results = _search(index, run, queries, 3, tmp_path / "cache")
    search_grid(tmp_path / "grid.png", index, [str(q) for q in queries], results)
    (call,) = grid_calls
    assert call["correct"] is not None
    assert call["neighbor_titles"][0][0].splitlines()[0] == results[0][0].class_name
