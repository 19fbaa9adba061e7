"""The study's reproduction over training seeds: folders, reuse, identity checks, the spread."""

from __future__ import annotations

import contextlib
import io
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from latentsearch.cli import main
from latentsearch.errors import ConfigError, LatentsearchError
from latentsearch.reproduce import (
    SPREAD_METRICS,
    merge_rows,
    reproduce,
    run_folder_name,
    seed_spread,
    study_config,
)
from latentsearch.training import train

OLD_VANILLA_ROW = {"protocol": "seed", "model": "vanilla", "nmi": 0.077, "ri": 0.811}
"""A row of an earlier results file, without a ``seed`` field (files before seeds existed)."""


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """``reproduce --models hint --seeds 0 1`` on digits, one epoch, through the command line.

    Returns the runs folder, the JSON it wrote (merged into a file holding ``OLD_VANILLA_ROW``)
    and what it printed.
    """
    root = tmp_path_factory.mktemp("reproduce")
    results = root / "results.json"
    results.write_text(json.dumps({"rows": [OLD_VANILLA_ROW]}))
    out = root / "runs"
    argv = ["reproduce", "--data", "digits", "--out", str(out), "--protocols", "seed"]
    argv += ["--models", "hint", "--seeds", "0", "1", "--epochs", "1"]
    argv += ["--json-out", str(results)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return out, json.loads(results.read_text()), printed.getvalue()


def test_each_seed_trains_its_own_model_in_its_own_folder(
    two_seeds: tuple[Path, dict[str, Any], str],
) -> None:
    out, written, _ = two_seeds
    assert sorted(p.name for p in out.iterdir()) == ["seed-hint", "seed-hint-seed1"]
    rows = [r for r in written["rows"] if r["model"] == "hint"]
    assert [r["seed"] for r in rows] == [0, 1]
    # Other seeds, other weights: the scores differ.
    assert rows[0]["nmi"] != rows[1]["nmi"]
    assert all(r["published_nmi"] == 0.433 and r["epochs"] == 1 for r in rows)


def test_the_results_file_keeps_other_rows_and_gains_the_spread(
    two_seeds: tuple[Path, dict[str, Any], str],
) -> None:
    _, written, printed = two_seeds
    assert written["rows"][0] == OLD_VANILLA_ROW  # vanilla before hint, kept as it was
    assert len(written["rows"]) == 3
    [spread] = written["seed_spread"]
    hint = written["rows"][1:]
    assert spread["model"] == "hint" and spread["seeds"] == [0, 1]
    for key in SPREAD_METRICS:
        values = [r[key] for r in hint]
        assert spread[f"{key}_mean"] == pytest.approx(statistics.fmean(values))
        assert spread[f"{key}_sd"] == pytest.approx(statistics.stdev(values))
    assert "over training seeds" in printed
    assert f"{spread['nmi_mean']:.3f} ± {spread['nmi_sd']:.3f}" in printed


def test_finished_seeds_are_reused_not_trained_again(
    two_seeds: tuple[Path, dict[str, Any], str],
) -> None:
    out, written, _ = two_seeds
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    lines: list[str] = []
    rows = reproduce(
        data="digits", out=out, protocols=["seed"], epochs=1, seeds=[1, 0],
        variants=["hint"], log=lines.append,
    )  # fmt: skip
    assert sum("reusing" in line for line in lines) == 2
    assert not any("training" in line for line in lines)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    by_seed = {r["seed"]: r["nmi"] for r in written["rows"] if r["model"] == "hint"}
    assert {r["seed"]: r["nmi"] for r in rows} == by_seed


def test_a_folder_holding_another_seed_is_refused_not_reused(tmp_path: Path) -> None:
    config = study_config("seed", "hint", data="digits", data_dir=None, epochs=1, seed=5)
    train(config, tmp_path / run_folder_name("seed", "hint", 0), progress=False)
    with pytest.raises(LatentsearchError, match=r"holds another run.*'seed': 5"):
        reproduce(data="digits", out=tmp_path, protocols=["seed"], epochs=1, variants=["hint"])


def test_bad_choices_are_refused_before_any_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="seeds repeat"):
        reproduce(data="digits", out=tmp_path, seeds=[1, 1])
    with pytest.raises(ConfigError, match="unknown models"):
        reproduce(data="digits", out=tmp_path, variants=["hint", "big"])
    assert not any(tmp_path.iterdir())


def test_a_json_out_that_is_not_a_results_file_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "notes.json"
    other.write_text('["not", "results"]')
    argv = ["reproduce", "--data", "digits", "--out", str(tmp_path / "runs")]
    assert main([*argv, "--json-out", str(other)]) == 2
    assert "is not a reproduce results file" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert other.read_text() == '["not", "results"]'


def test_merge_replaces_namesakes_and_reads_a_missing_seed_as_zero() -> None:
    old = [OLD_VANILLA_ROW, {"protocol": "heldout", "model": "hint", "seed": 2, "nmi": 0.4}]
    new = [{"protocol": "seed", "model": "vanilla", "seed": 0, "nmi": 0.08}]
    merged = merge_rows(old, new)
    assert [(r["protocol"], r["model"], r["nmi"]) for r in merged] == [
        ("seed", "vanilla", 0.08),
        ("heldout", "hint", 0.4),
    ]


def test_the_spread_needs_two_seeds() -> None:
    rows = [{"protocol": "seed", "model": "hint", "seed": 0, **dict.fromkeys(SPREAD_METRICS, 0.4)}]
    assert seed_spread(rows) == []
