"""A tiny class folder, two runs trained one epoch on it (16 px) and an index built by one;
a copy of that run with a 3-cluster head."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentsearch.clusters import (
    ClusterConfig,
    ClusterHead,
    fit_cluster_head,
    head_path,
    load_cluster_head,
)
from latentsearch.data import load_data, read_image
from latentsearch.index import ImageIndex, all_images
from latentsearch.runs import TrainConfig, load_run
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


@pytest.fixture(scope="session")
def unlabelled(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of the fixture folder built without labels, same run: the folder names are
    recorded as names, but no item has a label (what ``up --no-labels`` leaves)."""
    root = tmp_path_factory.mktemp("unlabelled")
    data = all_images(load_data(str(built.folder), image_size=IMAGE_SIZE, cache_dir=root / "c"))
    data = replace(data, labels=np.full(len(data), -1, np.int64))
    ImageIndex.build(load_run(built.run), data).save(root / "unlabelled.index")
    return root / "unlabelled.index"


@dataclass(frozen=True)
class Headed:
    """A copy of the fixture's run (the shared one stays without a head) with a head.

    Attributes:
        run: The copy; it built the fixture's index (same weights).
        head: Its head, 3 clusters, trained on the indexed images.
    """

    run: Path
    head: ClusterHead


HEAD_CLUSTERS = 3


@pytest.fixture(scope="session")
def headed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Headed:
    """Copies the fixture's run and trains a small 3-cluster head on the indexed images."""
    run_path = tmp_path_factory.mktemp("headed") / "run"
    shutil.copytree(built.run, run_path)
    run = load_run(run_path)
    index = ImageIndex.load(built.index)
    pixels = np.stack([read_image(it.path or "", index.image_size) for it in index.items])
    config = ClusterConfig(n_clusters=HEAD_CLUSTERS, n_neighbours=3, epochs=20, heads=2, views=2)
    head = fit_cluster_head(
        run.model, pixels, config=config, encoder_sha256=run.fingerprint["weights_sha256"]
    )
    head.save(head_path(run_path))
    return Headed(run_path, load_cluster_head(head_path(run_path), run_model=run.model))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeps decoded-image caches out of the user's home."""
    monkeypatch.setenv("LATENTSEARCH_CACHE", str(tmp_path / "cache"))
