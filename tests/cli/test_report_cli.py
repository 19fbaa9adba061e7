"""`latentsearch report`: writes the report, prints where, fails clearly on a bad run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from latentsearch.cli import build_parser, main


@pytest.fixture(scope="module")
def run_dir(
    tmp_path_factory: pytest.TempPathFactory, copy_tiny_run: Callable[[Path], Path]
) -> Path:
    """A copy of the session's tiny digits run, free to hold reports."""
    return copy_tiny_run(tmp_path_factory.mktemp("cli-report") / "run")


def test_report_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["report", "--help"])
    assert exc.value.code == 0
    assert "usage: latentsearch report" in capsys.readouterr().out


def test_report_writes_into_the_run_folder_and_prints_the_page(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(run_dir), "--max-points", "100"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert Path(printed) == run_dir / "report" / "index.html"
    assert Path(printed).is_file()
    saved = json.loads((run_dir / "report" / "report.json").read_text())
    assert saved["metrics"]["data"] == "digits" and saved["settings"]["max_points"] == 100


def test_report_takes_data_and_out(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "elsewhere"
    args = ["report", str(run_dir), "--data", "digits", "--out", str(out), "--queries", "3",
            "--k", "4", "--max-points", "50"]  # fmt: skip
    assert main(args) == 0
    assert Path(capsys.readouterr().out.strip().splitlines()[-1]) == out / "index.html"
    assert (out / "retrieval.png").is_file()


def test_report_on_a_bad_run_path_exits_2_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "latentsearch report: error: no run folder or checkpoint at" in err
    assert "Traceback" not in err
    assert not (tmp_path / "nope").exists()


def test_report_rejects_a_non_positive_count(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", str(run_dir), "--k", "0"])
    assert exc.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_report_into_a_file_is_one_line_and_keeps_the_file(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "notadir.txt"
    taken.write_text("mine")
    assert main(["report", str(run_dir), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err
    assert taken.read_text() == "mine"
