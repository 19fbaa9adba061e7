"""Training throughput with 1 and 2 processes (torchrun, gloo on the CPU), images/s.

Three ways to spend the same cores on latentsearch's real fit loop (``training.train``):

- ``1 process × T threads`` (intra-op parallelism only),
- ``1 process × 1 thread`` (the per-process baseline),
- ``N processes × 1 thread`` under ``torchrun --standalone`` (DistributedDataParallel, gloo),

all at the same GLOBAL batch size, on the first ``--sizes`` images of the data (digits or an
image folder such as the CIFAR-10 JPEG folder). Throughput is the last epoch's
``images_per_second`` from the run's ``metrics.jsonl`` (the first epoch warms up), and the
1-minute load average is recorded before and after each measurement, since other work on the
cores changes everything. Writes the ``"train"`` section of benchmarks/results/scale.json,
keeping the file's other sections.

    python benchmarks/bench_scale_train.py --data /tmp/data/cifar10-jpeg/train --sizes 10000

The driver re-launches this file as workers (``--worker``), so each measurement starts a
fresh process with its own thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "scale.json"


def _load(spec: str, n: int, image_size: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from latentsearch.data import load_data

    data = load_data(spec, image_size=image_size)
    train = data.train
    if n > len(train):
        raise SystemExit(f"--sizes {n}: the data has only {len(train)} training images")
    rng = np.random.default_rng(0)
    keep = np.sort(rng.permutation(len(train))[:n])
    return train.pixels[keep], train.labels[keep], list(train.class_names)


def worker(args: argparse.Namespace) -> None:
    """One measurement: train on the saved images; rank 0 prints the metrics as JSON."""
    import torch

    from latentsearch import distributed
    from latentsearch.data import DataSplits, ImageData
    from latentsearch.runs import TrainConfig
    from latentsearch.training import train

    saved = np.load(args.arrays)
    classes = [str(c) for c in saved["classes"]]
    pixels, labels = saved["pixels"], saved["labels"]
    images = ImageData(
        pixels=pixels, labels=labels, class_names=classes, ids=[str(i) for i in range(len(labels))]
    )
    data = DataSplits(train=images, test=images.subset(np.arange(min(64, len(labels)))), name="b")
    config = TrainConfig(
        data="bench",
        model=args.model,
        objective=args.objective,
        epochs=args.epochs,
        batch_size=args.batch_size,
        threads=args.threads,
        precision=args.precision,
        device="cpu",
    )
    try:
        run = train(config, args.out, progress=False, data=data)
        if distributed.context().is_main:
            last = run.history[-1]
            print(
                "RESULT "
                + json.dumps(
                    {
                        "images_per_second": last["images_per_second"],
                        "epoch_seconds": last["seconds"],
                        "threads": last["threads"],
                        "world_size": run.config.world_size,
                        "torch_threads": torch.get_num_threads(),
                    }
                ),
                flush=True,
            )
    finally:
        distributed.teardown()


def _measure(
    args: argparse.Namespace, arrays: Path, work: Path, *, processes: int, threads: int
) -> dict[str, Any]:
    out = work / f"run-{processes}x{threads}-{time.monotonic_ns()}"
    me = [
        str(Path(__file__).resolve()),
        "--worker",
        "--arrays",
        str(arrays),
        "--out",
        str(out),
        "--threads",
        str(threads),
        "--model",
        args.model,
        "--objective",
        args.objective,
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--precision",
        args.precision,
    ]
    if processes == 1:
        cmd = [sys.executable, *me]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            *me,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    return {
        "mode": f"{processes} process{'es' if processes > 1 else ''} × {threads} thread"
        + ("s" if threads > 1 else ""),
        "processes": processes,
        "threads_per_process": threads,
        **result,
        "wall_seconds": round(wall, 2),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def _merge(section: dict[str, Any], path: Path) -> None:
    """Writes ``section`` as the file's ``"train"`` key, keeping the others (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    current: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    current["train"] = section
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(current, indent=2) + "\n")
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--arrays", help=argparse.SUPPRESS)
    ap.add_argument("--data", default="/tmp/data/cifar10-jpeg/train", help="digits or a folder")
    ap.add_argument("--sizes", type=int, default=10_000, help="training images used")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--model", default="seed-ae")
    ap.add_argument("--objective", default="reconstruction")
    ap.add_argument("--batch-size", type=int, default=64, help="GLOBAL batch, all modes")
    ap.add_argument("--epochs", type=int, default=2, help="the last one is measured")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--processes", type=int, default=2, help="N of the torchrun mode")
    ap.add_argument("--threads", type=int, default=None, help="worker: threads per process")
    ap.add_argument("--out", default=str(RESULTS), help="results file (worker: run folder)")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    from latentsearch.runs import machine_description

    n = args.processes
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        pixels, labels, classes = _load(args.data, args.sizes, args.image_size)
        arrays = work / "images.npz"
        np.savez(arrays, pixels=pixels, labels=labels, classes=np.array(classes))
        rows = []
        for processes, threads in ((1, n), (1, 1), (n, 1)):
            row = _measure(args, arrays, work, processes=processes, threads=threads)
            print(json.dumps(row), flush=True)
            rows.append(row)
    base = rows[1]["images_per_second"]
    for row in rows:
        row["vs_1_process_1_thread"] = round(row["images_per_second"] / base, 3)
    section = {
        "what": "training images/s of training.train, last of --epochs epochs, same global batch",
        "command": "python benchmarks/bench_scale_train.py " + " ".join(sys.argv[1:]),
        "data": args.data,
        "images": args.sizes,
        "image_shape": list(pixels.shape[1:]),
        "model": args.model,
        "objective": args.objective,
        "batch_size_global": args.batch_size,
        "epochs": args.epochs,
        "precision": args.precision,
        "backend": "gloo (torchrun --standalone)",
        "machine": machine_description(),
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
    }
    _merge(section, Path(args.out))
    print(f"wrote the train section of {args.out}")


if __name__ == "__main__":
    main()
