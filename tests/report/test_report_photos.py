"""The report of a photo folder run: no verdicts without labels, thumbnails from the files.

A tiny folder in the layout of the issue (``originals/``, ``queries/``, some queries exact
copies of originals), large images with a distinctive pattern, and a run trained on it
without labels (8 x 8 model input): the report must not turn the folder names into classes,
and must draw the files, not the 8 x 8 pixels.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from latentsearch.clusters import ClusterConfig, ClusterHead, head_path
from latentsearch.clusters.head import mlp
from latentsearch.data import DataSplits, load_data
from latentsearch.report import build_report, figures
from latentsearch.report.thumbnails import PAD_COLOR, THUMB
from latentsearch.runs import EVAL_FILE, Run, TrainConfig, load_run
from latentsearch.training import train

PER_FOLDER = 12
COPIES = 3  # queries/q0..q2 are byte-for-byte copies of originals/o0..o2
VERDICT_FILES = {"contingency.png", "precision_per_class.png"}


def _checkerboard(seed: int) -> np.ndarray:
    """A 192 x 96 image of 12-px squares in two colours. Shape: (96, 192, 3)."""
    colour = np.random.default_rng(seed).integers(0, 256, 3)
    yy, xx = np.mgrid[:96, :192]
    dark = ((xx // 12 + yy // 12) % 2 == 0)[..., None]
    return np.where(dark, colour, 255 - colour).astype(np.uint8)


def _folder(root: Path) -> Path:
    for sub in ("originals", "queries"):
        (root / sub).mkdir(parents=True)
    for i in range(PER_FOLDER):
        Image.fromarray(_checkerboard(i)).save(root / "originals" / f"o{i}.png")
    for i in range(PER_FOLDER):
        if i < COPIES:
            shutil.copy(root / "originals" / f"o{i}.png", root / "queries" / f"q{i}.png")
        else:
            Image.fromarray(_checkerboard(100 + i)).save(root / "queries" / f"q{i}.png")
    return root


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    """A seed-ae trained one epoch without labels on the folder, as ``up --no-labels`` does."""
    root = tmp_path_factory.mktemp("photo-run")
    photos = _folder(root / "photos")
    data = load_data(str(photos), image_size=8, cache_dir=root / "cache")
    assert data.train.class_names == ["originals", "queries"]  # folders the reader sees
    config = TrainConfig(data=str(photos), model="seed-ae", epochs=1, image_size=8, batch_size=4)
    run = train(config, root / "run", progress=False, data=data.without_labels())
    assert run.class_names == []  # what the run records: trained without labels
    return load_run(run.path), photos


class _Drawn:
    """What ``build_report`` passed to the figure functions (they still draw)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: dict[str, dict[str, Any]] = {}
        for name in ("retrieval_grid", "embedding_map", "gallery"):
            original = getattr(figures, name, None)
            if original is not None:
                monkeypatch.setattr(figures, name, self._spy(name, original))

    def _spy(self, name: str, original: Any) -> Any:
        def spy(*args: Any, **kwargs: Any) -> Any:
            key = name if name != "gallery" else Path(args[1]).stem
            self.calls[key] = {"args": args, **kwargs}
            return original(*args, **kwargs)

        return spy


def _saved(index: Path) -> dict[str, Any]:
    return dict(json.loads((index.parent / "report.json").read_text()))


def test_a_run_without_labels_gets_no_verdicts_classes_or_legend(
    photo_run: tuple[Run, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run, _ = photo_run
    monkeypatch.setenv("LATENTSEARCH_CACHE", str(tmp_path / "cache"))
    drawn = _Drawn(monkeypatch)
    # No data given: the report loads the run's folder, whose subfolders name two "classes".
    index = build_report(run, tmp_path / "report", max_points=50, n_queries=4, k=4)
    saved = _saved(index)
    files = {f["file"] for f in saved["figures"]}
    assert not files & VERDICT_FILES
    assert not {p.name for p in index.parent.glob("*.png")} & VERDICT_FILES
    assert {"retrieval.png", "neighbour_distances.png", "duplicates.png"} <= files
    assert saved["labelled"] is False and saved["metrics"] is None
    assert saved["data"]["class_names"] == [] and "contingency" not in saved
    assert "precision_at_10_per_class" not in saved

    grid = drawn.calls["retrieval_grid"]
    assert grid["correct"] is None  # no green / red frames, no ✓ / ✗
    titles = [*grid["query_titles"], *(t for row in grid["neighbor_titles"] for t in row)]
    assert not any(word in t for t in titles for word in ("originals", "queries", "unlabelled"))
    assert drawn.calls["embedding_map"]["args"][2] == []  # no class legend
    text = index.read_text(encoding="utf-8")
    assert "green frame" not in text and "Clusters against classes" not in text
    assert "carry no labels" in text


def test_the_retrieval_grid_draws_the_files_with_their_names(
    photo_run: tuple[Run, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, photos = photo_run
    data = load_data(str(photos), image_size=8, cache_dir=tmp_path / "cache")
    drawn = _Drawn(monkeypatch)
    build_report(run, tmp_path / "report", data=data, max_points=50, n_queries=4, k=4)
    grid = drawn.calls["retrieval_grid"]
    queries, neighbours = grid["args"][0], grid["args"][1]
    assert queries.shape == (4, THUMB, THUMB, 3) and neighbours.shape == (4, 4, THUMB, THUMB, 3)
    names = {p.name for p in photos.rglob("*.png")}
    for title in grid["query_titles"]:
        assert title.splitlines()[-1] in names
    for row in grid["neighbor_titles"]:
        for title in row:
            distance, name = title.splitlines()
            assert distance.startswith("d²=") and name in names
    # 2:1 pictures padded into square cells, with all 16 squares of a row still apart
    # (the model saw 8 x 8 pixels: at most 7 edges).
    tile = queries[0].astype(np.int64)
    drawn_rows = np.flatnonzero((tile != PAD_COLOR).any(axis=(1, 2)))
    assert len(drawn_rows) == pytest.approx(THUMB / 2, abs=2)
    row = tile[THUMB // 2 - 3]
    edges = np.count_nonzero(np.abs(np.diff(row, axis=0)).sum(axis=1) > 60)
    assert edges >= 15


def test_near_duplicates_and_distances_are_shown_without_labels(
    photo_run: tuple[Run, Path], tmp_path: Path
) -> None:
    run, photos = photo_run
    data = load_data(str(photos), image_size=8, cache_dir=tmp_path / "cache")
    saved = _saved(build_report(run, tmp_path / "report", data=data, max_points=50, k=4))
    groups = {frozenset(g) for g in saved["duplicates"]["shown"]}
    for i in range(COPIES):  # each exact copy is grouped with its original
        assert any({f"o{i}.png", f"q{i}.png"} <= g for g in groups), groups
    distances = saved["neighbour_distances"]
    assert distances["images"] == 2 * PER_FOLDER
    assert distances["below_threshold"] >= 2 * COPIES


def test_missing_and_changed_files_are_placeholders_and_the_report_is_written(
    photo_run: tuple[Run, Path], tmp_path: Path
) -> None:
    run, photos = photo_run
    copy = shutil.copytree(photos, tmp_path / "photos")
    data = load_data(str(copy), image_size=8, cache_dir=tmp_path / "cache")
    # After loading (as while `up` trains): every query drawn is gone or changed.
    for i, path in enumerate(sorted(copy.rglob("*.png"))):
        if i % 2:
            path.unlink()
        else:
            Image.fromarray(_checkerboard(500 + i)).save(path)
    index = build_report(run, tmp_path / "report", data=data, max_points=50, n_queries=4, k=4)
    saved = _saved(index)
    statuses = {status for _, status in saved["unavailable"]}
    assert statuses == {"missing", "changed"}
    assert (index.parent / "retrieval.png").is_file()
    text = index.read_text(encoding="utf-8")
    name, status = saved["unavailable"][0]
    assert f"{name} ({status})" in text


def test_a_cluster_head_gives_cluster_sizes_and_members(
    photo_run: tuple[Run, Path], tmp_path: Path
) -> None:
    run, photos = photo_run
    copy = dataclasses.replace(run, path=Path(shutil.copytree(run.path, tmp_path / "run")))
    torch.manual_seed(0)
    config = ClusterConfig(n_clusters=3, hidden=16)
    ClusterHead(
        net=mlp(run.model.embedding_dim, 3, 16).eval(),
        config=config,
        encoder_sha256=run.fingerprint["weights_sha256"],
        history=[],
    ).save(head_path(copy.path))
    data = load_data(str(photos), image_size=8, cache_dir=tmp_path / "cache")
    index = build_report(copy, tmp_path / "report", data=data, max_points=50, k=4)
    clusters = _saved(index)["clusters"]
    assert clusters["n_clusters"] == 3
    assert sum(clusters["sizes"].values()) == 2 * PER_FOLDER
    for c, members in clusters["members"].items():
        assert 1 <= len(members) <= min(6, clusters["sizes"][c])
    assert (index.parent / "clusters.png").is_file()


def test_a_run_that_recorded_classes_keeps_its_verdicts(
    photo_run: tuple[Run, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, photos = photo_run
    labelled = dataclasses.replace(run, class_names=["originals", "queries"])
    data: DataSplits = load_data(str(photos), image_size=8, cache_dir=tmp_path / "cache")
    drawn = _Drawn(monkeypatch)
    index = build_report(labelled, tmp_path / "report", data=data, max_points=50, k=4)
    saved = _saved(index)
    assert saved["labelled"] is True and saved["metrics"] is not None
    assert {f["file"] for f in saved["figures"]} >= VERDICT_FILES
    assert drawn.calls["retrieval_grid"]["correct"] is not None
    assert drawn.calls["embedding_map"]["args"][2] == ["originals", "queries"]
    assert "neighbour_distances" not in saved and "duplicates" not in saved


def test_cluster_and_evaluate_do_not_score_a_run_without_labels_by_folder_names(
    photo_run: tuple[Run, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentsearch.cli import main
    from latentsearch.errors import LatentsearchError
    from latentsearch.evaluation import evaluate_run

    run, _ = photo_run
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    reloaded = load_run(copy)
    data, labelled = reloaded.labels_as_trained(
        load_data(reloaded.config.data, image_size=8, cache_dir=tmp_path / "cache")
    )
    assert not labelled and data.train.class_names == [] and not data.train.has_labels
    with pytest.raises(LatentsearchError, match="label"):
        evaluate_run(reloaded)
    assert main(["cluster", str(copy), "--clusters", "2", "--neighbours", "2"]) == 0
    out = capsys.readouterr().out
    assert "cluster head saved" in out and "nmi" not in out.lower()
    assert not (copy / EVAL_FILE).exists()
