"""Training-step throughput of resnet-s layouts (width, blocks per stage) on 32×32 inputs.

What ``--width`` and ``--stage-blocks`` cost on this machine before a two-hour run spends it:
full contrastive training steps (forward of two views, NT-Xent, backward, SGD) at the auto
recipe's batch (256 images, so 512 views), bf16 where the CPU has it, random inputs
(throughput does not depend on pixel values). Augmentation and data loading are left out: they
cost the same for every layout. Layouts are measured in turn, ``--repeats`` rounds, and the
median is reported. Writes benchmarks/results/resnet_layouts.json.

    python benchmarks/bench_resnet_layouts.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from latentsearch.models.resnet import SmallResNet
from latentsearch.objectives import nt_xent
from latentsearch.precision import autocast, resolve_precision
from latentsearch.runs import machine_description

LAYOUTS = [
    {"width": 16, "stage_blocks": 1},
    {"width": 16, "stage_blocks": [1, 1, 2, 2]},
    {"width": 16, "stage_blocks": [1, 2, 2, 2]},
    {"width": 16, "stage_blocks": [1, 1, 3, 3]},
    {"width": 24, "stage_blocks": 1},
    {"width": 32, "stage_blocks": 1},
]


def measure(
    layout: dict[str, object],
    batch: int,
    steps: int,
    precision: str,
    *,
    channels_last: bool = False,
    compiled: bool = False,
) -> float:
    """Images per second (each image counted once, as two views) of full training steps.

    ``channels_last`` stores weights and inputs NHWC (what ``training`` does on a CPU);
    ``compiled`` wraps the model in ``torch.compile`` (its compilation is in the warm-up).
    """
    torch.manual_seed(0)
    model: torch.nn.Module = SmallResNet(image_size=32, **layout)  # type: ignore[arg-type]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    views = torch.rand(2 * batch, 3, 32, 32)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        views = views.contiguous(memory_format=torch.channels_last)
    if compiled:
        model = torch.compile(model)  # type: ignore[assignment]
    warmup = 3
    for i in range(steps + warmup):
        if i == warmup:
            t0 = time.perf_counter()
        with autocast(precision, torch.device("cpu")):
            z = model(views).projection
            loss = nt_xent(z[:batch].float(), z[batch:].float(), temperature=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/resnet_layouts.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    precision = resolve_precision("auto", torch.device("cpu"))
    load_before = os.getloadavg()[0]
    runs: list[list[float]] = [[] for _ in LAYOUTS]
    for _ in range(args.repeats):
        for i, layout in enumerate(LAYOUTS):
            runs[i].append(measure(layout, args.batch, args.steps, precision))
    rows = []
    for layout, measured in zip(LAYOUTS, runs, strict=True):
        params = sum(p.numel() for p in SmallResNet(image_size=32, **layout).parameters())  # type: ignore[arg-type]
        rows.append(
            {
                **layout,
                "parameters": params,
                "images_per_s": round(statistics.median(measured), 1),
                "runs": [round(r, 1) for r in measured],
            }
        )
        print(f"{layout}: {rows[-1]['images_per_s']:.0f} img/s ({params:,} parameters)")
    result = {
        "what": "resnet-s training steps (two views, NT-Xent, SGD), 32×32 random inputs",
        "machine": machine_description(),
        "threads": args.threads,
        "precision": precision,
        "batch": args.batch,
        "steps": args.steps,
        "repeats": args.repeats,
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d"),
        "layouts": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
