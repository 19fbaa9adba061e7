"""Indexing at scale: wall time, images/s and peak memory of ``latentsearch index``.

Two measurements, each ``latentsearch index`` run as a fresh process (as a user types it):

1. **cifar10**: the CIFAR-10 JPEG folder ``--cifar`` (default: the 10,000 test images), once
   per ``--workers`` value, with one rank and, when ``--ranks`` is above 1, under ``torchrun``
   with that many ranks (issue 10 target: >= 4,000 img/s end to end on 2 cores, seed-ae).
2. **scale**: for each of ``--sizes`` a folder of that many small JPEGs is written to
   ``--workdir`` (real CIFAR-10 files copied under new names, 1,000 per sub-folder), indexed,
   and deleted again. Recorded: wall time, images/s, the peak resident memory of the
   indexing process and of its largest decoding worker (``ru_maxrss``), and the growth of the
   peak per added image, to compare with what an index must hold per image (its float32
   vector and its metadata). The saved index is then loaded in a fresh process, as ``search``
   and ``serve`` load it: seconds, resident memory, and the peak's growth per image.

Without ``--run`` an untrained seed-ae run (32x32 RGB) is written to the work folder:
throughput and memory do not depend on the weights. Results are merged into
``benchmarks/results/scale.json`` under ``index_build`` (other sections are left as they are).

    python benchmarks/bench_scale_index_build.py                      # full size (lead)
    python benchmarks/bench_scale_index_build.py --sizes 2000 --cifar-images 2000  # quick check
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

TARGET_IMAGES_PER_SECOND = 4000  # issue 10, CIFAR-10 10k folder, seed-ae, 2 cores
FILES_PER_FOLDER = 1000

# Runs the command in this process; reports its own peak memory and the largest peak of its
# descendants (the decoding workers are forked by a forkserver, so they are not children
# whose usage RUSAGE_CHILDREN sees: /proc is sampled instead, twice a second).
DRIVER = r"""
import json, os, resource, sys, threading, time
from latentsearch.cli import main

peak = {"kib": 0}

def descendants(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out

def watch():
    while True:
        for p in descendants(os.getpid()):
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak["kib"] = max(peak["kib"], int(line.split()[1]))
            except (OSError, ValueError):
                pass
        time.sleep(0.5)

anon = {"kib": 0}

def watch_self():  # anonymous memory only: file pages (a memory-mapped file) can be dropped
    while True:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        anon["kib"] = max(anon["kib"], int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.05)

if os.path.isdir("/proc"):
    threading.Thread(target=watch, daemon=True).start()
    threading.Thread(target=watch_self, daemon=True).start()
code = main(sys.argv[2:])
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "maxrss_kib": me, "descendants_maxrss_kib": peak["kib"],
               "anon_rss_kib": anon["kib"]}, f)
sys.exit(code)
"""


# Loads a saved index as `search` and `serve` do, and reports the time and memory it took.
LOAD_DRIVER = r"""
import json, os, resource, sys, time
from latentsearch.index import ImageIndex
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
index = ImageIndex.load(sys.argv[2])
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open("/proc/self/statm") as f:
    rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
assert index.position(index.items.id(len(index) // 2)) == len(index) // 2
with open(sys.argv[1], "w") as f:
    json.dump({"seconds": seconds, "before_kib": before, "peak_kib": peak, "rss": rss,
               "items": len(index), "item_table_bytes": index.items.nbytes}, f)
"""


def _load(index: Path, report: Path) -> dict[str, Any]:
    """Loads the index in a fresh process: seconds, resident memory after, peak growth."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD_DRIVER, str(report), str(index)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"loading {index} failed:\n{done.stderr[-3000:]}")
    r = json.loads(report.read_text())
    return {
        "load_s": round(r["seconds"], 2),
        "load_rss_mib": round(r["rss"] / 2**20, 1),
        "load_peak_rss_growth_bytes_per_image": round(
            (r["peak_kib"] - r["before_kib"]) * 1024 / r["items"]
        ),
        "item_table_bytes_per_image": round(r["item_table_bytes"] / r["items"], 1),
    }


def _untrained_run(dest: Path) -> Path:
    """A seed-ae run folder with initial weights (32x32 RGB), as training would write it."""
    from latentsearch.models import create_model
    from latentsearch.runs import TrainConfig, save_checkpoint

    config = TrainConfig(data="bench", model="seed-ae", image_size=32, epochs=1)
    model = create_model("seed-ae", in_channels=3, image_size=32, num_classes=0)
    (dest / "checkpoints").mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")
    save_checkpoint(dest, config=config, model=model, class_names=[], epoch=0, training_state={})
    return dest


def _sources(cifar: Path) -> list[Path]:
    files = sorted(p for p in cifar.rglob("*") if p.is_file())
    if not files:
        raise SystemExit(f"no files under {cifar}")
    return files


def _write_part(args: tuple[str, int, int, list[str]]) -> int:
    root, start, stop, sources = args
    for i in range(start, stop):
        folder = Path(root) / f"{i // FILES_PER_FOLDER:04d}"
        if i % FILES_PER_FOLDER == 0 or i == start:
            folder.mkdir(parents=True, exist_ok=True)
        src = sources[i % len(sources)]
        with open(src, "rb") as f:
            data = f.read()
        with open(folder / f"{i:07d}.jpg", "wb") as f:
            f.write(data)
    return stop - start


def _generate(root: Path, n: int, sources: list[Path], jobs: int) -> float:
    """Writes ``n`` JPEG files under ``root``; returns the seconds it took."""
    t0 = time.perf_counter()
    step = 20_000
    names = [str(s) for s in sources]
    parts = [(str(root), a, min(a + step, n), names) for a in range(0, n, step)]
    with ProcessPoolExecutor(jobs) as pool:
        written = sum(pool.map(_write_part, parts))
    if written != n:
        raise SystemExit(f"wrote {written} files, wanted {n}")
    return time.perf_counter() - t0


def _index(
    run: Path,
    images: Path,
    out: Path,
    workers: int | None,
    ranks: int,
    report: Path,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Runs ``latentsearch index`` once; returns its JSON summary, wall time and memory."""
    argv = ["index", str(run), str(images), "--out", str(out), "--json"]
    argv += ["--precision", precision]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if ranks > 1:
        torchrun = Path(sys.executable).with_name("torchrun")
        cmd = [str(torchrun), "--standalone", f"--nproc_per_node={ranks}", "-m", "latentsearch"]
        cmd += argv
    else:
        cmd = [sys.executable, "-c", DRIVER, str(report), *argv]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    row: dict[str, Any] = {
        "workers": workers,
        "ranks": ranks,
        "images": summary["count"],
        "skipped": len(summary["skipped"]),
        "wall_s": round(wall, 3),
        "images_per_second": round(summary["count"] / wall, 1),
        "command_seconds": round(summary["seconds"], 3),
        "decode_wait_s": round(summary["decode_seconds"], 3),
        "embed_and_index_s": round(summary["index_seconds"], 3),
        "save_s": round(summary["save_seconds"], 3),
        "index_type": summary["index_type"],
        "precision": summary["precision"],
        "streamed": summary.get("streamed"),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if ranks == 1:
        mem = json.loads(report.read_text())
        row["peak_rss_mib"] = round(mem["maxrss_kib"] / 1024, 1)
        # Sampled every 50 ms, so a peak shorter than that can be missed.
        anon = mem["anon_rss_kib"]
        row["peak_anon_rss_mib"] = round(anon / 1024, 1) if anon else None
        kib = mem["descendants_maxrss_kib"]
        row["peak_rss_largest_worker_mib"] = round(kib / 1024, 1) if kib else None
    return row


def _merge_results(path: Path, name: str, section: dict[str, Any]) -> None:
    """Sets section ``name`` in the JSON file at ``path``, keeping its other sections."""
    data: dict[str, Any] = {}
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
    data[name] = section
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    """Runs the measurements and merges them into the results file."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=None, help="run folder (default: an untrained seed-ae)")
    ap.add_argument("--cifar", default="/tmp/data/cifar10-jpeg/test", type=Path)
    ap.add_argument(
        "--cifar-images",
        type=int,
        default=None,
        help="index only this many CIFAR-10 files (linked into the work folder; default: all)",
    )
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[-1],
        help="--workers values for the CIFAR-10 run (-1: the command's default)",
    )
    ap.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "bf16", "fp16", "auto"],
        help="`index --precision` values for the CIFAR-10 runs (the scale runs use the first)",
    )
    ap.add_argument("--ranks", type=int, default=2, help="also run CIFAR-10 under torchrun")
    ap.add_argument(
        "--section",
        default="index_build",
        help="the results file's section to write (the others are kept)",
    )
    ap.add_argument("--workdir", default=None, help="where images are generated (deleted)")
    ap.add_argument("--out", default="benchmarks/results/scale.json", type=Path)
    args = ap.parse_args()

    from latentsearch.runs import machine_description

    work = Path(tempfile.mkdtemp(prefix="bench-index-build-", dir=args.workdir))
    try:
        run = Path(args.run) if args.run else _untrained_run(work / "run")
        cifar = args.cifar
        if args.cifar_images is not None:
            cifar = work / "cifar-subset"
            for src in _sources(args.cifar)[: args.cifar_images]:
                dest = cifar / src.relative_to(args.cifar)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(src, dest)
        cifar_rows = []
        for precision in args.precisions:
            for w in args.workers:
                workers = None if w < 0 else w
                row = _index(run, cifar, work / "c.index", workers, 1, work / "r.json", precision)
                cifar_rows.append(row)
                rate = row["images_per_second"]
                print(f"cifar10 {precision} workers={w}: {rate:.0f} img/s", flush=True)
            if args.ranks > 1:
                row = _index(
                    run, cifar, work / "c.index", None, args.ranks, work / "r.json", precision
                )
                cifar_rows.append(row)
                rate = row["images_per_second"]
                print(f"cifar10 {precision} ranks={args.ranks}: {rate:.0f} img/s", flush=True)
        shutil.rmtree(work / "c.index", ignore_errors=True)

        scale_rows = []
        sources = _sources(args.cifar)
        for n in args.sizes:
            images = work / f"images-{n}"
            gen_s = _generate(images, n, sources, jobs=os.cpu_count() or 1)
            try:
                row = _index(
                    run, images, work / "s.index", None, 1, work / "r.json", args.precisions[0]
                )
                row["generate_s"] = round(gen_s, 1)
                index_bytes = sum(
                    p.stat().st_size for p in (work / "s.index").iterdir() if p.is_file()
                )
                row["index_folder_mib"] = round(index_bytes / 2**20, 1)
                row.update(_load(work / "s.index", work / "l.json"))
            finally:
                shutil.rmtree(images, ignore_errors=True)
                shutil.rmtree(work / "s.index", ignore_errors=True)
            scale_rows.append(row)
            print(
                f"{n} images: {row['wall_s']:.1f} s, {row['images_per_second']:.0f} img/s, "
                f"peak RSS {row['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
        for a, b in itertools.pairwise(scale_rows):
            grown = (b["peak_rss_mib"] - a["peak_rss_mib"]) * 2**20
            b["peak_rss_growth_bytes_per_added_image"] = round(grown / (b["images"] - a["images"]))
            if a.get("peak_anon_rss_mib") and b.get("peak_anon_rss_mib"):
                grown = (b["peak_anon_rss_mib"] - a["peak_anon_rss_mib"]) * 2**20
                b["peak_anon_rss_growth_bytes_per_added_image"] = round(
                    grown / (b["images"] - a["images"])
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    section = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "cores": os.cpu_count(),
        "run": "untrained seed-ae (32x32 RGB)" if args.run is None else str(args.run),
        "target_images_per_second_cifar10": TARGET_IMAGES_PER_SECOND,
        "cifar10": {"folder": str(args.cifar), "runs": cifar_rows},
        "scale": scale_rows,
        "note": "wall_s: the whole command as a fresh process (imports, listing, decoding, "
        "embedding, FAISS, saving). peak_rss_mib: the indexing process (ru_maxrss, which "
        "counts the pages of memory-mapped files it touched); peak_anon_rss_mib: its anonymous "
        "memory only (RssAnon sampled every 50 ms), what the kernel cannot drop; workers "
        "decode a chunk at a time and stay flat. An index must hold 128 float32 (512 bytes) "
        "plus an id, path, label and SHA-256 per image.",
    }
    _merge_results(args.out, args.section, section)
    print(f"merged {args.section} into {args.out}")


if __name__ == "__main__":
    main()
