"""MNIST-format idx files (Fashion-MNIST, MNIST, KMNIST, ...), parsed without extra libraries."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.data.base import DataError, DataSplits, ImageData
from latentsearch.data.images import check_image_size, resize_pixels

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the four idx files."""

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# idx type code -> big-endian dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# (split, kind) -> file stem; "train-images.idx3-ubyte" (a dot) is a common variant.
_IDX_FILES = {
    ("train", "images"): ("train-images", "idx3-ubyte"),
    ("train", "labels"): ("train-labels", "idx1-ubyte"),
    ("test", "images"): ("t10k-images", "idx3-ubyte"),
    ("test", "labels"): ("t10k-labels", "idx1-ubyte"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}; the file is damaged, fetch it again") from None


def parse_idx(data: bytes, *, name: str = "idx data") -> np.ndarray:
    """Parses the bytes of one idx file.

    Args:
        data: The file's content (already decompressed).
        name: What to call the data in error messages, e.g. its path.

    Returns:
        The array in native byte order, shaped as the header says.

    Raises:
        DataError: For a bad magic number, unknown type, or a size that does not match the
            header (truncated or trailing data).
    """
    if len(data) < 4:
        raise DataError(f"{name}: too short to be an idx file ({len(data)} bytes)")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES or ndim < 1:
        raise DataError(
            f"{name}: bad idx magic number 0x{data[:4].hex()}; expected 0x0000TTDD "
            "(TT a type code such as 08, DD the number of dimensions) - not an idx file?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated idx header ({len(data)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing data"
        raise DataError(
            f"{name}: {what}: the header promises shape {dims} ({expected:,} bytes in all) "
            f"but the file holds {len(data):,} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one idx file, gzip-compressed (``.gz``) or not. See ``parse_idx``."""
    p = Path(path)
    return parse_idx(_read_bytes(p), name=str(p))


def _find_idx_file(folder: Path, split: str, kind: str) -> Path | None:
    stem, ext = _IDX_FILES[(split, kind)]
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            candidate = folder / f"{stem}{sep}{ext}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def is_idx_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ``train-images-idx3-ubyte[.gz]`` file."""
    return _find_idx_file(Path(folder), "train", "images") is not None


def _load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find_idx_file(folder, split, "images")
    labels_path = _find_idx_file(folder, split, "labels")
    if images_path is None or labels_path is None:
        missing = [
            "{}-{}[.gz]".format(*_IDX_FILES[(split, kind)])
            for kind, p in (("images", images_path), ("labels", labels_path))
            if p is None
        ]
        raise DataError(f"{folder} lacks {' and '.join(missing)}")
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} "
            f"{images.shape}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{labels_path}: expected integer labels of shape (N,), got {labels.shape}")
    if len(labels) != len(images):
        raise DataError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{labels_path}: labels must be >= 0, found {labels.min()}")
    return images[:, :, :, None], labels.astype(np.int64)


def load_idx_folder(
    folder: str | Path,
    *,
    image_size: int | None = None,
    class_names: list[str] | None = None,
    name: str | None = None,
) -> DataSplits:
    """Reads the four MNIST-format idx files of a folder.

    The folder must hold ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally ``.gz``.

    Args:
        folder: The folder.
        image_size: Side of the returned images; None keeps the native size (28 for MNIST).
        class_names: Names of the classes; None gives "0", "1", ... up to the largest label.
        name: Name of the source; None uses the folder's name.

    Returns:
        Splits with pixels of shape (N, 28, 28, 1) for MNIST-like data. ids are
        ``<name>/<split>/<i>``.

    Raises:
        DataError: For a missing folder or file, or a malformed idx file.
    """
    root = Path(folder).expanduser()
    size = check_image_size(image_size)
    if not root.is_dir():
        raise DataError(f"idx folder {root} does not exist")
    name = name or root.name
    train_px, train_y = _load_split(root, "train")
    test_px, test_y = _load_split(root, "test")
    if train_px.shape[1:] != test_px.shape[1:]:
        raise DataError(
            f"{root}: train images are {train_px.shape[1:3]} but test images {test_px.shape[1:3]}"
        )
    n_classes = int(max(train_y.max(initial=-1), test_y.max(initial=-1))) + 1
    if class_names is None:
        class_names = [str(i) for i in range(n_classes)]
    elif n_classes > len(class_names):
        raise DataError(
            f"{root}: labels go up to {n_classes - 1} but only {len(class_names)} class names"
        )
    if size is not None:
        train_px = resize_pixels(train_px, size)
        test_px = resize_pixels(test_px, size)

    def part(split: str, pixels: np.ndarray, labels: np.ndarray) -> ImageData:
        return ImageData(
            pixels=pixels,
            labels=labels,
            class_names=list(class_names),
            ids=[f"{name}/{split}/{i}" for i in range(len(labels))],
            source=f"idx files in {root} ({split})",
        )

    return DataSplits(
        train=part("train", train_px, train_y), test=part("test", test_px, test_y), name=name
    )


def load_fashion_mnist(
    *,
    image_size: int | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
    progress: bool = False,
) -> DataSplits:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package or ``data_dir``.

    Nothing is downloaded: ``cache_dir``, ``download`` and ``progress`` are accepted for a
    uniform loader signature and ignored.

    Args:
        image_size: Side of the returned images; None keeps the native 28.
        data_dir: Folder with the four idx files; None uses ``FASHION_MNIST_DIR``.

    Returns:
        60,000 train and 10,000 test images. Shape: (N, 28, 28, 1).

    Raises:
        DataError: When the files are missing (the message says how to install them) or
            malformed.
    """
    folder = Path(data_dir).expanduser() if data_dir is not None else FASHION_MNIST_DIR
    if not folder.is_dir() or not is_idx_folder(folder):
        raise DataError(
            f"Fashion-MNIST not found in {folder}. Install it with "
            "`apt-get install -y dataset-fashion-mnist` (puts the idx files in "
            f"{FASHION_MNIST_DIR}), or pass data_dir= a folder holding "
            "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
            "and t10k-labels-idx1-ubyte.gz"
        )
    return load_idx_folder(
        folder, image_size=image_size, class_names=list(FASHION_MNIST_CLASSES), name="fashion-mnist"
    )
