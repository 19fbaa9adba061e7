"""CIFAR-10 from the official Python archive: download, verify, extract safely, read."""

from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from latentsearch.data.base import DataError, DataSplits, ImageData
from latentsearch.data.cache import resolve_cache_dir
from latentsearch.data.images import check_image_size, resize_pixels

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"

_CHUNK = 1 << 20
_DOWNLOAD_TIMEOUT_S = 60


def file_md5(path: str | Path) -> str:
    """Hex MD5 digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: str | Path, md5: str | None, *, progress: bool = False) -> Path:
    """Downloads ``url`` to ``dest`` atomically, checking its MD5.

    The bytes go to a temporary file next to ``dest`` that is renamed into place only once
    complete and verified, so an interrupted download never leaves a partial ``dest``.

    Args:
        url: Any URL urllib opens (``https://``, ``file://``, ...).
        dest: Where the file should end up; its folder is created.
        md5: Expected hex MD5 digest, or None to skip the check.
        progress: Show a progress bar when stderr is a terminal.

    Returns:
        ``dest`` as a Path.

    Raises:
        DataError: When the download fails or the digest does not match (the partial file is
            deleted).
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {dest.parent} to download into: {exc}") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response,
        ):
            total = response.headers.get("Content-Length")
            with tqdm(
                total=int(total) if total else None,
                unit="B",
                unit_scale=True,
                desc=f"downloading {dest.name}",
                disable=not (progress and sys.stderr.isatty()),
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise DataError(
                f"download of {url} is corrupt: MD5 {digest.hexdigest()} instead of {md5}; "
                "the partial file was deleted, try again"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"could not download {url}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or Path(name).is_absolute() or ".." in parts:
        raise DataError(f"{archive} holds an unsafe path {name!r}; refusing to extract it")
    if not (member.isfile() or member.isdir()):
        raise DataError(
            f"{archive} holds {name!r}, which is not a regular file or folder; refusing to "
            "extract it"
        )


def extract_archive(archive: str | Path, dest_dir: str | Path) -> Path:
    """Extracts a CIFAR-10 tar.gz into ``dest_dir`` safely and atomically.

    Members with absolute paths, ``..``, links or device files are refused before anything is
    written. Extraction happens in a temporary folder and ``cifar-10-batches-py`` is renamed
    into place at the end.

    Returns:
        The extracted ``cifar-10-batches-py`` folder.

    Raises:
        DataError: For an unreadable or unsafe archive, or one without the expected folder.
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_dir))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(member, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python without PEP 706; members were checked above
                    tar.extractall(tmp, members=members)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(
                f"cannot extract {archive}: {exc}; delete it and download it again"
            ) from None
        extracted = tmp / CIFAR10_FOLDER
        if not (extracted / META_FILE).is_file():
            raise DataError(
                f"{archive} does not contain {CIFAR10_FOLDER}/{META_FILE}; is it the CIFAR-10 "
                f"python version ({CIFAR10_URL})?"
            )
        target = dest_dir / CIFAR10_FOLDER
        try:
            os.rename(extracted, target)
        except OSError:
            # Someone else extracted it meanwhile: theirs is as good as ours.
            if not (target / META_FILE).is_file():
                raise
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR-10 batches hold: dicts, lists, bytes and NumPy arrays.

    A pickle can run arbitrary code; this refuses every global except NumPy's array
    reconstruction.
    """

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")
        if module == "numpy.core.multiarray":
            # NumPy 2 renamed numpy.core to numpy._core; the official files use the old name.
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict[Any, Any]:
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(
            f"{path} is missing; the CIFAR-10 folder is incomplete, delete {path.parent} and "
            "load again to re-extract it"
        ) from None
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as exc:
        raise DataError(f"{path} is not a readable CIFAR-10 batch: {exc}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (holds {type(obj).__name__})")
    return obj


def _get(batch: dict[Any, Any], key: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise DataError(f"CIFAR-10 batch lacks the key {key!r}")


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads one CIFAR-10 batch file.

    Each row of ``data`` holds the 1024 red, then green, then blue values of a 32x32 image in
    row-major order.

    Returns:
        ``(pixels, labels)``. Shapes: (N, 32, 32, 3) uint8, (N,) int64.
    """
    path = Path(path)
    batch = _read_pickle(path)
    data = np.asarray(_get(batch, "data"))
    labels = np.asarray(_get(batch, "labels"), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path}: expected uint8 data of shape (N, 3072), got {data.dtype} {data.shape}"
        )
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but {labels.size} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels outside 0..9")
    pixels = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return pixels, labels


def read_cifar10_folder(folder: str | Path) -> tuple[ImageData, ImageData]:
    """Reads an extracted ``cifar-10-batches-py`` folder into (train, test)."""
    folder = Path(folder)
    meta = _read_pickle(folder / META_FILE)
    class_names = [
        n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in _get(meta, "label_names")
    ]
    if len(class_names) != 10:
        raise DataError(f"{folder / META_FILE}: expected 10 label names, got {len(class_names)}")
    parts = [read_batch(folder / name) for name in TRAIN_BATCHES]
    train_px = np.concatenate([p for p, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    test_px, test_y = read_batch(folder / TEST_BATCH)

    def part(split: str, pixels: np.ndarray, labels: np.ndarray) -> ImageData:
        return ImageData(
            pixels=pixels,
            labels=labels,
            class_names=list(class_names),
            ids=[f"cifar10/{split}/{i}" for i in range(len(labels))],
            source=f"CIFAR-10 {folder} ({split})",
        )

    return part("train", train_px, train_y), part("test", test_px, test_y)


def _locate(root: Path) -> tuple[Path | None, Path | None]:
    """(extracted folder, archive) found at ``root``, either possibly None."""
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz", ".tar")):
        return None, root
    for folder in (root, root / CIFAR10_FOLDER):
        if (folder / META_FILE).is_file():
            return folder, None
    archive = root / CIFAR10_ARCHIVE
    return None, archive if archive.is_file() else None


def _verify(archive: Path) -> None:
    actual = file_md5(archive)
    if actual != CIFAR10_MD5:
        raise DataError(
            f"{archive} has MD5 {actual}, not the official {CIFAR10_MD5}: it is damaged or not "
            f"the CIFAR-10 python archive. Delete it and download {CIFAR10_URL} again"
        )


def _fetch(archive: Path, help_text: str, progress: bool) -> None:
    try:
        download(CIFAR10_URL, archive, CIFAR10_MD5, progress=progress)
    except DataError as exc:
        raise DataError(f"{exc}. To use CIFAR-10 offline, {help_text}") from None


def _extract_somewhere(archive: Path, fallback: Path) -> Path:
    try:
        return extract_archive(archive, archive.parent)
    except PermissionError:
        # A read-only data folder: extract into the cache instead.
        return extract_archive(archive, fallback)


def load_cifar10(
    *,
    image_size: int | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
    progress: bool = False,
) -> DataSplits:
    """CIFAR-10, official split: 50,000 train and 10,000 test images of 10 classes.

    Looks for ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz`` in ``data_dir`` (the
    extracted folder itself, its parent, or the archive's path) or else in
    ``<cache_dir>/cifar10``. A missing archive is downloaded from ``CIFAR10_URL`` when
    ``download`` is True (into ``data_dir`` if given, else the cache), checked against
    ``CIFAR10_MD5`` and extracted next to it.

    Args:
        image_size: Side of the returned images; None keeps the native 32.
        data_dir: Where the data already is, or should go.
        cache_dir: Cache root; None means ``$LATENTSEARCH_CACHE`` or ``~/.cache/latentsearch``.
        download: Whether a missing archive may be downloaded.
        progress: Show a download progress bar when stderr is a terminal.

    Returns:
        Splits with pixels of shape (N, 32, 32, 3); ids ``cifar10/<split>/<i>``.

    Raises:
        DataError: When the data is missing and cannot be downloaded (the message says where
            to put the file), or is damaged.
    """
    size = check_image_size(image_size)
    cache_root = resolve_cache_dir(cache_dir) / "cifar10"
    root = Path(data_dir).expanduser() if data_dir is not None else cache_root
    folder, archive = _locate(root)
    if folder is None:
        if archive is None:
            target = root.parent if root.name == CIFAR10_FOLDER else root
            archive = target / CIFAR10_ARCHIVE
            help_text = (
                f"put {CIFAR10_ARCHIVE} (from {CIFAR10_URL}, MD5 {CIFAR10_MD5}) or its "
                f"extracted {CIFAR10_FOLDER}/ folder in {target}"
            )
            if not download:
                raise DataError(f"CIFAR-10 not found in {root} and download=False: {help_text}")
            _fetch(archive, help_text, progress)
        else:
            # The archive may sit in a read-only folder and have been extracted to the cache.
            folder = _locate(cache_root)[0] if root != cache_root else None
            if folder is None:
                _verify(archive)
        if folder is None:
            folder = _extract_somewhere(archive, cache_root)
    train, test = read_cifar10_folder(folder)
    if size is not None:
        train.pixels = resize_pixels(train.pixels, size)
        test.pixels = resize_pixels(test.pixels, size)
    return DataSplits(train=train, test=test, name="cifar10")
