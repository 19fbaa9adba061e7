"""A crafted checkpoint at the command line: one line of error from every command that loads
one, promptly (each runs in a subprocess that is killed if it runs away)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from latentsearch.data import DataSplits
from latentsearch.index import ImageIndex
from latentsearch.runs import Run, checkpoints

TIMEOUT_S = 120  # a command that loads the file runs away (2^40 lists) without the checks


def _nested(depth: int = 40) -> list[Any]:
    x: list[Any] = []
    for _ in range(depth):
        x = [x, x]
    return x


@pytest.fixture(scope="module")
def crafted(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_run: Run,
    copy_tiny_run: Callable[[Path], Path],
    digits: DataSplits,
) -> tuple[Path, Path, Path]:
    """The tiny run with class names nested 40 deep, an index of the real run, a query."""
    root = tmp_path_factory.mktemp("crafted")
    folder = copy_tiny_run(root / "run")
    ckpt = checkpoints(folder)[-1]
    state = torch.load(ckpt, weights_only=True)
    state["class_names"] = _nested()
    torch.save(state, ckpt)
    ImageIndex.build(tiny_run, digits.train.subset(np.arange(50))).save(root / "digits.index")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / "query.png")
    return folder, root / "digits.index", root / "query.png"


def _commands(run: Path, index: Path, query: Path, out: Path) -> dict[str, list[str]]:
    return {
        "export": ["export", "onnx", str(run), "--out", str(out / "enc.onnx")],
        "search": ["search", str(index), str(query), "--run", str(run)],
        "index": ["index", str(run), "digits", "--out", str(out / "new.index")],
        # The tiny run's own settings: only the checkpoint stands in the way of resuming.
        "train --resume": [
            *("train", "--data", "digits", "--epochs", "3", "--batch-size", "64"),
            *("--seed", "3", "--label-fraction", "0.5", "--out", str(run), "--resume"),
        ],
    }


@pytest.mark.parametrize("command", ["export", "search", "index", "train --resume"])
def test_every_command_refuses_a_crafted_checkpoint_in_one_line(
    crafted: tuple[Path, Path, Path], tmp_path: Path, command: str
) -> None:
    run, index, query = crafted
    args = _commands(run, index, query, tmp_path)[command]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "latentsearch", *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`latentsearch {command}` still running after {TIMEOUT_S} s")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0, done.stdout[-500:]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "is not a valid latentsearch checkpoint: class_names must be" in lines[0]
