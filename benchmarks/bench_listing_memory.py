"""Memory of a folder listing: the columns ``list_image_folder`` keeps against one object per file.

Writes ``--files`` empty files in a ``train/<class>/<NNN>/`` layout (names like a real
collection's: ``train/class3/042/image_0421234.jpg``; listing opens a file but never reads it),
lists the folder in two fresh processes and records the growth of each one's anonymous resident
memory (``RssAnon``, after a garbage collection) while it keeps:

- the listing as ``list_image_folder`` returns it (``FolderFiles`` columns: the ids' bytes,
  offsets, labels), or
- the same files as a list of ``FolderFile`` objects (what the listing held before it had
  columns), the listing itself dropped;

plus the listing's time and each process's peak. Both figures include what the scan left
behind in the allocator, so their difference is the representation's.

Results are merged into ``benchmarks/results/scale.json`` under ``listing_memory``; the files
are deleted afterwards.

    python benchmarks/bench_listing_memory.py --files 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

CLASSES = 10
PER_FOLDER = 1000

MEASURE = r"""
import gc, json, resource, sys, time

def anon_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")

from latentsearch.data.folder import list_image_folder

gc.collect()
before = anon_mib()
t = time.perf_counter()
listing = list_image_folder(sys.argv[1])
seconds = time.perf_counter() - t
n = len(listing)
nbytes = sum(s.files.nbytes for s in listing.splits)
if sys.argv[2] == "objects":  # what the listing held before it had columns
    kept = [f for split in listing.splits for f in split.files]
    del listing
else:
    kept = listing
gc.collect()
held = anon_mib() - before
print(json.dumps({
    "files": n,
    "list_seconds": round(seconds, 2),
    "columns_nbytes_per_file": round(nbytes / n, 1),
    "held_anon_mib": round(held, 1),
    "held_bytes_per_file": round(held * 2**20 / n),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
}))
"""


def make_files(root: Path, n: int) -> None:
    """``n`` empty files, ``PER_FOLDER`` per sub-folder, spread over ``CLASSES`` classes."""
    for i in range(n):
        folder = root / "train" / f"class{i % CLASSES}" / f"{i // (CLASSES * PER_FOLDER):03d}"
        if i % (CLASSES * PER_FOLDER) < CLASSES:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"image_{i:07d}.jpg").touch()


def main() -> None:
    """Generates the files, measures the listing in a fresh process, merges the result."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--workdir", default=None, help="where the files are written (deleted)")
    ap.add_argument("--out", default="benchmarks/results/scale.json", type=Path)
    args = ap.parse_args()

    from latentsearch.runs import machine_description

    work = Path(tempfile.mkdtemp(prefix="bench-listing-", dir=args.workdir))
    try:
        t = time.perf_counter()
        make_files(work, args.files)
        generate = time.perf_counter() - t
        load = os.getloadavg()[0]
        measured = {}
        for kept in ("columns", "objects"):  # each in a fresh process
            done = subprocess.run(
                [sys.executable, "-c", MEASURE, str(work), kept],
                check=True,
                capture_output=True,
                text=True,
            )
            measured[kept] = json.loads(done.stdout.strip().splitlines()[-1])
        result: dict[str, Any] = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_description(),
            "files": args.files,
            "generate_seconds": round(generate, 1),
            "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
            "listing_as_columns": measured["columns"],
            "listing_as_folderfile_objects": measured["objects"],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["listing_memory"] = result
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out} (listing_memory)")


if __name__ == "__main__":
    main()
