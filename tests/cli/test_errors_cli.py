"""Errors at the command line: a user's as one line in the command's flags, a bug's traceback."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

import pytest

from latentsearch.cli import build_parser, main
from latentsearch.cli.common import CLIError, is_expected, user_message
from latentsearch.errors import ConfigError, LatentsearchError
from latentsearch.runs import RunError


def _command(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub: argparse.ArgumentParser = action.choices[name]
            return sub
    raise AssertionError(name)


def test_library_names_become_the_commands_flags() -> None:
    train = _command("train")
    bad = ConfigError("label_fraction", "must be in [0, 1], got 1.5")
    assert str(bad) == "label_fraction must be in [0, 1], got 1.5"
    assert user_message(bad, train) == "--label-fraction must be in [0, 1], got 1.5"
    resume = RunError("runs/out is not empty: choose a new `out` folder or pass `resume=True`")
    assert user_message(resume, train) == (
        "runs/out is not empty: choose a new --out folder or pass --resume"
    )
    assert user_message(LatentsearchError("`seed=3` and `lr`"), train) == "--seed 3 and --lr"
    # Names the command has no flag for stay as the library wrote them.
    assert user_message(LatentsearchError("set `max_k` here"), train) == "set `max_k` here"
    assert user_message(ConfigError("max_k", "must be positive"), train) == "max_k must be positive"
    moved = RunError("the run is gone: pass its new location (`run_path`)")
    assert user_message(moved, _command("serve")).endswith("(--run)")


def test_only_errors_a_user_can_fix_are_expected() -> None:
    assert is_expected(ConfigError("epochs", "must be at least 1"))
    assert is_expected(CLIError("x")) and is_expected(FileNotFoundError("x"))
    assert not is_expected(ValueError("a bug")) and not is_expected(KeyError("a bug"))
    from latentsearch.export import ExportError
    from latentsearch.workflow import WorkflowError

    assert is_expected(ExportError("x")) and is_expected(WorkflowError("x"))


def test_a_bad_setting_is_one_line_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "unused"
    rc = main(["train", "--model", "seed-ae", "--label-fraction", "1.5", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == "latentsearch train: error: --label-fraction must be in [0, 1], got 1.5\n"
    assert not out.exists()


def test_run_folder_refusals_name_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--model", "seed-ae", "--epochs", "1", "--no-evaluate"]
    assert main([*args, "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "nothing to resume (--resume): no checkpoint in" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    assert main([*args, "--out", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err
    assert "choose a new --out folder or pass --resume" in err and "Traceback" not in err


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise ValueError("an internal bug, not the user's input")

    monkeypatch.setattr("latentsearch.cli.core.cmd_evaluate", broken)
    with pytest.raises(ValueError, match="internal bug"):
        main(["evaluate", "some-run"])


def test_top_level_help_imports_neither_torch_nor_faiss() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from latentsearch.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'faiss', 'sklearn', 'fastapi') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    for command in ("train", "search", "up", "export"):  # every command is listed
        assert command in out.stdout
    # A search loads the index and the data readers, which need no scikit-learn either.
    code = "import sys, latentsearch.index, latentsearch.data; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_command_line_parser_knows_every_command_fully_or_by_name() -> None:
    full = build_parser()
    light = build_parser(["search", "INDEX", "q.png"])
    names = ("train", "index", "search", "serve", "up", "export", "report", "demo")
    for parser in (full, light):
        choices = next(a for a in parser._actions if a.dest == "command").choices
        assert set(names) <= set(choices)
    args = light.parse_args(["search", "INDEX", "q.png", "-k", "3"])
    assert (args.index, args.k) == ("INDEX", 3)
    with pytest.raises(SystemExit):
        light.parse_args(["frobnicate"])


def test_a_training_killed_in_its_first_epoch_restarts_instead_of_a_dead_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--model", "seed-ae", "--epochs", "1", "--no-evaluate"]
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)  # what a run writes before its first checkpoint
    (out / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text("")
    for extra in (["--resume"], []):
        assert main([*args, "--out", str(out), *extra]) == 0
        assert "stopped before its first epoch ended: starting afresh" in capsys.readouterr().out
        assert (out / "checkpoints" / "epoch-001.pt").is_file()
        for ckpt in (out / "checkpoints").iterdir():
            ckpt.unlink()  # back to a run killed in epoch 1
        (out / "metrics.jsonl").write_text("")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_learning_rate_that_is_not_finite_is_one_line(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["train", "--model", "seed-ae", "--lr", value, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "--lr must be a finite number" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["index", "{run}", "{dir}", "--out", "{dir}/index"],
        ["export", "onnx", "{run}", "--out", "{dir}/model.onnx"],
        ["report", "{run}", "--out", "{dir}/report"],
    ],
)
def test_a_text_file_where_a_run_belongs_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    text = tmp_path / "config.json"
    text.write_text('{"epochs": 3}\n')
    rc = main([a.format(run=text, dir=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (
        f"latentsearch {argv[0]}: error: {text} is not a latentsearch checkpoint: "
        "it is not a file written by torch.save\n"
    )


def test_a_full_disk_while_training_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import latentsearch.runs as runs

    real_open = open

    def full_disk_open(file: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        if "w" in mode and str(file).endswith("epoch-002.pt.tmp"):
            real_open(file, mode).close()
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(runs, "open", full_disk_open, raising=False)
    out = tmp_path / "run"
    # Where no small disk can be mounted (tests/test_training.py mounts one): the write of
    # epoch 2's checkpoint fails with ENOSPC.
    argv = ["train", "--model", "seed-ae", "--epochs", "2", "--batch-size", "256"]
    argv += ["--no-evaluate", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"latentsearch train: error: not enough space in {out / 'checkpoints'} for epoch-002.pt"
    )
    assert len(err.splitlines()) == 1
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch-001.pt"]  # no .tmp
