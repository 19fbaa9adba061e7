"""The real CIFAR-10 JPEG copy from ../shared/data (slow, off by default: ``pytest -m slow``)."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from latentsearch.data import load_data

ARCHIVE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.mark.slow
def test_cifar10_jpeg_folder(tmp_path: Path) -> None:
    if not ARCHIVE.is_file():
        pytest.skip(f"{ARCHIVE} not found")
    try:
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(tmp_path, filter="data")
        root = tmp_path / "cifar10-jpeg"
        splits = load_data(str(root), cache_dir=tmp_path / "cache")
        assert splits.test is not None
        assert splits.train.pixels.shape == (50_000, 32, 32, 3)
        assert splits.test.pixels.shape == (10_000, 32, 32, 3)
        assert splits.train.class_names[:3] == ["airplane", "automobile", "bird"]
        assert np.bincount(splits.test.labels).tolist() == [1000] * 10
        assert not splits.train.skipped and not splits.test.skipped
        # The training mean of this copy is about (0.489, 0.481, 0.447) (../shared/data/README.md);
        # a transposed, channel-swapped or badly resized decode would be far off.
        mean = splits.train.pixels.reshape(-1, 3).mean(axis=0) / 255
        np.testing.assert_allclose(mean, [0.489, 0.481, 0.447], atol=0.005)
        again = load_data(str(root), cache_dir=tmp_path / "cache")
        assert again.train.ids == splits.train.ids
    finally:
        # 60,000 files left in tmp_path would slow down pytest's later clean-ups.
        shutil.rmtree(tmp_path, ignore_errors=True)
