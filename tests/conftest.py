"""Trained runs shared by the whole session, so each is trained once, not once per test file.

- ``tiny_run``: seed-ae with a hint head on half the labels, two epochs on digits (8×8 grey),
  for tests that need *a* finished run folder (reports, loading, resuming, array-source
  indexes). Read-only: ``copy_tiny_run(dest)`` gives a private copy to write into.
- ``rgb_runs``: two seed-ae runs (seeds 0 and 1, hence other weights) trained one epoch on a
  tiny folder of tinted 8×8 colour images, for the index, search and serve tests.

Also ``small_fs(kib)``: a file system of that size (a tmpfs mounted for the test), for what a
full disk does; skipped where it cannot be mounted (not root, not Linux).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentsearch.data import DataSplits, load_data
from latentsearch.runs import Run, TrainConfig
from latentsearch.training import train

TINY_RUN_CONFIG = TrainConfig(data="digits", epochs=2, batch_size=64, seed=3, label_fraction=0.5)
"""The config of ``tiny_run``: every test that trains it again gets the same weights."""

RGB_TINTS = {"blue": (0, 0, 1), "green": (0, 1, 0), "red": (1, 0, 0)}
RGB_IMAGE_SIZE = 8


@pytest.fixture(scope="session")
def digits() -> DataSplits:
    """scikit-learn's digits, loaded once."""
    return load_data("digits")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, digits: DataSplits) -> Run:
    """``TINY_RUN_CONFIG`` trained once per session (its folder: ``tiny_run.path``)."""
    out = tmp_path_factory.mktemp("tiny-run") / "run"
    return train(TINY_RUN_CONFIG, out, progress=False, data=digits)


@pytest.fixture(scope="session")
def copy_tiny_run(tiny_run: Run) -> Callable[[Path], Path]:
    """``copy_tiny_run(dest)``: copies the tiny run's folder to ``dest`` and returns it."""

    def copy(dest: Path) -> Path:
        shutil.copytree(tiny_run.path, dest)
        return dest

    return copy


def _tinted_folder(root: Path, per_class: int = 4) -> Path:
    for c, (name, tint) in enumerate(RGB_TINTS.items()):
        for i in range(per_class):
            rng = np.random.default_rng(1000 + 10 * c + i)
            pixels = np.clip(rng.integers(0, 120, (16, 16, 3)) + np.array(tint) * 130, 0, 255)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def rgb_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Run]:
    """Two seed-ae runs on 8×8 colour images: same model and size, other weights."""
    root = tmp_path_factory.mktemp("rgb-runs")
    folder = _tinted_folder(root / "images")
    data = load_data(str(folder), image_size=RGB_IMAGE_SIZE, cache_dir=root / "cache")
    runs = []
    for seed in (0, 1):
        config = TrainConfig(
            data=str(folder),
            model="seed-ae",
            epochs=1,
            image_size=RGB_IMAGE_SIZE,
            batch_size=4,
            seed=seed,
        )
        runs.append(train(config, root / f"run-{seed}", progress=False, data=data))
    return runs[0], runs[1]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``small_fs(kib)``: an empty folder on a tmpfs of ``kib`` KiB, unmounted after the test.

    Skips the test where no tmpfs can be mounted (mounting needs root on Linux); the tests
    that use it have a variant that fakes ``ENOSPC`` and runs everywhere.
    """
    mounted: list[Path] = []

    def mount(kib: int) -> Path:
        if not sys.platform.startswith("linux") or os.geteuid() != 0:
            pytest.skip("a small file system needs root on Linux (mount -t tmpfs)")
        where = tmp_path / f"small-fs-{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
