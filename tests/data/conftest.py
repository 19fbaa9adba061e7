"""Tiny data fixtures written to tmp_path: image folders, idx files, a fake CIFAR-10 archive."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keeps every test's cache out of the user's home."""
    cache = tmp_path / "default-cache"
    monkeypatch.setenv("LATENTSEARCH_CACHE", str(cache))
    return cache


# --- image files ---------------------------------------------------------------------------


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (20, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="PNG")
    return path


def _jpeg(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG", quality=95)
    return path


def _grey(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (16, 16), value).save(path, format="PNG")
    return path


def _non_square(path: Path) -> Path:
    """90x30: red, green and blue thirds; its centred square is all green."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((30, 90, 3), dtype=np.uint8)
    arr[:, :30, 0] = 255
    arr[:, 30:60, 1] = 255
    arr[:, 60:, 2] = 255
    Image.fromarray(arr).save(path, format="PNG")
    return path


def _corrupt_jpeg(path: Path) -> Path:
    """The first half of a real JPEG: the header parses, the data is truncated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def _text(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not an image\n")
    return path


class ImageFiles:
    """Writers for small image files; each takes the destination path first."""

    png = staticmethod(_png)
    jpeg = staticmethod(_jpeg)
    grey = staticmethod(_grey)
    non_square = staticmethod(_non_square)
    corrupt_jpeg = staticmethod(_corrupt_jpeg)
    text = staticmethod(_text)


@pytest.fixture
def files() -> ImageFiles:
    """Writers for small image files of every kind the folder source must handle."""
    return ImageFiles()


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """``train/<class>/`` + ``test/<class>/`` with every kind of file, bad ones included.

    train/cat: a.png (red), b.jpg (green JPEG), sub/c.png (grey, one level deeper)
    train/dog: d.png (non-square), e.jpg (corrupt), notes.txt, .DS_Store (hidden)
    test/bird: f.png (blue)   - a class that only the test split has
    test/cat:  g.png (red)
    """
    root = tmp_path / "split"
    _png(root / "train/cat/a.png", (255, 0, 0))
    _jpeg(root / "train/cat/b.jpg", (0, 255, 0))
    _grey(root / "train/cat/sub/c.png", 128)
    _non_square(root / "train/dog/d.png")
    _corrupt_jpeg(root / "train/dog/e.jpg")
    _text(root / "train/dog/notes.txt")
    (root / "train/dog/.DS_Store").write_bytes(b"\0\1\2")
    _png(root / "test/bird/f.png", (0, 0, 255))
    _png(root / "test/cat/g.png", (255, 0, 0))
    return root


# --- idx files -----------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """Writes ``array`` (uint8) as an idx file, gzip-compressed when ``gz``."""
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    data = header + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data, compresslevel=1))
    else:
        path.write_bytes(data)
    return path


@dataclass
class IdxData:
    folder: Path
    train_images: np.ndarray  # (6, 28, 28)
    train_labels: np.ndarray  # (6,)
    test_images: np.ndarray  # (4, 28, 28)
    test_labels: np.ndarray  # (4,)


def make_idx_folder(folder: Path, *, gz: bool) -> IdxData:
    rng = np.random.default_rng(1)
    data = IdxData(
        folder=folder,
        train_images=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        train_labels=np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8),
        test_images=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        test_labels=np.array([2, 1, 0, 1], dtype=np.uint8),
    )
    write_idx(folder / "train-images-idx3-ubyte", data.train_images, gz=gz)
    write_idx(folder / "train-labels-idx1-ubyte", data.train_labels, gz=gz)
    write_idx(folder / "t10k-images-idx3-ubyte", data.test_images, gz=gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", data.test_labels, gz=gz)
    return data


@pytest.fixture
def idx_writer() -> Callable[..., Path]:
    """``write_idx(path, array, gz=False)``: writes one idx file."""
    return write_idx


@pytest.fixture(params=[True, False], ids=["gz", "plain"])
def idx_folder(request: pytest.FixtureRequest, tmp_path: Path) -> IdxData:
    """Four idx files (6 train, 4 test images of 28x28, labels 0..2), gzipped or not."""
    return make_idx_folder(tmp_path / "idx", gz=request.param)


# --- a fake CIFAR-10 archive ---------------------------------------------------------------

CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


class _Python2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes every str and bytes as a Python 2 ``str`` (BINSTRING), as the 2009 files do.

    Python 3 pickles bytes at protocol 2 through ``_codecs.encode``, which the official
    files never contain; this keeps the fixture byte-for-byte in the official style.
    """

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def official_pickle(obj: object) -> bytes:
    """Pickles like the official Python 2 files: protocol 2, Python 2 strings, ``numpy.core``."""
    buf = io.BytesIO()
    _Python2Pickler(buf, protocol=2).dump(obj)
    # NumPy 2 names numpy._core; the 2009 files name numpy.core. The GLOBAL opcode stores
    # names as text lines, so the bytes can be swapped without breaking the stream.
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


@pytest.fixture
def py2_pickle() -> Callable[[object], bytes]:
    """``official_pickle(obj)``: pickles ``obj`` the way the official CIFAR-10 files are."""
    return official_pickle


@dataclass
class FakeCifar:
    archive: Path
    md5: str
    train_pixels: np.ndarray  # (20, 32, 32, 3)
    train_labels: np.ndarray  # (20,)
    test_pixels: np.ndarray  # (10, 32, 32, 3)
    test_labels: np.ndarray  # (10,)


def _batch(pixels: np.ndarray, labels: np.ndarray, name: str) -> bytes:
    # Official layout: each row holds the R plane, then G, then B, each 32x32 row-major.
    rows = pixels.transpose(0, 3, 1, 2).reshape(len(pixels), 3072)
    return official_pickle(
        {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in labels],
            b"data": np.ascontiguousarray(rows),
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
        }
    )


def make_fake_cifar(path: Path, *, extra: dict[str, bytes] | None = None) -> FakeCifar:
    """Writes a cifar-10-python.tar.gz with 20 train images over 5 batches and 10 test images.

    Pixel (i, j, c) of every image is distinct enough (random) that a transposed or
    channel-swapped reading cannot pass an exact comparison.
    """
    rng = np.random.default_rng(2)
    train_px = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    train_y = np.arange(20) % 10
    test_px = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    test_y = (np.arange(10) * 3) % 10
    members = {
        "batches.meta": official_pickle(
            {
                b"num_cases_per_batch": 4,
                b"label_names": [c.encode() for c in CIFAR_CLASSES],
                b"num_vis": 3072,
            }
        ),
        "test_batch": _batch(test_px, test_y, "testing batch 1 of 1"),
        "readme.html": b"<html></html>",
    }
    for b in range(5):
        sl = slice(4 * b, 4 * b + 4)
        members[f"data_batch_{b + 1}"] = _batch(train_px[sl], train_y[sl], f"batch {b + 1}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o755
        tar.addfile(folder)
        for name, data in {**members, **(extra or {})}.items():
            info = tarfile.TarInfo(
                name if name.startswith(("/", "..")) else f"cifar-10-batches-py/{name}"
            )
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    md5 = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    return FakeCifar(path, md5, train_px, train_y, test_px, test_y)


@pytest.fixture
def cifar_maker() -> Callable[..., FakeCifar]:
    """``make_fake_cifar(path, extra=None)``: writes a fake archive (``extra`` adds members)."""
    return make_fake_cifar


@pytest.fixture
def fake_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCifar:
    """A fake official archive in tmp_path/cifar-src, its MD5 patched in as the official one."""
    from latentsearch.data import cifar

    fake = make_fake_cifar(tmp_path / "cifar-src" / "cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar, "CIFAR10_MD5", fake.md5)
    monkeypatch.setattr(cifar, "CIFAR10_URL", fake.archive.as_uri())
    return fake
