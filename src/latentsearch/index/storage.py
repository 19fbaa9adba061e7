"""Writing an index folder atomically and reading it back as one consistent snapshot.

A save writes every file into a hidden sibling folder, flushes each file and the folder to
disk, and only then swaps the folder into place, so a crash or an error mid-write leaves the
previous index untouched. On Linux the swap is one ``renameat2(RENAME_EXCHANGE)`` call, so
readers never see the path missing; elsewhere it is two renames.

The hidden folder is a locked scratch folder (``latentsearch.data.scratch``): one left behind
by a process killed mid-save is deleted by the next save to the same path, and one that
another process is still writing is left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from latentsearch.data.scratch import remove_abandoned, scratch_dir
from latentsearch.diskspace import DiskFullError, disk_full_as_error, disk_full_error, is_disk_full

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def write_file(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Creates ``path``, lets ``write`` fill it, and flushes it to disk."""
    with open(path, "xb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Flushes a folder's entries (a rename into it) to disk; a no-op on Windows."""
    if sys.platform == "win32":  # folders cannot be opened for fsync there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths (Linux ``renameat2``); False when unsupported here."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def scratch_prefix(dest: Path) -> str:
    """Name prefix of the scratch folders a save of ``dest`` writes into."""
    return f".{dest.name}.tmp-"


def replace_dir(new: Path, dest: Path) -> Path | None:
    """Moves folder ``new`` to ``dest``; returns where the old ``dest`` went (to delete)."""
    if not dest.exists():
        os.rename(new, dest)
        return None
    if _exchange(new, dest):
        return new
    old = new.with_name(f"{new.name}-old")  # shares the scratch folder's lock
    os.rename(dest, old)
    try:
        os.rename(new, dest)
    except OSError:
        os.rename(old, dest)
        raise
    return old


def fsync_tree(path: Path) -> None:
    """Flushes every file and folder under ``path`` (and ``path`` itself) to disk."""
    for root, _dirs, names, root_fd in os.fwalk(path, topdown=False):
        for name in names:
            fd = os.open(name, os.O_RDONLY, dir_fd=root_fd)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def npy_file_of(array: np.ndarray) -> Path | None:
    """The ``.npy`` file ``array`` is a read-only map of, whole, or None.

    Such an array's file already holds exactly what ``np.save(f, array)`` would write, so a
    save can place that file instead of writing the bytes again.
    """
    if not isinstance(array, np.memmap) or array.mode != "r" or array.filename is None:
        return None
    path = Path(array.filename)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version != (1, 0):
                return None
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            offset = f.tell()
    except (OSError, ValueError):
        return None
    # A slice of the map keeps the file's name and offset: only the whole array qualifies.
    whole = shape == array.shape and dtype == array.dtype and not fortran
    if not whole or offset != array.offset or not array.flags.c_contiguous:
        return None
    return path


def place_file(src: Path, dst: Path) -> None:
    """Puts a finished file at ``dst``: a hard link where possible, else a copy; flushed.

    Raises:
        OSError: When it can be neither linked nor copied.
    """
    with open(src, "rb") as f:
        os.fsync(f.fileno())  # a link shares the data: it must be on disk like a write's
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(src, dst)
        with open(dst, "rb") as f:
            os.fsync(f.fileno())


def write_folder(
    dest: Path,
    files: dict[str, Callable[[IO[bytes]], None] | Path],
    folders: dict[str, Callable[[Path], None]] | None = None,
) -> None:
    """Writes ``files`` (name -> writer) as the folder ``dest``, replacing it atomically.

    Args:
        dest: The folder to write.
        files: File name -> a writer that fills the open file, or an existing file to place
            there as it is (see ``place_file``; it must not change afterwards).
        folders: Sub-folder name -> a writer that creates that folder at the path it is
            given (an embedded database, say); flushed to disk like the files.

    Raises:
        DiskFullError: When the files do not fit; nothing of them is left behind, and
            ``dest`` is as it was before.
        OSError: When a file cannot be written for another reason; likewise.
    """
    dest = Path(os.path.abspath(dest))
    with disk_full_as_error(dest.parent, dest.name):
        dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = scratch_prefix(dest)
    remove_abandoned(dest.parent, prefix)
    full: OSError | None = None
    written = 0
    with scratch_dir(dest.parent, prefix) as tmp:
        old: Path | None = None
        try:
            for name, write in files.items():
                if isinstance(write, Path):
                    place_file(write, tmp / name)
                else:
                    write_file(tmp / name, write)
            for name, write_dir in (folders or {}).items():
                write_dir(tmp / name)
                fsync_tree(tmp / name)
            fsync_dir(tmp)
            old = replace_dir(tmp, dest)
            fsync_dir(dest.parent)
        except OSError as e:
            if not is_disk_full(e) or isinstance(e, DiskFullError):
                raise
            full, written = e, new_bytes(tmp)
        finally:
            if old is not None and old != tmp and old.exists():
                shutil.rmtree(old, ignore_errors=True)
    if full is not None:  # reported once the scratch folder is gone, so free space counts it
        raise disk_full_error(dest.parent, dest.name, written=written) from full


def new_bytes(folder: Path) -> int:
    """Bytes the files under ``folder`` occupy alone: hard links of other files are free."""
    total = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                if st.st_nlink == 1:
                    total += st.st_size
    return total


@contextlib.contextmanager
def open_members(path: Path, names: list[str]) -> Iterator[dict[str, IO[bytes]]]:
    """Opens files of one folder together, so a save swapping ``path`` cannot mix versions.

    All files are opened up front, relative to one handle on the folder: once open, they stay
    readable even when a concurrent save replaces the folder and deletes the old one.

    Yields:
        The open files (binary), by name.

    Raises:
        FileNotFoundError: When a file is missing.
        OSError: When ``path`` is not a readable folder.
    """
    with contextlib.ExitStack() as stack:
        files: dict[str, IO[bytes]]
        if os.open in os.supports_dir_fd:
            dir_fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            stack.callback(os.close, dir_fd)

            def opener(name: str, flags: int) -> int:
                return os.open(name, flags, dir_fd=dir_fd)

            files = {n: stack.enter_context(open(n, "rb", opener=opener)) for n in names}
        else:
            files = {n: stack.enter_context(open(path / n, "rb")) for n in names}
        yield files


def read_npy(f: IO[bytes]) -> np.ndarray:
    """Reads a ``.npy`` array from an open file, memory-mapped where the system allows.

    Mapping keeps a large index's vectors (4·D bytes each) out of the process's own memory
    until pages are touched, so an IVF-PQ index re-ranks from the page cache instead of
    holding every float in RAM. The map is copy-on-write: writing to the array never reaches
    the file. On POSIX the open file (and so the map) outlives a save that swaps and deletes
    the folder; on Windows, where a mapped file cannot be deleted, the array is read instead.

    Raises:
        ValueError: When the file is not a valid ``.npy`` array.
    """
    if os.name != "posix":
        return np.asarray(np.load(f, allow_pickle=False))
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject:
        raise ValueError("the array holds Python objects, not numbers")
    offset = f.tell()
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = os.fstat(f.fileno()).st_size
    if size < expected:
        raise ValueError(f"truncated .npy file: {size} bytes, the header promises {expected}")
    if int(np.prod(shape, dtype=np.int64)) == 0:  # mmap cannot map zero bytes
        return np.zeros(shape, dtype=dtype, order="F" if fortran else "C")
    return np.memmap(
        f, dtype=dtype, mode="c", offset=offset, shape=shape, order="F" if fortran else "C"
    )
