"""A folder of image files as a data source, decoded once into a memory-mapped cache.

Layouts, detected in this order:

- ``train/<class>/...`` and optionally ``test/<class>/...``: train and test splits;
- ``<class>/...``: one labelled set (test is None);
- image files directly in the folder: one unlabelled set (labels -1, no class names).

Files are found recursively inside each class folder, in sorted order; hidden files and
folders (name starting with ".") are ignored. Every other file is decoded with Pillow;
files that cannot be decoded are listed in ``ImageData.skipped``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap
from tqdm import tqdm

from latentsearch.data.base import DataError, DataSplits, ImageData
from latentsearch.data.cache import resolve_cache_dir
from latentsearch.data.images import DEFAULT_MAX_PIXELS, check_image_size, decode_image

DEFAULT_FOLDER_IMAGE_SIZE = 32
"""Side of the decoded squares when ``image_size`` is None."""

CACHE_VERSION = 1
"""Bumped whenever decoding changes, so old caches are not reused."""

_SPLITS = ("train", "test")
_COPY_CHUNK = 4096


def _decode_file(path: str, image_size: int) -> np.ndarray:
    """Decodes one file to RGB pixels. Shape: (image_size, image_size, 3).

    Raises:
        DataError: When the file is not a readable image.
    """
    return decode_image(path, image_size, channels=3, max_pixels=DEFAULT_MAX_PIXELS)


@dataclass(frozen=True)
class _File:
    rel: str  # path relative to the root, posix separators
    path: str  # absolute path
    size: int
    mtime_ns: int
    label: str | None  # class folder name, None when unlabelled


@dataclass
class _Split:
    where: str  # the folder, for messages
    files: list[_File]
    problems: list[tuple[str, str]]  # (relative path, reason) for files that are not used


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _listdir(directory: str) -> tuple[list[os.DirEntry[str]], list[os.DirEntry[str]]]:
    """Non-hidden (folders, files) of ``directory``, sorted by name."""
    with os.scandir(directory) as it:
        entries = sorted((e for e in it if not _is_hidden(e.name)), key=lambda e: e.name)
    dirs = [e for e in entries if e.is_dir()]
    files = [e for e in entries if not e.is_dir() and e.is_file()]
    return dirs, files


def _file(entry: os.DirEntry[str], rel: str, label: str | None) -> _File:
    st = entry.stat()
    return _File(rel=rel, path=entry.path, size=st.st_size, mtime_ns=st.st_mtime_ns, label=label)


def _walk(directory: str, rel: str, label: str | None, split: _Split) -> None:
    """Appends every non-hidden file under ``directory`` (recursively, sorted) to ``split``."""
    seen: set[tuple[int, int]] = set()
    found: list[_File] = []
    stack = [(directory, rel)]
    while stack:
        path, prefix = stack.pop()
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop
                continue
            seen.add((st.st_dev, st.st_ino))
            dirs, files = _listdir(path)
        except OSError as exc:
            split.problems.append((prefix, f"cannot list folder: {exc.strerror or exc}"))
            continue
        found.extend(_file(f, f"{prefix}/{f.name}", label) for f in files)
        stack.extend((d.path, f"{prefix}/{d.name}") for d in dirs)
    found.sort(key=lambda f: f.rel)
    split.files.extend(found)


def _scan_split(directory: str, prefix: str) -> tuple[_Split, list[str]]:
    """Scans a ``<class>/...`` or flat folder; returns the split and its class names."""
    split = _Split(where=directory, files=[], problems=[])
    dirs, files = _listdir(directory)
    join = (lambda name: f"{prefix}/{name}") if prefix else (lambda name: name)
    if not dirs:
        split.files.extend(_file(f, join(f.name), None) for f in files)
        return split, []
    for d in dirs:
        _walk(d.path, join(d.name), d.name, split)
    split.problems.extend((join(f.name), "not inside a class folder; ignored") for f in files)
    return split, [d.name for d in dirs]


def _scan(root: Path) -> tuple[dict[str, _Split], list[str]]:
    """Detects the layout of ``root``; returns its splits and the union of class names."""
    try:
        dirs, files = _listdir(str(root))
    except OSError as exc:
        raise DataError(f"cannot read the image folder {root}: {exc}") from None
    names = {d.name: d for d in dirs}
    if "train" in names:
        splits: dict[str, _Split] = {}
        classes: set[str] = set()
        for name in _SPLITS:
            if name in names:
                splits[name], found = _scan_split(names[name].path, name)
                classes.update(found)
        splits["train"].problems.extend(
            (f.name, "outside train/ and test/; ignored") for f in files
        )
        return splits, sorted(classes)
    if "test" in names:
        raise DataError(
            f"{root} has a test/ folder but no train/ folder: add train/<class>/ folders, or "
            "rename test/ if it is a class"
        )
    split, class_dirs = _scan_split(str(root), "")
    return {"train": split}, sorted(class_dirs)


def _cache_key(root: Path, image_size: int, splits: dict[str, _Split]) -> tuple[str, str]:
    """(prefix naming root and size, digest of every file's path, size and mtime)."""
    prefix = hashlib.sha256(f"{root}\0{image_size}".encode()).hexdigest()[:12]
    digest = hashlib.sha256(f"v{CACHE_VERSION}\0{root}\0{image_size}\n".encode())
    for name, split in splits.items():
        digest.update(f"[{name}]\n".encode())
        for f in split.files:
            digest.update(f"{f.rel}\0{f.size}\0{f.mtime_ns}\n".encode())
        for rel, reason in split.problems:
            digest.update(f"!{rel}\0{reason}\n".encode())
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.name)[:40] or "root"
    return f"{safe}-{prefix}", digest.hexdigest()[:20]


def _read_cache(entry: Path, root: Path) -> dict[str, ImageData] | None:
    """The cached splits in ``entry``, or None when it is missing or unusable."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("version") != CACHE_VERSION:
            return None
        out = {}
        for name, part in manifest["splits"].items():
            pixels = np.load(entry / f"{name}.npy", mmap_mode="r")
            out[name] = ImageData(
                pixels=pixels,
                labels=np.asarray(part["labels"], dtype=np.int64),
                class_names=list(manifest["class_names"]),
                ids=list(part["ids"]),
                paths=[str(root / rel) for rel in part["ids"]],
                source=f"image folder {root} ({name})",
                skipped=[(str(root / rel), reason) for rel, reason in part["skipped"]],
            )
        return out
    except (OSError, ValueError, KeyError, TypeError, DataError):
        return None


def _decode_split(
    name: str,
    split: _Split,
    class_index: dict[str, int],
    image_size: int,
    out_dir: Path,
    bar: Any,
) -> dict[str, Any]:
    """Decodes a split into ``out_dir/<name>.npy``; returns its manifest part."""
    if not split.files:
        raise DataError(f"{split.where} holds no files")
    shape = (image_size, image_size, 3)
    full = out_dir / f"{name}.all.npy"
    pixels = open_memmap(full, mode="w+", dtype=np.uint8, shape=(len(split.files), *shape))
    ids: list[str] = []
    labels: list[int] = []
    skipped = list(split.problems)
    for f in split.files:
        try:
            pixels[len(ids)] = _decode_file(f.path, image_size)
        except DataError as exc:
            skipped.append((f.rel, str(exc)))
        else:
            ids.append(f.rel)
            labels.append(-1 if f.label is None else class_index[f.label])
        bar.update(1)
    if not ids:
        reasons = "; ".join(f"{rel}: {why}" for rel, why in skipped[:3])
        raise DataError(f"no readable image in {split.where} (e.g. {reasons})")
    final = out_dir / f"{name}.npy"
    if len(ids) == len(split.files):
        pixels.flush()
        del pixels
        os.replace(full, final)
    else:
        # Drop the unused tail, a chunk at a time so a big folder never sits in RAM.
        compact = open_memmap(final, mode="w+", dtype=np.uint8, shape=(len(ids), *shape))
        for start in range(0, len(ids), _COPY_CHUNK):
            stop = min(start + _COPY_CHUNK, len(ids))
            compact[start:stop] = pixels[start:stop]
        compact.flush()
        del compact, pixels
        full.unlink()
    return {"ids": ids, "labels": labels, "skipped": skipped}


def _build_cache(
    root: Path,
    splits: dict[str, _Split],
    class_names: list[str],
    image_size: int,
    entry: Path,
    progress: bool,
) -> None:
    """Decodes every split into a temporary folder, then renames it to ``entry``."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
    try:
        class_index = {c: i for i, c in enumerate(class_names)}
        total = sum(len(s.files) for s in splits.values())
        with tqdm(
            total=total,
            desc=f"decoding {root.name}",
            unit="img",
            disable=not (progress and sys.stderr.isatty()),
        ) as bar:
            parts = {
                name: _decode_split(name, split, class_index, image_size, tmp, bar)
                for name, split in splits.items()
            }
        manifest = {
            "version": CACHE_VERSION,
            "root": str(root),
            "image_size": image_size,
            "class_names": class_names,
            "splits": parts,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        try:
            os.rename(tmp, entry)
        except OSError:
            # Another process finished the same cache first; keep theirs.
            if not (entry / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale(entry: Path, prefix: str) -> None:
    """Deletes older caches of the same folder and image size."""
    for other in entry.parent.glob(f"{prefix}-*"):
        if other != entry and other.is_dir() and (other / "manifest.json").is_file():
            shutil.rmtree(other, ignore_errors=True)


def load_image_folder(
    root: str | Path,
    *,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> DataSplits:
    """Reads a folder of images (see the module docstring for the layouts).

    Each image is converted to RGB, its short side scaled to ``image_size`` and the centred
    square kept. The pixels are decoded once into ``<cache_dir>/folders/<key>/`` and memory
    mapped from there; the key covers the folder's path, ``image_size`` and every file's
    relative path, size and modification time, so any change triggers a fresh decode.

    Args:
        root: The folder.
        image_size: Side of the decoded squares; None means 32.
        cache_dir: Cache root; None means ``$LATENTSEARCH_CACHE`` or ``~/.cache/latentsearch``.
        progress: Show a progress bar while decoding when stderr is a terminal.

    Returns:
        Splits whose pixels (read-only memory maps) have shape (N, image_size, image_size, 3);
        ids are paths relative to ``root``, paths are absolute, class names are the sorted
        class folder names (the same for train and test).

    Raises:
        DataError: When the folder does not exist, holds no readable image, or the cache
            cannot be written.
    """
    size = check_image_size(image_size) or DEFAULT_FOLDER_IMAGE_SIZE
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    splits, class_names = _scan(root)
    if not any(s.files for s in splits.values()):
        raise DataError(
            f"{root} holds no image files; expected train/<class>/*, <class>/* or images "
            "directly in the folder"
        )
    prefix, digest = _cache_key(root, size, splits)
    entry = resolve_cache_dir(cache_dir) / "folders" / f"{prefix}-{digest}"
    data = _read_cache(entry, root)
    if data is None:
        if entry.exists():  # damaged (e.g. edited by hand): decode afresh
            shutil.rmtree(entry, ignore_errors=True)
        try:
            _build_cache(root, splits, class_names, size, entry, progress)
        except OSError as exc:
            raise DataError(
                f"cannot write the decoded-image cache under {entry.parent}: {exc}. Pass "
                "cache_dir= or set LATENTSEARCH_CACHE to a writable folder with enough space"
            ) from None
        _remove_stale(entry, prefix)
        data = _read_cache(entry, root)
        if data is None:
            raise DataError(f"the cache just written in {entry} cannot be read back")
    return DataSplits(train=data["train"], test=data.get("test"), name=root.name)
