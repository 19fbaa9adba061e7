"""Mirror symmetry of a collection, which decides whether random flips are safe."""

from __future__ import annotations

import numpy as np
import pytest

from latentsearch.data.stats import colour_fraction, mirror_ratio


def _blobs(n: int, rng: np.random.Generator, symmetric: bool) -> np.ndarray:
    """Images of a bright blob at a random place; asymmetric ones always sit on the left."""
    # Background noise makes every image unique, so no distance is zero.
    x = rng.integers(0, 40, (n, 12, 12, 1)).astype(np.uint8)
    for i in range(n):
        row = rng.integers(2, 10)
        col = rng.integers(1, 11) if symmetric else rng.integers(1, 4)
        x[i, row - 1 : row + 2, col - 1 : col + 2] = 255
    return x


def test_mirrored_images_of_a_symmetric_collection_look_like_it() -> None:
    rng = np.random.default_rng(0)
    assert 0.9 < mirror_ratio(_blobs(800, rng, symmetric=True)) < 1.1


def test_mirrored_images_of_a_one_sided_collection_are_far_from_it() -> None:
    rng = np.random.default_rng(0)
    assert mirror_ratio(_blobs(800, rng, symmetric=False)) > 1.5


def test_too_few_images_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        mirror_ratio(np.zeros((3, 4, 4, 1), dtype=np.uint8))


def test_grey_images_with_three_equal_channels_are_not_colour() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (50, 8, 8, 1), dtype=np.uint8)
    assert colour_fraction(grey) == 0.0
    tiled = np.repeat(grey, 3, axis=-1)  # what a folder of grey PNGs decodes to
    noise = rng.integers(-3, 4, tiled.shape)  # JPEG-like chroma noise
    assert colour_fraction(np.clip(tiled + noise, 0, 255).astype(np.uint8)) == 0.0
    photos = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    assert colour_fraction(photos) > 0.9
