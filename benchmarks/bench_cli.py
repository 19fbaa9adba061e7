"""Command-line start-up: wall time of ``latentsearch --help`` and of a one-image ``search``.

Each command runs as a fresh process (as a user types it), ``--repeats`` times after one
warm-up (so the files are in the page cache); the median and the slowest are recorded with
the load average. The search runs over an index of ``--images`` (default: the 10,000 CIFAR-10
test JPEGs) built once with ``--run``. Writes benchmarks/results/cli.json.

    python benchmarks/bench_cli.py --run runs/beyond/cifar-sup-w32 \\
        --images /tmp/data/cifar10-jpeg/test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from latentsearch.runs import machine_description

TARGETS = {"help": 0.5, "search": 1.5}  # issue 13: seconds of wall time


def _cli() -> str:
    exe = Path(sys.executable).with_name("latentsearch")
    return str(exe) if exe.exists() else "latentsearch"


def _time(argv: list[str], repeats: int) -> dict[str, Any]:
    subprocess.run(argv, check=True, capture_output=True)  # warm-up: page cache, .pyc files
    walls = []
    loads = []
    for _ in range(repeats):
        loads.append(os.getloadavg()[0])
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)
    return {
        "median_s": round(statistics.median(walls), 3),
        "max_s": round(max(walls), 3),
        "runs": len(walls),
        "load_average_1min": [round(x, 2) for x in loads],
    }


def main() -> None:
    """Times the commands and writes the JSON file."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="run folder to build the index with")
    ap.add_argument("--images", default="/tmp/data/cifar10-jpeg/test")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results/cli.json")
    args = ap.parse_args()

    cli = _cli()
    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        index = work / "index"
        t0 = time.perf_counter()
        subprocess.run(
            [cli, "index", args.run, args.images, "--out", str(index), "--json"],
            check=True,
            capture_output=True,
        )
        build_s = time.perf_counter() - t0
        count = json.loads((index / "manifest.json").read_text())["count"]
        query = next(p for p in sorted(Path(args.images).rglob("*")) if p.is_file())
        rows = {
            "help": {"command": "latentsearch --help", **_time([cli, "--help"], args.repeats)},
            "search": {
                "command": f"latentsearch search INDEX {query.name} -k 10",
                "index_items": count,
                **_time([cli, "search", str(index), str(query), "-k", "10"], args.repeats),
            },
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, row in rows.items():
        row["target_s"] = TARGETS[name]
        row["met"] = row["median_s"] <= TARGETS[name]
    result = {
        "machine": machine_description(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": args.run,
        "images": args.images,
        "index_build_seconds": round(build_s, 1),
        "commands": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, row in rows.items():
        print(
            f"{name}: median {row['median_s']:.3f} s, max {row['max_s']:.3f} s "
            f"(target {row['target_s']} s: {'met' if row['met'] else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
