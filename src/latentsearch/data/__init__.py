"""Data sources: a name or a path becomes ``DataSplits`` of uint8 pixels, labels and ids.

>>> splits = load_data("digits")
>>> splits.train.pixels.shape
(1437, 8, 8, 1)
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from latentsearch.data.base import DataError, DataSplits, ImageData
from latentsearch.data.cache import default_cache_dir
from latentsearch.data.cifar import load_cifar10
from latentsearch.data.digits import load_digits
from latentsearch.data.folder import load_image_folder
from latentsearch.data.idx import is_idx_folder, load_fashion_mnist, load_idx_folder
from latentsearch.data.images import ImageTooLarge, read_image
from latentsearch.data.splits import label_subset, stratified_split


class Loader(Protocol):
    """The signature every registered data source shares."""

    def __call__(
        self,
        *,
        image_size: int | None = None,
        data_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        download: bool = True,
        progress: bool = False,
    ) -> DataSplits: ...


SOURCES: dict[str, Loader] = {
    "digits": load_digits,
    "cifar10": load_cifar10,
    "fashion-mnist": load_fashion_mnist,
}
"""Named data sources; any other spec is read as a folder path."""


def load_data(
    spec: str,
    *,
    image_size: int | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
    progress: bool = False,
) -> DataSplits:
    """Loads a data source by name or path.

    Args:
        spec: A key of ``SOURCES`` (``digits``, ``cifar10``, ``fashion-mnist``), or the path
            of a folder: one holding MNIST-format idx files, an extracted
            ``cifar-10-batches-py`` folder, or a folder of images (``train/<class>/*`` plus
            ``test/<class>/*``, ``<class>/*``, or unlabelled images).
        image_size: Side of the returned square images. None keeps a named source's native
            size and decodes image folders at 32.
        data_dir: Where a named source's files are (see each loader); unused for paths.
        cache_dir: Where downloads and decoded images are kept; None means the
            ``LATENTSEARCH_CACHE`` environment variable or ``~/.cache/latentsearch``.
        download: Whether missing files may be downloaded.
        progress: Show progress bars when stderr is a terminal.

    Returns:
        The source's splits. Pixel shape: (N, H, W, C), uint8.

    Raises:
        DataError: For an unknown name, a missing or malformed source; the message says
            what to do.
    """
    if spec in SOURCES:
        return SOURCES[spec](
            image_size=image_size,
            data_dir=data_dir,
            cache_dir=cache_dir,
            download=download,
            progress=progress,
        )
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(
            f"unknown data source {spec!r}: not one of {', '.join(sorted(SOURCES))} and no "
            "such file or folder"
        )
    if not path.is_dir():
        raise DataError(f"{spec!r} is a file; pass a folder of images or idx files")
    if is_idx_folder(path):
        return load_idx_folder(path, image_size=image_size)
    if (path / "batches.meta").is_file() and (path / "data_batch_1").is_file():
        return load_cifar10(
            image_size=image_size, data_dir=path, cache_dir=cache_dir, download=False
        )
    return load_image_folder(path, image_size=image_size, cache_dir=cache_dir, progress=progress)


__all__ = [
    "SOURCES",
    "DataError",
    "DataSplits",
    "ImageData",
    "ImageTooLarge",
    "Loader",
    "default_cache_dir",
    "label_subset",
    "load_cifar10",
    "load_data",
    "load_digits",
    "load_fashion_mnist",
    "load_idx_folder",
    "load_image_folder",
    "read_image",
    "stratified_split",
]
