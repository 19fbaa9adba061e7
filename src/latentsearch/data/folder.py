"""A folder of image files as a data source, decoded once into a memory-mapped cache.

Every readable image under the folder is used; the layout only decides the labels:

- ``train/<class>/...`` and optionally ``test/<class>/...`` (nothing else at the top level
  but non-image files): train and test splits, labelled by class folder. A ``train/`` with
  loose images in it, or without subfolders, is unlabelled (and so is ``test/`` then);
- ``<class>/...`` with at least two class folders and no image directly in the folder: one
  labelled set (test is None);
- anything else (images directly in the folder, with or without subfolders; a single
  subfolder): one unlabelled set of every image, at any depth (labels -1, no class names).
  A folder that is half photos, half subfolders (``photos/*.jpg`` + ``photos/2024/``) is
  therefore never mistaken for classes, and adding a subfolder to a flat folder keeps every
  id it had.

Files are found recursively, in sorted order; hidden files and folders (name starting with
".") are ignored. Every other file is decoded with Pillow; files that cannot be decoded,
symbolic links that lead nowhere, and anything that is not a regular file (a named pipe, a
device such as a link to ``/dev/zero``, a socket) are listed in ``ImageData.skipped`` with
the reason. Such special files are never opened for reading (a named pipe would block).

A file name that is not valid UTF-8 (a Latin-1 archive, an old camera) is indexed too: its id
writes each byte that is not UTF-8 as ``\\xNN`` (``caf\\xe9.png``), so ids are always
printable text, while its path keeps the name as the system gives it (``os.fsdecode``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
import warnings
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image
from tqdm import tqdm

from latentsearch.data.base import DataError, DataSplits, ImageData
from latentsearch.data.cache import CACHE_ENV, resolve_cache_dir
from latentsearch.data.files import (
    NotARegularFile,
    check_readable,
    not_regular_reason,
    open_regular,
    printable,
)
from latentsearch.data.images import (
    DEFAULT_MAX_PIXELS,
    check_image_size,
    decode_image,
    read_image_file,
)
from latentsearch.data.scratch import remove_abandoned, scratch_dir
from latentsearch.data.strings import StringColumn, StringColumnBuilder
from latentsearch.diskspace import allocated_memmap, free_bytes, is_disk_full, size_text

DEFAULT_FOLDER_IMAGE_SIZE = 32
"""Side of the decoded squares when ``image_size`` is None."""

CACHE_VERSION = 2
"""Bumped whenever decoding or the cache key changes, so old caches are not reused.

2: keyed by every file's SHA-256 (not size and mtime); 16-bit images scaled, not clipped.
"""

SCRATCH_PREFIX = ".tmp-"
"""Name prefix of the folders a cache is decoded into before it is renamed into place."""

_SPLITS = ("train", "test")
_COPY_CHUNK = 4096
_HASH_CHUNK = 1 << 20


def _decode_file(path: str, image_size: int) -> tuple[np.ndarray, str]:
    """Reads one file once, and decodes those bytes to RGB pixels.

    Returns:
        The pixels, shape (image_size, image_size, 3), and the SHA-256 of the very bytes they
        were decoded from.

    Raises:
        DataError: When the file cannot be read or is not a readable image.
    """
    try:
        data = read_image_file(path)  # a non-image is refused from its first bytes
    except NotARegularFile as exc:
        raise DataError(f"{exc.strerror}; ignored") from None
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc.strerror or exc}") from None
    pixels = decode_image(data, image_size, channels=3, max_pixels=DEFAULT_MAX_PIXELS)
    return pixels, hashlib.sha256(data).hexdigest()


def _hash_file(path: str) -> str:
    """SHA-256 of a file's bytes.

    Raises:
        OSError: When it cannot be read.
    """
    h = hashlib.sha256()
    with open_regular(path) as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class _File:
    rel: str  # path relative to the root, posix separators, as os.fsdecode spells it
    path: str  # absolute path
    sha256: str  # of the file's bytes when scanned: the cache is keyed by content
    label: str | None  # class folder name (printable), None when unlabelled

    @property
    def id(self) -> str:
        """``rel`` as printable text: the file's id."""
        return printable(self.rel)


@dataclass
class _Split:
    where: str  # the folder, for messages
    files: list[_File]
    problems: list[tuple[str, str]]  # (relative path, reason) for files that are not used
    hashed: bool = True  # hash every file while scanning (False: only check it can be opened)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _listdir(
    directory: str,
) -> tuple[list[os.DirEntry[str]], list[os.DirEntry[str]], list[tuple[str, str]]]:
    """Non-hidden entries of ``directory``, sorted by name: (folders, regular files, others).

    Others are ``(name, reason)`` for what is neither (broken symbolic links, named pipes,
    devices, sockets): none is opened, since reading a named pipe blocks.
    """
    with os.scandir(directory) as it:
        entries = sorted((e for e in it if not _is_hidden(e.name)), key=lambda e: e.name)
    dirs, files, others = [], [], []
    for e in entries:
        try:
            # The entry's own type first (no system call on most file systems); only links
            # and special files are looked at further.
            if e.is_file(follow_symlinks=False):
                files.append(e)
                continue
            if e.is_dir(follow_symlinks=False):
                dirs.append(e)
                continue
            mode = e.stat().st_mode  # follows symbolic links, as reading would
        except OSError as exc:
            if e.is_symlink():
                others.append((e.name, "broken symbolic link; ignored"))
            else:
                others.append((e.name, f"cannot read the file: {exc.strerror or exc}"))
            continue
        if stat.S_ISDIR(mode):
            dirs.append(e)
        elif stat.S_ISREG(mode):
            files.append(e)
        else:
            others.append((e.name, f"{not_regular_reason(mode)}; ignored"))
    return dirs, files, others


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _looks_like_image(path: str) -> bool:
    """Whether Pillow recognises the file's header (nothing is decoded)."""
    try:
        with open_regular(path) as f, Image.open(f):
            return True
    except Exception:  # not an image, unreadable, or a damaged header: all "no"
        return False


def _add_files(
    split: _Split, entries: list[os.DirEntry[str]], prefix: str, label: str | None
) -> None:
    for e in entries:
        rel = _join(prefix, e.name)
        try:
            if split.hashed:
                digest = _hash_file(e.path)
            else:
                # The same check as hashing, without reading: the file is read (and hashed)
                # once, later, by whoever decodes it.
                check_readable(e.path)
                digest = ""
        except NotARegularFile as exc:  # replaced since it was listed
            split.problems.append((rel, f"{exc.strerror}; ignored"))
            continue
        except OSError as exc:
            split.problems.append((rel, f"cannot read the file: {exc.strerror or exc}"))
            continue
        split.files.append(_File(rel=rel, path=e.path, sha256=digest, label=label))


def _walk(directory: str, rel: str, label: str | None, split: _Split) -> None:
    """Adds every non-hidden file under ``directory`` (recursively, sorted) to ``split``."""
    seen: set[tuple[int, int]] = set()
    found = _Split(where=split.where, files=[], problems=[], hashed=split.hashed)
    stack = [(directory, rel)]
    while stack:
        path, prefix = stack.pop()
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop
                continue
            seen.add((st.st_dev, st.st_ino))
            dirs, files, others = _listdir(path)
        except OSError as exc:
            found.problems.append((prefix, f"cannot list folder: {exc.strerror or exc}"))
            continue
        _add_files(found, files, prefix, label)
        found.problems.extend((_join(prefix, name), why) for name, why in others)
        stack.extend((d.path, _join(prefix, d.name)) for d in dirs)
    found.files.sort(key=lambda f: f.rel)
    split.files.extend(found.files)
    split.problems.extend(sorted(found.problems))


def _scan_all(directory: str, prefix: str, split: _Split) -> None:
    """Every file under ``directory``, unlabelled."""
    _walk(directory, prefix, None, split)


def _scan_classes(
    directory: str,
    prefix: str,
    dirs: list[os.DirEntry[str]],
    files: list[os.DirEntry[str]],
    hashed: bool,
) -> _Split:
    """A class layout: each folder in ``dirs`` is a class; loose ``files`` stay unlabelled."""
    split = _Split(where=directory, files=[], problems=[], hashed=hashed)
    # Loose files are not images (or the layout would not be a class layout) but are still
    # tried, so each is reported with the decoder's reason.
    _add_files(split, files, prefix, None)
    for d in dirs:
        _walk(d.path, _join(prefix, d.name), printable(d.name), split)
    return split


def _scan(root: Path, hashed: bool = True) -> tuple[dict[str, _Split], list[str]]:
    """Detects the layout of ``root``; returns its splits and the union of class names.

    With ``hashed`` False, files are only checked to open, not read (``_File.sha256`` is "").
    """
    try:
        dirs, files, others = _listdir(str(root))
    except OSError as exc:
        raise DataError(f"cannot read the image folder {root}: {exc}") from None
    names = {d.name: d for d in dirs}
    loose_images = bool(dirs) and any(_looks_like_image(f.path) for f in files)
    top_problems = list(others)
    if "train" in names and set(names) <= set(_SPLITS) and not loose_images:
        splits: dict[str, _Split] = {}
        classes: set[str] = set()
        labelled = False
        for name in _SPLITS:
            if name not in names:
                continue
            sub_dirs, sub_files, sub_others = _listdir(names[name].path)
            if name == "train":
                labelled = bool(sub_dirs) and not any(_looks_like_image(f.path) for f in sub_files)
            if labelled:
                split = _scan_classes(names[name].path, name, sub_dirs, sub_files, hashed)
                split.problems.extend((f"{name}/{n}", why) for n, why in sub_others)
                classes.update(printable(d.name) for d in sub_dirs)
            else:
                split = _Split(where=names[name].path, files=[], problems=[], hashed=hashed)
                _scan_all(names[name].path, name, split)
            splits[name] = split
        # Files beside train/ and test/ are not images, but are tried and reported.
        _add_files(splits["train"], files, "", None)
        splits["train"].problems.extend(top_problems)
        return _unique_ids(splits), sorted(classes)
    if "test" in names and "train" not in names and not loose_images and len(names) == 1:
        raise DataError(
            f"{root} has a test/ folder but no train/ folder: add train/<class>/ folders, or "
            "rename test/ if it is a class"
        )
    if len(dirs) >= 2 and not loose_images:
        split = _scan_classes(str(root), "", dirs, files, hashed)
        split.problems.extend(top_problems)
        return _unique_ids({"train": split}), sorted({printable(n) for n in names})
    split = _Split(where=str(root), files=[], problems=[], hashed=hashed)
    _scan_all(str(root), "", split)
    return _unique_ids({"train": split}), []


def _unique_ids(splits: dict[str, _Split]) -> dict[str, _Split]:
    """Drops files whose printable id another file already has, reporting them.

    Only a name that is not UTF-8 can take another's id (``caf\\xe9.png`` from the byte
    0xE9 beside a file really called so); the file whose name is its id keeps it.
    """
    for split in splits.values():
        # Every such id holds a backslash, so only those are compared: no set of every id.
        by_id: dict[str, list[_File]] = {}
        for f in split.files:
            if "\\" in f.rel or f.id != f.rel:
                by_id.setdefault(f.id, []).append(f)
        clashes = [group for group in by_id.values() if len(group) > 1]
        if not clashes:
            continue
        drop = set()
        for group in clashes:
            keep = next((f for f in group if f.id == f.rel), group[0])
            for f in group:
                if f is not keep:
                    drop.add(id(f))
                    why = f"its name is not UTF-8 and its id {f.id!r} is another file's; rename it"
                    split.problems.append((f.rel, why))
        split.files = [f for f in split.files if id(f) not in drop]
    return splits


def _raw(text: str) -> bytes:
    """UTF-8 bytes of text that may hold a file name's undecodable bytes (as surrogates)."""
    return text.encode("utf-8", "surrogateescape")


def _cache_key(root: Path, image_size: int, splits: dict[str, _Split]) -> tuple[str, str]:
    """(prefix naming root and size, digest of every file's path, label and content hash).

    Content, not size and modification time: a file rewritten with the same size and mtime
    (a restored backup, ``rsync -t``, some cameras) must not keep its old pixels.
    """
    prefix = hashlib.sha256(_raw(f"{root}\0{image_size}")).hexdigest()[:12]
    digest = hashlib.sha256(_raw(f"v{CACHE_VERSION}\0{root}\0{image_size}\n"))
    for name, split in splits.items():
        digest.update(f"[{name}]\n".encode())
        for f in split.files:
            digest.update(_raw(f"{f.rel}\0{f.label}\0{f.sha256}\n"))
        for rel, reason in split.problems:
            digest.update(_raw(f"!{rel}\0{reason}\n"))
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.name)[:40] or "root"
    return f"{safe}-{prefix}", digest.hexdigest()[:20]


def _split_data(
    root: Path, name: str, part: dict[str, Any], pixels: np.ndarray, class_names: list[str]
) -> ImageData:
    """A decoded split as ``ImageData``, from its manifest part and its pixels."""
    ids = part["ids"]
    rels = part.get("rels", {})  # {position: name on disk} where the id differs
    return ImageData(
        pixels=pixels,
        labels=np.asarray(part["labels"], dtype=np.int64),
        class_names=list(class_names),
        ids=list(ids),
        paths=[str(root / rels.get(str(k), rel)) for k, rel in enumerate(ids)],
        source=f"image folder {root} ({name})",
        skipped=[(str(root / rel), str(reason)) for rel, reason in part["skipped"]],
        sha256=list(part["sha256"]),
    )


def _read_cache(entry: Path, root: Path) -> dict[str, ImageData] | None:
    """The cached splits in ``entry``, or None when it is missing or unusable."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("version") != CACHE_VERSION:
            return None
        class_names = manifest["class_names"]
        if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
            return None
        out = {}
        for name, part in manifest["splits"].items():
            if name not in _SPLITS:
                return None
            ids, hashes = part["ids"], part["sha256"]
            rels = part.get("rels", {})  # {position: name on disk} where the id differs
            if not all(isinstance(i, str) for i in ids + hashes + list(rels.values())):
                return None
            pixels = np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            out[name] = _split_data(root, name, part, pixels, class_names)
        if "train" not in out:
            return None
        return out
    except Exception:  # anything wrong with a cache (edited, truncated) means: decode afresh
        return None


def _decode_split(
    name: str,
    split: _Split,
    class_index: dict[str, int],
    image_size: int,
    out_dir: Path | None,
    bar: Any,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Decodes a split into ``out_dir/<name>.npy``, or into memory when ``out_dir`` is None.

    Returns:
        Its manifest part, and its pixels when decoded into memory (else None).

    Raises:
        OSError: When the file does not fit (before anything is decoded) or cannot be written.
    """
    if not split.files:
        raise DataError(f"{split.where} holds no files")
    shape = (image_size, image_size, 3)
    full = None if out_dir is None else out_dir / f"{name}.all.npy"
    pixels = _new_pixels(full, (len(split.files), *shape))
    ids: list[str] = []
    rels: dict[str, str] = {}  # where a file's name on disk is not its id
    labels: list[int] = []
    hashes: list[str] = []
    skipped = list(split.problems)
    for f in split.files:
        try:
            pixels[len(ids)], digest = _decode_file(f.path, image_size)
        except DataError as exc:
            skipped.append((f.rel, str(exc)))
        else:
            if f.id != f.rel:
                rels[str(len(ids))] = f.rel
            ids.append(f.id)
            hashes.append(digest)
            labels.append(-1 if f.label is None else class_index[f.label])
        bar.update(1)
    if not ids:
        reasons = "; ".join(f"{printable(rel)}: {why}" for rel, why in skipped[:3])
        raise DataError(f"no readable image in {split.where} (e.g. {reasons})")
    part = {"ids": ids, "rels": rels, "labels": labels, "sha256": hashes, "skipped": skipped}
    if out_dir is None or full is None or not isinstance(pixels, np.memmap):
        kept = pixels if len(ids) == len(split.files) else pixels[: len(ids)].copy()
        return part, kept
    final = out_dir / f"{name}.npy"
    if len(ids) == len(split.files):
        pixels.flush()
        del pixels
        os.replace(full, final)
    else:
        # Drop the unused tail, a chunk at a time so a big folder never sits in RAM.
        compact = allocated_memmap(final, shape=(len(ids), *shape), dtype=np.uint8)
        for start in range(0, len(ids), _COPY_CHUNK):
            stop = min(start + _COPY_CHUNK, len(ids))
            compact[start:stop] = pixels[start:stop]
        compact.flush()
        del compact, pixels
        full.unlink()
    return part, None


def _new_pixels(path: Path | None, shape: tuple[int, ...]) -> np.ndarray:
    """Room for ``shape`` uint8 pixels: a file allocated up front (a sparse one would kill
    the process with SIGBUS once the disk is full), or memory when ``path`` is None."""
    if path is None:
        return np.empty(shape, dtype=np.uint8)
    return allocated_memmap(path, shape=shape, dtype=np.uint8)


def _build_cache(
    root: Path,
    splits: dict[str, _Split],
    class_names: list[str],
    image_size: int,
    entry: Path,
    progress: bool,
) -> None:
    """Decodes every split into a scratch folder, then renames it to ``entry``.

    The scratch folder is locked while it is written (``latentsearch.data.scratch``), so one
    left by a killed process is deleted by the next load, and one still being written is not.
    """
    with scratch_dir(entry.parent, SCRATCH_PREFIX) as tmp:
        class_index = {c: i for i, c in enumerate(class_names)}
        total = sum(len(s.files) for s in splits.values())
        with tqdm(
            total=total,
            desc=f"decoding {root.name}",
            unit="img",
            disable=not (progress and sys.stderr.isatty()),
        ) as bar:
            parts = {
                name: _decode_split(name, split, class_index, image_size, tmp, bar)[0]
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
    relative path and SHA-256, so any change of content triggers a fresh decode (every file
    is read once per call to hash it; decoding is far slower). Scratch folders left in the
    cache by a killed process are deleted. A cache that cannot be written (a full disk, a
    read-only folder) is skipped with a ``RuntimeWarning``: the pixels are decoded into memory.

    Args:
        root: The folder.
        image_size: Side of the decoded squares; None means 32.
        cache_dir: Cache root; None means ``$LATENTSEARCH_CACHE`` or ``~/.cache/latentsearch``.
        progress: Show a progress bar while decoding when stderr is a terminal.

    Returns:
        Splits whose pixels (read-only memory maps) have shape (N, image_size, image_size, 3);
        ids are paths relative to ``root``, paths are absolute, class names are the sorted
        class folder names (the same for train and test), ``sha256`` holds each file's
        content hash.

    Raises:
        DataError: When the folder does not exist or holds no readable image.
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
    remove_abandoned(entry.parent, SCRATCH_PREFIX)
    data = _read_cache(entry, root)
    if data is None:
        if entry.exists():  # damaged (e.g. edited by hand): decode afresh
            shutil.rmtree(entry, ignore_errors=True)
        try:
            _build_cache(root, splits, class_names, size, entry, progress)
        except OSError as exc:
            _warn_uncached(entry.parent, exc, splits, size)
            data = _decode_in_memory(root, splits, class_names, size, progress)
        else:
            _remove_stale(entry, prefix)
            data = _read_cache(entry, root)
            if data is None:
                raise DataError(f"the cache just written in {entry} cannot be read back")
    return DataSplits(train=data["train"], test=data.get("test"), name=root.name)


_WARNED_UNCACHED: set[Path] = set()
"""Cache folders already warned about: a command that loads its images twice says it once."""


def _warn_uncached(
    folder: Path, error: OSError, splits: dict[str, _Split], image_size: int
) -> None:
    """Says (a ``RuntimeWarning``, once per folder and process) that the cache could not be
    written, and why."""
    if folder in _WARNED_UNCACHED:
        return
    _WARNED_UNCACHED.add(folder)
    if is_disk_full(error):
        needed = sum(len(s.files) for s in splits.values()) * image_size * image_size * 3
        free = free_bytes(folder)
        why = f"not enough space: it needs {size_text(needed)}" + (
            "" if free is None else f", {size_text(free)} free"
        )
    else:
        why = error.strerror or str(error)
    warnings.warn(
        f"cannot write the decoded-image cache in {folder} ({why}): decoding into memory "
        f"instead, again on every load; set {CACHE_ENV} to a folder with room to keep it",
        RuntimeWarning,
        stacklevel=3,
    )


def _decode_in_memory(
    root: Path,
    splits: dict[str, _Split],
    class_names: list[str],
    image_size: int,
    progress: bool,
) -> dict[str, ImageData]:
    """Decodes every split into memory: what a load does when its cache cannot be written."""
    class_index = {c: i for i, c in enumerate(class_names)}
    with tqdm(
        total=sum(len(s.files) for s in splits.values()),
        desc=f"decoding {root.name}",
        unit="img",
        disable=not (progress and sys.stderr.isatty()),
    ) as bar:
        out = {}
        for name, split in splits.items():
            part, pixels = _decode_split(name, split, class_index, image_size, None, bar)
            assert pixels is not None  # decoded into memory
            out[name] = _split_data(root, name, part, pixels, class_names)
    return out


# ---------------------------------------------------------------------------- streaming
# ``load_image_folder`` decodes everything into one array. The functions below let a caller
# stream instead: list the files once (same layouts, order, ids, labels and problems), then
# decode them a chunk at a time, e.g. in worker processes (they are plain picklable functions).


@dataclass(frozen=True, slots=True)  # no per-object dict: a listing may hold millions
class FolderFile:
    """One file of a listed folder, not yet read.

    Attributes:
        id: Path relative to the root, posix separators, as printable text: the id
            ``load_image_folder`` gives it.
        path: Absolute path, as ``os.fsdecode`` spells it (see :func:`printable`).
        label: Class index, -1 when unlabelled.
    """

    id: str
    path: str
    label: int


class FolderFiles(Sequence[FolderFile]):
    """A listing's files in columns: ids in a :class:`StringColumn`, labels in an array.

    A million ``FolderFile`` objects hold about 360 bytes each (the object, its id and its
    absolute path as Python strings); these columns hold the id's bytes plus 12. Items are
    made on access: ``files[i]`` is a ``FolderFile`` whose path joins the root and the file's
    relative path, exactly as the folder walk spelt it (its id, unless its name is not UTF-8).

    Args:
        root: The listed folder, absolute.
        ids: Paths relative to ``root``, posix separators, as printable text, in order.
        labels: Class index of each file, -1 when unlabelled. Shape: (N,).
        rels: The relative path as ``os.fsdecode`` spells it, by position, for the files
            whose name is not UTF-8 (whose id is not their name on disk).

    Raises:
        ValueError: When there are not as many labels as ids.
    """

    def __init__(
        self,
        root: str,
        ids: Iterable[str],
        labels: Sequence[int] | np.ndarray,
        rels: dict[int, str] | None = None,
    ) -> None:
        self._root = root
        self._ids = ids if isinstance(ids, StringColumn) else StringColumn.from_strings(ids)
        self._labels = np.asarray(labels, dtype=np.int32).reshape(-1)
        self._rels = dict(rels or {})
        if len(self._ids) != len(self._labels):
            raise ValueError(f"{len(self._ids)} ids but {len(self._labels)} labels")

    def part(self, start: int, stop: int) -> FolderFiles:
        """Files ``start`` to ``stop`` (exclusive), sharing these columns rather than copying."""
        rels = {i - start: rel for i, rel in self._rels.items() if start <= i < stop}
        return FolderFiles(self._root, self._ids[start:stop], self._labels[start:stop], rels)

    @property
    def labels(self) -> np.ndarray:
        """Class index per file, -1 when unlabelled. Shape: (N,), int32."""
        return self._labels

    def ids(self) -> Iterator[str]:
        """Every id, in order, without making the ``FolderFile``s (nor their paths)."""
        return iter(self._ids)

    def id(self, i: int) -> str:
        """The id of file ``i``, without making its ``FolderFile``."""
        return self._ids[i]

    def _item(self, i: int) -> FolderFile:
        item_id = self._ids[i]
        rel = self._rels.get(i, item_id)
        native = rel if os.sep == "/" else rel.replace("/", os.sep)
        return FolderFile(item_id, os.path.join(self._root, native), int(self._labels[i]))

    def __len__(self) -> int:
        return len(self._labels)

    @overload
    def __getitem__(self, i: int) -> FolderFile: ...

    @overload
    def __getitem__(self, i: slice) -> list[FolderFile]: ...

    def __getitem__(self, i: int | slice) -> FolderFile | list[FolderFile]:
        if isinstance(i, slice):
            return [self._item(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"file {i} of {n}")
        return self._item(i % n)

    def __iter__(self) -> Iterator[FolderFile]:
        return (self._item(j) for j in range(len(self)))

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns."""
        return self._ids.nbytes + self._labels.nbytes


@dataclass(frozen=True)
class FolderSplit:
    """The files of one split of a listed folder.

    Attributes:
        name: ``train`` or ``test``.
        where: The folder, for messages.
        files: Every candidate file, in ``load_image_folder``'s order (in columns).
        problems: ``(absolute path, reason)`` for files already known to be unusable (broken
            links, unreadable files); decoding failures come on top, from ``decode_files``.
    """

    name: str
    where: str
    files: FolderFiles
    problems: list[tuple[str, str]]


@dataclass(frozen=True)
class FolderListing:
    """What ``list_image_folder`` found: the splits and the class names.

    Attributes:
        root: The folder, absolute.
        class_names: Sorted class folder names (empty when unlabelled).
        splits: ``train`` and, where the layout has one, ``test``, in that order.
        files: Every split's files, train first; each split's ``files`` is a part of these
            columns, not a copy.
    """

    root: Path
    class_names: list[str]
    splits: list[FolderSplit]
    files: FolderFiles

    @property
    def source(self) -> str:
        """The description ``all_images(load_image_folder(root))`` gives the images."""
        if len(self.splits) == 1:
            return f"image folder {self.root} ({self.splits[0].name})"
        return f"{self.root.name} (train + test)"

    def __len__(self) -> int:
        return sum(len(s.files) for s in self.splits)


@dataclass(frozen=True)
class DecodedFiles:
    """The result of ``decode_files`` for a list of files.

    Attributes:
        pixels: The readable images only, in order. Shape: (n_ok, S, S, 3), uint8.
        ok: Whether each file decoded. Shape: (n,), bool.
        sha256: SHA-256 of each file's bytes as read ("" when it could not be read).
        errors: Why each file failed, None where it decoded.
    """

    pixels: np.ndarray
    ok: np.ndarray
    sha256: list[str]
    errors: list[str | None]


def list_image_folder(root: str | Path) -> FolderListing:
    """Lists a folder of images as ``load_image_folder`` would read it, without reading files.

    Each file is only opened (so unreadable ones are reported as ``load_image_folder``
    reports them); nothing is read, hashed or decoded, and nothing is cached.

    Args:
        root: The folder (see the module docstring for the layouts).

    Returns:
        The splits, their files and the class names.

    Raises:
        DataError: When the folder does not exist, holds no file, or a split holds none.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    splits, class_names = _scan(root, hashed=False)
    if not any(s.files for s in splits.values()):
        raise DataError(
            f"{root} holds no image files; expected train/<class>/*, <class>/* or images "
            "directly in the folder"
        )
    class_index = {c: i for i, c in enumerate(class_names)}
    ids = StringColumnBuilder()
    labels = array("i")  # int32, not a list of int objects
    rels: dict[int, str] = {}
    bounds = [0]
    for split in splits.values():
        if not split.files:
            raise DataError(f"{split.where} holds no files")
        for f in split.files:
            item_id = f.id
            if item_id != f.rel:
                rels[len(labels)] = f.rel
            ids.append(item_id)
            labels.append(-1 if f.label is None else class_index[f.label])
        split.files.clear()  # the scan's objects go as soon as the columns hold them
        bounds.append(len(labels))
    files = FolderFiles(str(root), ids.build(), labels, rels)
    del labels
    out = [
        FolderSplit(
            name,
            split.where,
            files.part(bounds[k], bounds[k + 1]),
            [(str(root / rel), reason) for rel, reason in split.problems],
        )
        for k, (name, split) in enumerate(splits.items())
    ]
    return FolderListing(root=root, class_names=class_names, splits=out, files=files)


SIZE_SAMPLE = 256
"""Files whose headers ``sample_image_sizes`` reads."""


def sample_image_sizes(
    paths: Sequence[str], *, sample: int = SIZE_SAMPLE, seed: int = 0
) -> np.ndarray:
    """Width and height of a random sample of image files, from their headers only.

    Pillow reads the size without decoding, so this costs one small read per file. Files
    that cannot be opened are left out (the folder reader reports them).

    Args:
        paths: The files (e.g. ``ImageData.paths``, or a listing's files' paths).
        sample: Most files to look at.
        seed: Chooses the sample.

    Returns:
        (width, height) per readable sampled file. Shape: (M, 2), int64, M <= sample.
    """
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(paths), size=min(sample, len(paths)), replace=False))
    sizes = []
    for i in picks:
        try:
            with open_regular(paths[int(i)]) as f, Image.open(f) as img:
                sizes.append(img.size)
        except Exception:  # unreadable files are reported by the reader, not here
            continue
    return np.array(sizes, dtype=np.int64).reshape(-1, 2)


def decode_files(paths: list[str], image_size: int) -> DecodedFiles:
    """Reads and decodes files as ``load_image_folder`` does, each read exactly once.

    Args:
        paths: Files to decode.
        image_size: Side of the decoded squares.

    Returns:
        The pixels of the readable files and, for every file, its hash and any failure.
    """
    pixels = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    hashes: list[str] = []
    errors: list[str | None] = []
    n = 0
    for i, path in enumerate(paths):
        try:
            data = read_image_file(path)  # a non-image is refused from its first bytes
        except NotARegularFile as exc:  # replaced since it was listed
            hashes.append("")
            errors.append(f"{exc.strerror}; ignored")
            continue
        except OSError as exc:
            hashes.append("")
            errors.append(f"cannot read the file: {exc.strerror or exc}")
            continue
        except DataError as exc:
            hashes.append("")
            errors.append(str(exc))
            continue
        hashes.append(hashlib.sha256(data).hexdigest())
        try:
            pixels[n] = decode_image(data, image_size, channels=3, max_pixels=DEFAULT_MAX_PIXELS)
        except DataError as exc:
            errors.append(str(exc))
            continue
        errors.append(None)
        ok[i] = True
        n += 1
    return DecodedFiles(pixels=pixels[:n].copy(), ok=ok, sha256=hashes, errors=errors)


def hash_files(paths: list[str]) -> list[str]:
    """SHA-256 of each file's bytes, "" for a file that cannot be read."""
    out = []
    for path in paths:
        try:
            out.append(_hash_file(path))
        except OSError:
            out.append("")
    return out
