"""A tiny class folder, two runs trained one epoch on it (16 px) and an index built by one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentsearch.data import load_data
from latentsearch.index import ImageIndex, all_images
from latentsearch.runs import TrainConfig
from latentsearch.training import train

TINTS = {"blue": (0, 0, 1), "green": (0, 1, 0), "red": (1, 0, 0)}
PER_CLASS = 5
IMAGE_SIZE = 16


@dataclass(frozen=True)
class Built:
    """Paths of the fixture's folder, runs and index.

    Attributes:
        folder: ``<class>/<i>.png`` (``2.jpg`` is a JPEG), plus ``blue/shade/image``: a PNG
            without extension whose id ends in ``/image``, like the image route.
        run: The run that built the index.
        other_run: Same model and size, other weights.
        index: The saved index of every image in ``folder``.
    """

    folder: Path
    run: Path
    other_run: Path
    index: Path


def _image(path: Path, seed: int, tint: tuple[int, int, int], fmt: str = "PNG") -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 120, (20, 20, 3)) + np.array(tint) * 130, 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format=fmt)


def _folder(root: Path) -> Path:
    for c, (name, tint) in enumerate(TINTS.items()):
        for i in range(PER_CLASS):
            fmt, ext = ("JPEG", "jpg") if i == 2 else ("PNG", "png")
            _image(root / name / f"{i}.{ext}", seed=10 * c + i, tint=tint, fmt=fmt)
    _image(root / "blue" / "shade" / "image", seed=99, tint=TINTS["blue"])
    return root


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Trains two runs one epoch at 16 px and indexes the folder with the first."""
    root = tmp_path_factory.mktemp("server")
    folder = _folder(root / "images")
    splits = load_data(str(folder), image_size=IMAGE_SIZE, cache_dir=root / "cache")
    runs = []
    for seed in (0, 1):
        config = TrainConfig(
            data=str(folder),
            model="seed-ae",
            epochs=1,
            image_size=IMAGE_SIZE,
            batch_size=4,
            seed=seed,
        )
        runs.append(train(config, root / f"run-{seed}", progress=False, data=splits))
    index = ImageIndex.build(runs[0], all_images(splits), data_spec=str(folder))
    index.save(root / "images.index")
    return Built(folder, runs[0].path, runs[1].path, root / "images.index")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeps decoded-image caches out of the user's home."""
    monkeypatch.setenv("LATENTSEARCH_CACHE", str(tmp_path / "cache"))
