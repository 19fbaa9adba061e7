"""Atomic folder writes: replacement, failure mid-write, both swap strategies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

import numpy as np
import pytest

from latentsearch.index import storage


def _writer(data: bytes):  # type: ignore[no-untyped-def]
    def write(f: IO[bytes]) -> None:
        f.write(data)

    return write


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_write_folder_creates_then_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr(storage, "_exchange", lambda a, b: False)
    dest = tmp_path / "idx"
    storage.write_folder(dest, {"a": _writer(b"1"), "b": _writer(b"2")})
    storage.write_folder(dest, {"a": _writer(b"3")})
    assert sorted(p.name for p in dest.iterdir()) == ["a"]
    assert (dest / "a").read_bytes() == b"3"
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_failure_mid_write_keeps_the_old_folder(tmp_path: Path) -> None:
    dest = tmp_path / "idx"
    storage.write_folder(dest, {"a": _writer(b"old")})

    def boom(f: IO[bytes]) -> None:
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="fire"):
        storage.write_folder(dest, {"a": _writer(b"new"), "b": boom})
    assert (dest / "a").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_open_members_reads_one_snapshot(tmp_path: Path) -> None:
    dest = tmp_path / "idx"
    storage.write_folder(dest, {"a": _writer(b"v1"), "b": _writer(b"v1")})
    with storage.open_members(dest, ["a", "b"]) as files:
        first = files["a"].read()
        storage.write_folder(dest, {"a": _writer(b"v2"), "b": _writer(b"v2")})
        second = files["b"].read()
    assert first == second == b"v1"  # not a mix of the two versions
    with storage.open_members(dest, ["b"]) as files:
        assert files["b"].read() == b"v2"
    with pytest.raises(FileNotFoundError), storage.open_members(dest, ["a", "zzz"]):
        pass


def _npy_writer(array: np.ndarray):  # type: ignore[no-untyped-def]
    def write(f: IO[bytes]) -> None:
        np.save(f, array, allow_pickle=False)

    return write


def test_read_npy_maps_the_vectors_copy_on_write_and_outlives_a_swap(tmp_path: Path) -> None:
    dest = tmp_path / "idx"
    vectors = np.arange(24, dtype=np.float32).reshape(6, 4)
    storage.write_folder(dest, {"e.npy": _npy_writer(vectors)})
    with storage.open_members(dest, ["e.npy"]) as files:
        mapped = storage.read_npy(files["e.npy"])
    if os.name == "posix":
        assert isinstance(mapped, np.memmap)  # not copied into the process's memory
    storage.write_folder(dest, {"e.npy": _npy_writer(vectors + 100)})  # old file deleted
    np.testing.assert_array_equal(mapped, vectors)  # still the snapshot that was opened
    mapped[0, 0] = -1.0  # copy-on-write: the change stays in this process
    assert np.load(dest / "e.npy")[0, 0] == 100.0
    empty = tmp_path / "empty"
    storage.write_folder(empty, {"e.npy": _npy_writer(np.zeros((0, 4), np.float32))})
    with storage.open_members(empty, ["e.npy"]) as files:
        assert storage.read_npy(files["e.npy"]).shape == (0, 4)


def test_read_npy_refuses_truncated_and_foreign_files(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    full = tmp_path / "full.npy"
    np.save(full, np.ones((100, 8), np.float32))
    storage.write_folder(
        folder,
        {
            "cut.npy": _writer(full.read_bytes()[:-64]),
            "text.npy": _writer(b"not an array at all"),
        },
    )
    with storage.open_members(folder, ["cut.npy", "text.npy"]) as files:
        with pytest.raises(ValueError, match="truncated"):
            storage.read_npy(files["cut.npy"])
        with pytest.raises(ValueError):
            storage.read_npy(files["text.npy"])


def test_a_placed_file_is_linked_not_copied(tmp_path: Path) -> None:
    src = tmp_path / "vectors.npy"
    src.write_bytes(b"payload")
    storage.write_folder(tmp_path / "idx", {"v.npy": src, "m": _writer(b"x")})
    placed = tmp_path / "idx" / "v.npy"
    assert placed.read_bytes() == b"payload"
    assert placed.stat().st_ino == src.stat().st_ino
    src.unlink()  # the scratch file going away leaves the index's file
    assert placed.read_bytes() == b"payload"


def test_a_placed_file_is_copied_where_links_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(a: object, b: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(storage.os, "link", no_links)
    src = tmp_path / "vectors.npy"
    src.write_bytes(b"payload")
    storage.write_folder(tmp_path / "idx", {"v.npy": src})
    placed = tmp_path / "idx" / "v.npy"
    assert placed.read_bytes() == b"payload"
    assert placed.stat().st_ino != src.stat().st_ino


def test_only_a_whole_read_only_npy_map_names_its_file(tmp_path: Path) -> None:
    path = tmp_path / "e.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(4, 3))
    whole = np.load(path, mmap_mode="r")
    assert storage.npy_file_of(whole) == path
    assert storage.npy_file_of(whole[1:]) is None  # keeps the file's name: not the file
    assert storage.npy_file_of(whole[:, :2]) is None
    assert storage.npy_file_of(np.load(path, mmap_mode="c")) is None  # may differ from disk
    assert storage.npy_file_of(np.load(path, mmap_mode="r+")) is None
    assert storage.npy_file_of(np.load(path)) is None  # in memory
