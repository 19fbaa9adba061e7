"""Tiny image folders, and the session's two 8 px colour runs (``rgb_runs``) to index them."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentsearch.runs import Run

CLASSES = {"blue": (0, 0, 1), "green": (0, 1, 0), "red": (1, 0, 0)}
PER_CLASS = 6


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keeps every test's decoded-image cache out of the user's home."""
    cache = tmp_path / "default-cache"
    monkeypatch.setenv("LATENTSEARCH_CACHE", str(cache))
    return cache


def noise_image(path: Path, seed: int, tint: tuple[int, int, int], fmt: str = "PNG") -> Path:
    """A 20x20 random texture tinted towards one colour, so every file embeds differently."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 120, (20, 20, 3))
    pixels = np.clip(base + np.array(tint) * 130, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def make_folder(root: Path) -> Path:
    """``<class>/NN.png|jpg`` for three tinted classes (6 images each) and one corrupt JPEG."""
    for c, (name, tint) in enumerate(CLASSES.items()):
        for i in range(PER_CLASS):
            fmt = "JPEG" if i % 3 == 2 else "PNG"
            ext = "jpg" if fmt == "JPEG" else "png"
            noise_image(root / name / f"{i:02d}.{ext}", seed=100 * c + i, tint=tint, fmt=fmt)
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(buf, format="JPEG")
    (root / "red" / "broken.jpg").write_bytes(buf.getvalue()[:40])
    return root


@pytest.fixture
def run(rgb_runs: tuple[Run, Run]) -> Run:
    """A seed-ae run trained one epoch on 8x8 colour images."""
    return rgb_runs[0]


@pytest.fixture
def other_run(rgb_runs: tuple[Run, Run]) -> Run:
    """Same model and size as ``run``, other weights."""
    return rgb_runs[1]


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """``noise_image(path, seed, tint, fmt="PNG")``: writes one tinted random texture."""
    return noise_image


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A fresh copy of the tiny folder, free to modify."""
    return make_folder(tmp_path / "images")
