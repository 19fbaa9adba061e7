"""The whole report of a tiny digits run: pictures, links, and metrics equal to `evaluate`."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from latentsearch.cli import main
from latentsearch.data import DataSplits, ImageData, load_data
from latentsearch.evaluation import evaluate_run
from latentsearch.metrics import METRICS
from latentsearch.report import build_report, published_scores
from latentsearch.runs import Run, load_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, copy_tiny_run: Callable[[Path], Path]) -> Run:
    """A copy of the session's tiny digits run (2 epochs), free to hold reports."""
    return load_run(copy_tiny_run(tmp_path_factory.mktemp("report") / "run"))


@pytest.fixture(scope="module")
def report(run: Run) -> Path:
    return build_report(run, run.path / "report", max_points=300, n_queries=5, k=6)


@pytest.fixture(scope="module")
def evaluated(run: Run) -> dict[str, Any]:
    """What `latentsearch evaluate RUN --json --baseline` prints."""
    capture = run.path / "evaluate.json"
    with pytest.MonkeyPatch.context() as mp:
        lines: list[str] = []
        mp.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
        assert main(["evaluate", str(run.path), "--json", "--baseline"]) == 0
    capture.write_text("\n".join(lines))
    return dict(json.loads(capture.read_text()))


class _Page(HTMLParser):
    """Links, and each metric row's cells (exact value, shown text)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.rows: dict[str, list[tuple[str | None, str]]] = {}
        self._row: str | None = None
        self._cell: list[Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "tr":
            self._row = a.get("data-metric")
            if self._row:
                self.rows[self._row] = []
        elif tag == "td" and self._row and "num" in (a.get("class") or ""):
            self._cell = [a.get("data-value"), ""]

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row:
            self.rows[self._row].append((self._cell[0], self._cell[1]))
            self._cell = None


def _page(report: Path) -> _Page:
    page = _Page()
    page.feed(report.read_text(encoding="utf-8"))
    return page


def test_report_writes_every_picture_as_a_valid_non_blank_png(report: Path) -> None:
    names = {p.name for p in report.parent.glob("*.png")}
    assert names == {
        "training_curves.png",
        "map_tsne.png",
        "reconstructions.png",
        "retrieval.png",
        "precision_per_class.png",
        "contingency.png",
    }
    for name in names:
        with Image.open(report.parent / name) as im:
            assert im.format == "PNG"
            w, h = im.size
            assert 300 <= w <= 4000 and 150 <= h <= 4000, (name, im.size)
            assert np.asarray(im.convert("L"), dtype=float).std() > 8, name


def test_report_is_self_contained_and_every_reference_exists(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    links = _page(report).links
    assert "report.json" in links
    figures = json.loads((report.parent / "report.json").read_text())["figures"]
    assert {f["file"] for f in figures} <= set(links)
    for link in links:
        assert "://" not in link and not link.startswith("/"), link
        assert (report.parent / link).is_file(), link
    assert "<script" not in text and "@import" not in text and "url(" not in text


def test_report_metrics_equal_latentsearch_evaluate(
    report: Path, evaluated: dict[str, Any]
) -> None:
    saved = json.loads((report.parent / "report.json").read_text())["metrics"]
    for key in [*METRICS, "protocol", "data", "n_cluster", "n_query", "n_database"]:
        assert saved[key] == evaluated[key], key
    assert saved["baseline"] == evaluated["baseline"]
    rows = _page(report).rows
    assert set(rows) == set(METRICS)
    for key in METRICS:
        (run_value, run_text), (base_value, base_text) = rows[key]
        assert float(run_value or "nan") == evaluated[key]
        assert run_text == f"{evaluated[key]:.3f}"
        assert float(base_value or "nan") == evaluated["baseline"][key]
        assert base_text == f"{evaluated['baseline'][key]:.3f}"


def test_report_pictures_agree_with_the_scored_metrics(report: Path) -> None:
    saved = json.loads((report.parent / "report.json").read_text())
    metrics, contingency = saved["metrics"], saved["contingency"]
    counts = np.array(contingency["counts"])
    assert counts.sum() == metrics["n_cluster"]
    assert np.trace(counts) / counts.sum() == pytest.approx(metrics["acc"])
    per_class = saved["precision_at_10_per_class"]
    assert list(per_class) == [str(i) for i in range(10)]
    n = sum(c["queries"] for c in per_class.values())
    mean = sum(c["precision"] * c["queries"] for c in per_class.values()) / n
    assert n == metrics["n_query"]
    assert mean == pytest.approx(metrics["precision_at_10"], abs=1e-12)
    assert saved["map"]["points"] == 300


def test_report_shows_config_data_machine_time_and_date(run: Run, report: Path) -> None:
    saved = json.loads((report.parent / "report.json").read_text())
    text = report.read_text(encoding="utf-8")
    assert saved["config"] == run.config.to_dict()
    assert saved["train_seconds"] == pytest.approx(sum(r["seconds"] for r in run.history))
    for needle in ["seed-ae", "heldout", "1365 / 72", saved["machine"], saved["dates"]["report"],
                   "time taken", "label_fraction"]:  # fmt: skip
        assert needle in text, needle
    assert saved["published"] is None and "published" not in text.split("<h2>Pictures")[0]


def test_published_numbers_appear_for_the_seed_protocol(run: Run, tmp_path: Path) -> None:
    hint = dataclasses.replace(
        run, config=dataclasses.replace(run.config, protocol="seed", label_fraction=0.5)
    )
    assert published_scores(hint) == {"variant": "hint", "nmi": 0.433, "ri": 0.876}
    vanilla = dataclasses.replace(hint, config=dataclasses.replace(hint.config, label_fraction=0))
    assert published_scores(vanilla) == {"variant": "vanilla", "nmi": 0.074, "ri": 0.811}
    from latentsearch.report.html import metrics_table

    table = metrics_table({"nmi": 0.2, "ri": 0.8, "baseline": {"nmi": 0.1, "ri": 0.7}},
                          published_scores(hint), "digits")  # fmt: skip
    assert "published (hint, CIFAR-10)" in table and 'data-value="0.433"' in table
    assert "indicative only" in table


def test_unlabelled_images_get_a_report_without_metrics(run: Run, tmp_path: Path) -> None:
    digits = load_data("digits").train.subset(np.arange(300))
    unlabelled = ImageData(
        pixels=digits.pixels, labels=np.full(300, -1), class_names=[], ids=digits.ids
    )
    index = build_report(
        run,
        tmp_path / "report",
        data=DataSplits(train=unlabelled, test=None, name="mine"),
        max_points=60,
    )
    saved = json.loads((index.parent / "report.json").read_text())
    assert saved["metrics"] is None
    # Digits have no near-duplicates under the default threshold: no group picture.
    assert {f["file"] for f in saved["figures"]} == {
        "training_curves.png", "map_tsne.png", "reconstructions.png", "retrieval.png",
        "neighbour_distances.png",
    }  # fmt: skip
    assert saved["labelled"] is False and saved["neighbour_distances"]["images"] == 300
    assert "carry no labels" in index.read_text(encoding="utf-8")
    assert not re.search(r"data-metric", index.read_text(encoding="utf-8"))


def test_build_report_rejects_bad_sizes(run: Run, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        build_report(run, tmp_path / "r", k=0)


def test_a_given_evaluation_is_drawn_from_not_recomputed(
    run: Run, tmp_path: Path, evaluated: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluation = evaluate_run(run)  # no pixel baseline: the report adds it
    assert json.loads(json.dumps(evaluation)) == dict(evaluation)  # still a JSON-ready dict
    assert evaluation.neighbours.depth == 10 and len(evaluation.assignments) == 360

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the report embedded, evaluated or searched again")

    for name in ("embed_splits", "evaluate_run", "query_neighbours"):
        monkeypatch.setattr(f"latentsearch.report.build.{name}", fail)
    stale = tmp_path / "report" / "map_umap.png"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    index = build_report(
        run, tmp_path / "report", evaluation=evaluation, max_points=50, n_queries=2, k=2
    )
    saved = json.loads((index.parent / "report.json").read_text())["metrics"]
    # The pixel baseline was added, the same as evaluate's; the rest is the given evaluation.
    assert saved == {**evaluated, "embed_seconds": evaluation["embed_seconds"]}
    assert not stale.exists()


def test_a_deeper_grid_than_the_evaluation_kept_searches_again(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluation = evaluate_run(run, baseline=True, neighbours=3)
    monkeypatch.setattr("latentsearch.report.build.evaluate_run", None)  # must not be called
    index = build_report(run, tmp_path / "report", evaluation=evaluation, max_points=50, k=12)
    saved = json.loads((index.parent / "report.json").read_text())
    assert saved["metrics"] == dict(evaluation)
    assert len(saved["precision_at_10_per_class"]) == 10
