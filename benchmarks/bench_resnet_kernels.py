"""Training-step throughput of the auto recipe's resnet-s under each kernel choice on a CPU.

The same contrastive steps as bench_resnet_layouts.py (two views, NT-Xent, SGD, batch 256,
32×32 random inputs) with the default layout, in fp32 and bf16 (where the CPU has native
bf16), NCHW or channels-last, eager or ``torch.compile``. Variants are measured in turn,
``--repeats`` rounds, and the median is reported with the load average before and after.
``training`` uses channels-last on a CPU and the precision ``auto`` resolves to; this file says
whether that is the fastest choice here. Writes benchmarks/results/resnet_kernels.json.

    python benchmarks/bench_resnet_kernels.py [--threads 2] [--repeats 3] [--no-compile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from bench_resnet_layouts import LAYOUTS, measure

from latentsearch.precision import cpu_has_native_bf16, resolve_precision
from latentsearch.runs import machine_description


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    p.add_argument("--out", default="benchmarks/results/resnet_kernels.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    precisions = ["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"]
    variants = [
        {"precision": pr, "channels_last": cl, "compiled": co}
        for pr in precisions
        for cl in (False, True)
        for co in ((False,) if args.no_compile else (False, True))
    ]
    t0 = time.perf_counter()
    load_before = [round(v, 2) for v in os.getloadavg()]
    runs: list[list[float]] = [[] for _ in variants]
    for _ in range(args.repeats):
        for i, v in enumerate(variants):
            runs[i].append(
                measure(
                    LAYOUTS[0],
                    args.batch,
                    args.steps,
                    str(v["precision"]),
                    channels_last=bool(v["channels_last"]),
                    compiled=bool(v["compiled"]),
                )
            )
            print(f"{v}: {runs[i][-1]:.0f} img/s", flush=True)
    rows = [
        {**v, "images_per_s": round(statistics.median(r), 1), "runs": [round(x, 1) for x in r]}
        for v, r in zip(variants, runs, strict=True)
    ]
    training_uses = {
        "precision": resolve_precision("auto", torch.device("cpu")),
        "channels_last": True,
        "compiled": False,
    }
    result = {
        "what": "resnet-s (default layout) training steps: two views, NT-Xent, SGD, 32×32 inputs",
        "machine": machine_description(),
        "threads": args.threads,
        "batch": args.batch,
        "steps": args.steps,
        "repeats": args.repeats,
        "statistic": "median of the rounds",
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "seconds": round(time.perf_counter() - t0, 1),
        "date": time.strftime("%Y-%m-%d"),
        "training_uses": training_uses,
        "fastest": max(rows, key=lambda r: float(r["images_per_s"])),
        "variants": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"fastest: {result['fastest']}; training uses {training_uses}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
