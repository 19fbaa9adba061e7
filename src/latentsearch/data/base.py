"""The one interface every data source returns: uint8 pixels, labels, class names, ids."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from latentsearch.errors import LatentsearchError


class DataError(LatentsearchError):
    """A data source is missing, unreadable or malformed; the message says what to do."""


@dataclass
class ImageData:
    """A set of images held as uint8 pixels (possibly a read-only memory map).

    Attributes:
        pixels: Images. Shape: (N, H, W, C), dtype uint8, C in {1, 3}.
        labels: Class index per image, -1 where unknown. Shape: (N,), dtype int64.
        class_names: Name of each class index (empty for unlabelled data).
        ids: A stable identifier per image, e.g. its path relative to the source root.
        paths: Absolute file path per image for file-backed sources, else None.
        source: Human-readable description of where the images came from.
        skipped: ``(path, reason)`` for every file that could not be read.
        sha256: SHA-256 of each file's bytes, exactly the bytes the pixels were decoded from,
            for file-backed sources; else None. The index stores these instead of reading
            every file again (and so never pairs one file's pixels with another's hash).
    """

    pixels: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    ids: list[str]
    paths: list[str] | None = None
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sha256: list[str | None] | None = None

    def __post_init__(self) -> None:
        if self.pixels.ndim != 4 or self.pixels.shape[-1] not in (1, 3):
            raise DataError(f"pixels must be (N, H, W, 1|3), got shape {self.pixels.shape}")
        if self.pixels.dtype != np.uint8:
            raise DataError(f"pixels must be uint8, got {self.pixels.dtype}")
        n = len(self.pixels)
        if len(self.labels) != n or len(self.ids) != n:
            raise DataError(f"{n} images but {len(self.labels)} labels and {len(self.ids)} ids")
        if self.paths is not None and len(self.paths) != n:
            raise DataError(f"{n} images but {len(self.paths)} paths")
        if self.sha256 is not None and len(self.sha256) != n:
            raise DataError(f"{n} images but {len(self.sha256)} content hashes")
        self.labels = np.asarray(self.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        h, w, c = self.pixels.shape[1:]
        return int(h), int(w), int(c)

    @property
    def has_labels(self) -> bool:
        """Whether any image carries a label."""
        return bool((self.labels >= 0).any())

    def subset(self, index: np.ndarray) -> ImageData:
        """The images at ``index`` (an int array), in that order."""
        index = np.asarray(index, dtype=np.int64)
        return ImageData(
            pixels=self.pixels[index],
            labels=self.labels[index],
            class_names=list(self.class_names),
            ids=[self.ids[i] for i in index],
            paths=None if self.paths is None else [self.paths[i] for i in index],
            source=self.source,
            sha256=None if self.sha256 is None else [self.sha256[i] for i in index],
        )

    @staticmethod
    def concatenate(parts: list[ImageData]) -> ImageData:
        """Joins sets of identically shaped images with the same classes."""
        if not parts:
            raise DataError("nothing to concatenate")
        if any(p.class_names != parts[0].class_names for p in parts):
            raise DataError("cannot concatenate data with different class names")
        paths = None
        if all(p.paths is not None for p in parts):
            paths = [x for p in parts for x in (p.paths or [])]
        hashes = None
        if all(p.sha256 is not None for p in parts):
            hashes = [h for p in parts for h in (p.sha256 or [])]
        return ImageData(
            pixels=np.concatenate([np.asarray(p.pixels) for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            class_names=list(parts[0].class_names),
            ids=[i for p in parts for i in p.ids],
            paths=paths,
            source=parts[0].source,
            sha256=hashes,
        )


@dataclass
class DataSplits:
    """What a data source provides: a training set and, where the source defines one, a test set.

    Attributes:
        train: The training images (all images for sources without an official split).
        test: The official test images, or None when the source has no split.
        name: Short name of the source, e.g. ``cifar10`` or the folder's name.
    """

    train: ImageData
    test: ImageData | None
    name: str

    def without_labels(self) -> DataSplits:
        """The same images with no labels and no class names (e.g. folders that are places)."""

        def strip(part: ImageData) -> ImageData:
            return replace(part, labels=np.full(len(part), -1, np.int64), class_names=[])

        test = strip(self.test) if self.test is not None else None
        return replace(self, train=strip(self.train), test=test)
