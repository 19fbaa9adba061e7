"""load_data: the registry, path dispatch, and the checks every source must pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentsearch.data import SOURCES, DataError, DataSplits, ImageData, load_data


@pytest.fixture
def offline_data_dir(fake_cifar, idx_folder) -> dict[str, Path | None]:
    """data_dir per registered source, all local fixtures."""
    return {
        "digits": None,
        "cifar10": fake_cifar.archive.parent,
        "fashion-mnist": idx_folder.folder,
    }


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_returns_valid_splits(name: str, offline_data_dir, tmp_path: Path) -> None:
    splits = load_data(
        name, data_dir=offline_data_dir[name], cache_dir=tmp_path / "c", download=False
    )
    assert isinstance(splits, DataSplits) and splits.name == name
    for part in (splits.train, splits.test):
        assert isinstance(part, ImageData)
        assert part.pixels.dtype == np.uint8 and part.pixels.ndim == 4
        assert part.labels.dtype == np.int64
        assert part.labels.min() >= 0 and part.labels.max() < len(part.class_names)
        assert len(set(part.ids)) == len(part)
    assert set(splits.train.ids).isdisjoint(splits.test.ids)
    resized = load_data(
        name,
        data_dir=offline_data_dir[name],
        cache_dir=tmp_path / "c",
        image_size=12,
        download=False,
    )
    assert resized.train.pixels.shape[1:3] == (12, 12)


def test_path_to_an_image_folder(split_folder: Path, tmp_path: Path) -> None:
    splits = load_data(str(split_folder), image_size=8, cache_dir=tmp_path / "c")
    assert splits.train.pixels.shape == (4, 8, 8, 3)


def test_unknown_spec_lists_the_valid_names(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_data("cifar-100")
    for name in SOURCES:
        assert name in str(err.value)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        load_data(str(tmp_path / "file.txt"))


def test_bad_image_size() -> None:
    with pytest.raises(DataError, match="image_size"):
        load_data("digits", image_size=0)
