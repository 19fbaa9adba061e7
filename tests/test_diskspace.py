"""A full disk as one line: the error, its figures, and memory maps allocated up front."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from latentsearch.diskspace import (
    DiskFullError,
    allocated_memmap,
    disk_full_as_error,
    disk_full_error,
    is_disk_full,
    size_text,
)
from latentsearch.errors import LatentsearchError


def test_sizes_read_as_short_figures() -> None:
    assert [size_text(n) for n in (0, 999, 1234, 340_187, 123_456_789, 5 * 10**9)] == [
        "0 B",
        "999 B",
        "1.2 kB",
        "340 kB",
        "123 MB",
        "5 GB",
    ]


def test_the_error_names_the_folder_the_need_and_the_free_space(
    small_fs: Callable[[int], Path],
) -> None:
    disk = small_fs(64)  # 64 KiB: 66 kB free
    error = disk_full_error(disk, "epoch-002.pt", needed=340_187)
    assert str(error) == (
        f"not enough space in {disk} for epoch-002.pt (it needs 340 kB, 66 kB free): free some "
        "space there or write elsewhere"
    )
    assert isinstance(error, LatentsearchError) and isinstance(error, OSError)
    assert error.errno == errno.ENOSPC and is_disk_full(error)
    lower_bound = disk_full_error(disk / "not-yet", "idx", written=2048)
    assert "(it needs more than the 2 kB written before the disk filled, 66 kB free)" in str(
        lower_bound
    )


def test_only_a_full_disk_becomes_the_one_line_error(tmp_path: Path) -> None:
    full = pytest.raises(DiskFullError, match=f"not enough space in {tmp_path} for x")
    with full, disk_full_as_error(tmp_path, "x"):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    with pytest.raises(PermissionError), disk_full_as_error(tmp_path, "x"):
        raise PermissionError(errno.EACCES, "Permission denied")
    try:
        raise RuntimeError("torch's writer failed") from OSError(errno.ENOSPC, "full")
    except RuntimeError as e:
        assert is_disk_full(e)  # through its cause


def test_a_memory_map_that_does_not_fit_is_an_error_not_a_bus_error(
    small_fs: Callable[[int], Path],
) -> None:
    # A sparse map of 200 KiB on a 64 KiB disk died of SIGBUS at the first page it could not
    # back; allocated up front, it is ENOSPC before anything is written, and no file is left.
    disk = small_fs(64)
    with pytest.raises(OSError) as caught:
        allocated_memmap(disk / "big.npy", shape=(200, 1024), dtype=np.uint8)
    assert is_disk_full(caught.value)
    assert list(disk.iterdir()) == []
    small = allocated_memmap(disk / "small.npy", shape=(16, 1024), dtype=np.uint8)
    small[:] = 7
    small.flush()
    assert (np.load(disk / "small.npy") == 7).all()
