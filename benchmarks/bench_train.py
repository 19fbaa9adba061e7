"""Training throughput of the study's seed-ae on CIFAR-sized inputs (images/s).

Compares the model as latentsearch runs it (channels-last memory, fused upsample+conv) with a
plain PyTorch port of the Keras model (NCHW, nn.Upsample then Conv2d), at the study's batch
size 32, on random 32×32×3 inputs (throughput does not depend on pixel values). Writes
benchmarks/results/train_throughput.json.

    python benchmarks/bench_train.py [--threads 2] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from latentsearch.models.seed_ae import SeedAutoencoder
from latentsearch.training import machine_description

KERAS_IMAGES_PER_SECOND = 155  # the study's Keras model on this 2-core machine (issue 2)


def _plain_seed_ae() -> nn.Module:
    """The same network with nn.Upsample + Conv2d, as a straightforward port would write it."""
    model = SeedAutoencoder(num_classes=10)

    def up(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    model.decoder[0] = up(128, 128)
    model.decoder[1] = up(128, 64)
    return model


def measure(model: nn.Module, channels_last: bool, batch: int, steps: int) -> float:
    """Images per second of full training steps (forward, MSE + CE, backward, Adam)."""
    torch.manual_seed(0)
    x = torch.rand(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    warmup = 10
    for i in range(steps + warmup):
        if i == warmup:
            t0 = time.perf_counter()
        out = model(x)
        loss = F.mse_loss(out.reconstruction, x) + F.cross_entropy(out.logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = {
        "plain port (NCHW, Upsample+Conv2d)": (_plain_seed_ae, False),
        "channels-last, Upsample+Conv2d": (_plain_seed_ae, True),
        "latentsearch (channels-last, fused upsample-conv)": (
            lambda: SeedAutoencoder(num_classes=10),
            True,
        ),
    }
    rows = []
    for name, (build, cl) in variants.items():
        runs = [measure(build(), cl, 32, args.steps) for _ in range(args.repeats)]
        best = max(runs)
        rows.append(
            {
                "variant": name,
                "images_per_second_runs": [round(r, 1) for r in runs],
                "images_per_second": round(best, 1),
                "vs_keras": round(best / KERAS_IMAGES_PER_SECOND, 2),
            }
        )
        print(f"{name}: {best:.0f} img/s ({best / KERAS_IMAGES_PER_SECOND:.2f}x Keras)")
    result = {
        "what": "seed-ae + hint head, training steps (forward, MSE + CE, backward, Adam), "
        "batch 32, 32x32x3 inputs",
        "machine": machine_description(),
        "threads": args.threads,
        "torch": torch.__version__,
        "keras_reference_images_per_second": KERAS_IMAGES_PER_SECOND,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
