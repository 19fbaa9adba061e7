"""Crash consistency of `index --out` and `index --update`: a process killed at each stage
(``os._exit``: no cleanup runs, as with ``kill -9``) leaves the old index loadable, and the
next run cleans the leftovers up and completes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from latentsearch.cli import main
from latentsearch.index import ImageIndex
from latentsearch.runs import Run

# Each stage patches one function so that the process dies there.
DRIVER = r"""
import os, sys
from latentsearch.cli import main
from latentsearch.data import folder
from latentsearch.index import image_index, storage, streaming

stage = sys.argv[1]
calls = {"n": 0}

def die():
    os._exit(137)

if stage == "decode":
    real_decode = folder._decode_file
    def decode(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            die()
        return real_decode(*a, **k)
    folder._decode_file = decode
    # `index --out` of a folder streams: die in its first chunk, decoded in this process.
    streaming.decode_files = lambda *a, **k: die()
    sys.argv += ["--workers", "0"]
elif stage == "embed":
    image_index.embed_images = lambda *a, **k: die()
    streaming.embed_images = lambda *a, **k: die()
elif stage == "write":
    real_write = storage.write_file
    def write(*a, **k):
        real_write(*a, **k)
        die()
    storage.write_file = write
elif stage == "swap":
    storage.replace_dir = lambda *a, **k: die()
elif stage == "after-swap":
    real_replace = storage.replace_dir
    def replace(*a, **k):
        real_replace(*a, **k)
        die()
    storage.replace_dir = replace
sys.exit(main(sys.argv[2:]))
"""

STAGES = ["decode", "embed", "write", "swap", "after-swap"]


def _leftovers(*folders: Path) -> list[str]:
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [p.name for p in folder.rglob("*") if ".tmp-" in p.name or ".old" in p.name]
    return found


@pytest.mark.parametrize("mode", ["out", "update"])
@pytest.mark.parametrize("stage", STAGES)
def test_killed_index_leaves_the_old_one_and_the_next_run_completes(
    run: Run,
    folder: Path,
    write_image: Callable[..., Path],
    tmp_path: Path,
    stage: str,
    mode: str,
) -> None:
    cache = tmp_path / "default-cache"
    idx = tmp_path / "photos.index"
    assert main(["index", str(run.path), str(folder), "--out", str(idx), "--json"]) == 0
    old_count = len(ImageIndex.load(idx))
    # New files, so that the killed run has something to decode and embed.
    for i in range(3):
        write_image(folder / "new" / f"{i}.png", seed=900 + i, tint=(1, 1, 1))

    argv = ["index", str(run.path), str(folder), "--json"]
    argv += ["--out", str(idx)] if mode == "out" else ["--update", str(idx)]
    env = {**os.environ, "LATENTSEARCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", DRIVER, stage, *argv], env=env, capture_output=True, timeout=120
    )
    assert killed.returncode == 137, killed.stderr.decode()[-2000:]

    after = ImageIndex.load(idx)  # never a broken index
    if stage == "after-swap":
        assert len(after) in (old_count, old_count + 3)
    else:
        assert len(after) == old_count

    assert main(argv) == 0
    assert len(ImageIndex.load(idx)) == old_count + 3
    assert _leftovers(tmp_path, cache) == []
