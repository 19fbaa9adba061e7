"""Reading files safely: special files are never opened, names that are not UTF-8 print."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from latentsearch.data import files as files_module
from latentsearch.data.files import printable


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_open_regular_never_opens_a_special_file(
    tmp_path: Path, files, monkeypatch: pytest.MonkeyPatch
) -> None:
    files.png(tmp_path / "a.png", (1, 1, 1))
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "zero").symlink_to("/dev/zero")
    opened: list[str] = []
    real_open = os.open

    def spying(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(files_module.os, "open", spying)
    for name, kind in (("pipe", "named pipe"), ("zero", "character device")):
        with pytest.raises(files_module.NotARegularFile, match=kind):
            files_module.open_regular(str(tmp_path / name))
    with files_module.open_regular(str(tmp_path / "a.png")) as f:
        assert f.read(4) == b"\x89PNG"
    assert opened == [str(tmp_path / "a.png")]


def test_printable_writes_bytes_that_are_not_utf8_as_escapes() -> None:
    assert printable("plain/ascii.png") == "plain/ascii.png"
    assert printable("café/naïve.png") == "café/naïve.png"  # valid UTF-8 stays as it is
    assert printable(os.fsdecode(b"caf\xe9.png")) == "caf\\xe9.png"
    assert printable(os.fsdecode(b"\xff\xfe/x")).encode("utf-8") == b"\\xff\\xfe/x"
