"""A full disk as one line a user can act on, rather than a traceback or a half-written file.

Writers that can run out of space (checkpoints, index folders, the decoded-image cache) turn
``ENOSPC`` / ``EDQUOT`` into a :class:`DiskFullError` that names the folder, the space the
write needed (or a lower bound where it is not known in advance) and the space left.

Memory-mapped files are a special case: a page of a sparse file that the disk cannot back
kills the process with ``SIGBUS`` (a silent ``Bus error``, exit status 135) when it is first
written. :func:`allocated_memmap` reserves every block before mapping, so a full disk is an
``OSError`` at the start instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from latentsearch.errors import LatentsearchError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""``errno`` values that mean the file system (or the user's quota) has no room left."""


class DiskFullError(LatentsearchError, OSError):
    """A write ran out of space; what it wrote was removed and earlier files are intact.

    An ``OSError`` too (``errno`` ``ENOSPC``), so callers that handled the plain ``OSError``
    still do; its ``str()`` is the message alone.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno.ENOSPC


def is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` (or an exception it was raised from) is a full disk or quota."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        error = error.__cause__ or error.__context__
    return False


def free_bytes(folder: str | Path) -> int | None:
    """Space left to an ordinary user on ``folder``'s file system (None when unknown).

    A folder that does not exist yet is measured at its nearest existing parent.
    """
    path = Path(os.path.abspath(folder))
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def size_text(n: int) -> str:
    """Bytes as a short figure for messages: ``812 B``, ``340 kB``, ``1.2 MB``, ``3.4 GB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.2g} {unit}"
    return f"{n} B"


def disk_full_error(
    folder: str | Path, what: str, *, needed: int | None = None, written: int | None = None
) -> DiskFullError:
    """The one-line error for ``what`` not fitting in ``folder``.

    Args:
        folder: Where the write went.
        what: What was being written ("checkpoint epoch-003.pt").
        needed: Bytes the write needs in all, when known.
        written: Bytes it had written when the disk filled (a lower bound of ``needed``).
    """
    free = free_bytes(folder)
    if needed is not None:
        need = f"it needs {size_text(needed)}"
    elif written:
        need = f"it needs more than the {size_text(written)} written before the disk filled"
    else:
        need = "the disk is full"
    left = "" if free is None else f", {size_text(free)} free"
    return DiskFullError(
        f"not enough space in {folder} for {what} ({need}{left}): free some space there or "
        "write elsewhere",
    )


@contextlib.contextmanager
def disk_full_as_error(
    folder: str | Path, what: str, *, needed: int | None = None
) -> Iterator[None]:
    """Raises :func:`disk_full_error` in place of a full disk's ``OSError`` in the block."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise disk_full_error(folder, what, needed=needed) from e


def allocated_memmap(path: str | Path, *, shape: tuple[int, ...], dtype: Any) -> np.memmap:
    """A new ``.npy`` file mapped for writing (``open_memmap(mode="w+")``), its blocks
    allocated on disk before the first page is written.

    Without the allocation the file is sparse, and a write to a page that a full disk cannot
    back kills the process with ``SIGBUS``. Where the file system cannot allocate ahead
    (no ``posix_fallocate``, or it refuses for another reason than space) the file is mapped
    as before.

    Raises:
        OSError: ``ENOSPC`` / ``EDQUOT`` when the file does not fit; it is deleted then.
    """
    path = Path(path)
    array = open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        size = os.path.getsize(path)
        if size and hasattr(os, "posix_fallocate"):
            with open(path, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, size)
    except OSError as e:
        if is_disk_full(e):
            del array
            path.unlink(missing_ok=True)
            raise
    return array
