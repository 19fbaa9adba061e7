"""Atomic folder writes: replacement, failure mid-write, both swap strategies."""

from __future__ import annotations

from pathlib import Path
from typing import IO

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
