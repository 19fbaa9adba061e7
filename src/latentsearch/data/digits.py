"""scikit-learn's 8x8 handwritten digits: small, offline, always available."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latentsearch.data.base import DataSplits, ImageData
from latentsearch.data.images import check_image_size, resize_pixels
from latentsearch.data.splits import stratified_split

DIGITS_TEST_FRACTION = 0.2
DIGITS_SEED = 0


def load_digits(
    *,
    image_size: int | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
    progress: bool = False,
) -> DataSplits:
    """The 1,797 digits of ``sklearn.datasets.load_digits`` with a fixed stratified 80/20 split.

    Values 0..16 become uint8 as ``round(v * 255 / 16)``. ids are ``digits/<split>/<i>`` with
    ``i`` the index into scikit-learn's array. ``data_dir``, ``cache_dir``, ``download`` and
    ``progress`` are accepted for a uniform loader signature and ignored.

    Args:
        image_size: Side of the returned images; None keeps the native 8.

    Returns:
        Splits whose pixels have shape (N, 8, 8, 1) (or image_size instead of 8), classes
        "0".."9".
    """
    size = check_image_size(image_size)
    from sklearn.datasets import load_digits  # scikit-learn takes 0.5 s to import

    bunch = load_digits()
    values = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), 0..16
    pixels = np.rint(values * 255.0 / 16.0).astype(np.uint8)[:, :, :, None]
    if size is not None:
        pixels = resize_pixels(pixels, size)
    labels = np.asarray(bunch.target, dtype=np.int64)
    class_names = [str(i) for i in range(10)]
    train_idx, test_idx = stratified_split(labels, DIGITS_TEST_FRACTION, seed=DIGITS_SEED)

    def part(split: str, index: np.ndarray) -> ImageData:
        return ImageData(
            pixels=pixels[index],
            labels=labels[index],
            class_names=list(class_names),
            ids=[f"digits/{split}/{i}" for i in index],
            source=f"scikit-learn digits ({split})",
        )

    return DataSplits(train=part("train", train_idx), test=part("test", test_idx), name="digits")
