"""Scratch folders that show whether their writer is still alive, so leftovers can be cleaned.

Atomic saves build their result in a hidden sibling folder and rename it into place. A process
killed mid-write (``kill -9``, power loss) leaves that folder behind, and nothing would ever
delete it. Each scratch folder here therefore comes with a lock file that its writer holds
locked (``flock``) for as long as it runs; the kernel drops the lock when the process dies,
however it dies. :func:`remove_abandoned` deletes every scratch folder whose lock is free,
and never one whose writer is still at work.

A folder whose name starts with a scratch folder's name (``<scratch>-old``, say) shares its
lock, and is cleaned with it.

Where ``flock`` does not exist (Windows), a scratch folder counts as abandoned once it is
older than ``ABANDONED_AFTER_S``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".lock"
"""Appended to a scratch folder's name to name its lock file."""

ABANDONED_AFTER_S = 24 * 3600.0
"""Age after which a scratch folder without a usable lock is deleted."""

_TOKEN_CHARS = 8
"""Length of the random part of a scratch folder's name (4 bytes in hex)."""


def _try_lock(f: IO[bytes]) -> bool:
    """Takes an exclusive lock on ``f`` without waiting; False when another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def scratch_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """Creates ``parent/<prefix><random>`` and holds its lock while the block runs.

    The folder (if still there, e.g. not renamed away) and its lock file are deleted when the
    block ends, normally or by an exception.

    Yields:
        The new, empty folder.

    Raises:
        OSError: When the folder cannot be created.
    """
    parent.mkdir(parents=True, exist_ok=True)
    name = f"{prefix}{secrets.token_hex(_TOKEN_CHARS // 2)}"
    folder = parent / name
    lock_path = parent / f"{name}{LOCK_SUFFIX}"
    # The lock exists (and is held) before the folder does, so a cleaner never sees the folder
    # without a live lock.
    with open(lock_path, "wb") as lock:
        try:
            if fcntl is not None:
                # Blocking: a cleaner may hold the new lock for an instant while it checks it.
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            os.mkdir(folder)
            try:
                yield folder
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        finally:
            with contextlib.suppress(OSError):
                lock_path.unlink()


def _abandoned(folder: Path, lock_path: Path) -> bool:
    """Whether ``folder``'s writer is gone (its lock can be taken, or it is old and unlocked)."""
    try:
        with open(lock_path, "rb") as lock:
            if fcntl is not None:
                return _try_lock(lock)  # released again when the file closes
    except FileNotFoundError:
        pass
    except OSError:
        return False
    try:
        age = time.time() - folder.stat().st_mtime
    except OSError:
        return False
    return age > ABANDONED_AFTER_S


def remove_abandoned(parent: Path, prefix: str) -> list[Path]:
    """Deletes the scratch folders ``parent/<prefix>*`` whose writers are no longer running.

    Folders still being written (their lock is held) are left alone. Never raises: a folder
    that cannot be deleted now is tried again next time.

    Returns:
        The folders deleted.
    """
    removed: list[Path] = []
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for path in candidates:
        if path.name.endswith(LOCK_SUFFIX):
            folder = path.with_name(path.name[: -len(LOCK_SUFFIX)])
            if not folder.exists() and _abandoned(folder, path):
                with contextlib.suppress(OSError):
                    path.unlink()  # a lock whose folder is gone
            continue
        if not path.is_dir() or path.is_symlink():
            continue
        lock_path = path.with_name(path.name[: len(prefix) + _TOKEN_CHARS] + LOCK_SUFFIX)
        if _abandoned(path, lock_path):
            shutil.rmtree(path, ignore_errors=True)
            if path.name == lock_path.name[: -len(LOCK_SUFFIX)]:
                with contextlib.suppress(OSError):
                    lock_path.unlink()
            if not path.exists():
                removed.append(path)
    return removed
