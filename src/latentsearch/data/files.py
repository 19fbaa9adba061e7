"""Files as the data sources read them: never a special file, names that are not UTF-8.

A folder may hold things that are not files to read: a named pipe blocks whoever opens it
until something writes to it, a link to ``/dev/zero`` never ends, and opening some devices
acts on them. :func:`open_regular` opens only regular files. A file name may also hold bytes
that are not UTF-8 (a Latin-1 archive, an old camera): ``os.fsdecode`` keeps them as lone
surrogates, which no UTF-8 writer accepts; :func:`printable` is the text to show them as.
"""

from __future__ import annotations

import os
import stat
from typing import IO

__all__ = [
    "NotARegularFile",
    "check_readable",
    "not_regular_reason",
    "open_regular",
    "printable",
]


def printable(name: str) -> str:
    """A file name or path as printable text: bytes that are not UTF-8 written as ``\\xNN``.

    ``os.fsdecode`` keeps such bytes as lone surrogates, which cannot be written as UTF-8
    (JSON, HTTP, a terminal); this is the id a folder gives such a file, and the form to
    show its path in. Names that are valid UTF-8 come back unchanged.
    """
    if name.isascii():
        return name
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def _kind(mode: int) -> str:
    """What a file of this mode is, for messages (the caller knows it is not regular)."""
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def not_regular_reason(mode: int) -> str:
    """Why a file of this ``st_mode`` is not read: e.g. "a named pipe (FIFO), not a file"."""
    return f"{_kind(mode)}, not a file"


class NotARegularFile(OSError):
    """The path is a named pipe, a device, a socket or a folder, not a file to read."""


def open_regular(path: str) -> IO[bytes]:
    """Opens a regular file for reading; refuses anything else without blocking on it.

    A plain ``open`` of a named pipe waits for a writer (forever), and a device such as
    ``/dev/zero`` never ends; opening some devices acts on them. So the path is checked with
    ``stat`` and not opened unless it is a regular file; and since it may be swapped between
    that check and the open, it is opened non-blocking and checked again with ``fstat``
    before any read.

    Raises:
        NotARegularFile: When the path is not a regular file (its ``strerror`` says what).
        OSError: When it cannot be opened.
    """
    fd = _open_regular_fd(path)
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_regular_fd(path: str) -> int:
    """:func:`open_regular`'s descriptor (the caller closes it)."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFile(0, not_regular_reason(mode), path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(0, not_regular_reason(mode), path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_readable(path: str) -> None:
    """Opens and closes a regular file, reading nothing (:func:`open_regular`'s errors)."""
    os.close(_open_regular_fd(path))
