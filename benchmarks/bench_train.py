"""Training throughput of the study's seed-ae on CIFAR-sized inputs (images/s), beside Keras.

Measures, in one run on the same machine: the study's Keras model (``keras_seed_ae.py``, run
with ``--keras-python``, an interpreter that has TensorFlow); training steps of three PyTorch
variants (a plain port: NCHW, nn.Upsample then Conv2d; channels-last; latentsearch's fused
upsample+conv) in fp32 and bf16; and latentsearch's real fit loop (``training.train``: batching,
the objective, logging, a checkpoint) for one epoch in each precision. All at the study's batch
size 32, on random 32×32×3 inputs (throughput does not depend on pixel values); Keras and the
real loop are measured alternately, ``--repeats`` times each. Writes
benchmarks/results/train_throughput.json.

    python benchmarks/bench_train.py --keras-python /tmp/tfvenv/bin/python [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentsearch.data import DataSplits, ImageData
from latentsearch.models.layers import FASTEST_FORM, UpsampleConv2d
from latentsearch.models.seed_ae import SeedAutoencoder
from latentsearch.precision import autocast
from latentsearch.runs import TrainConfig, machine_description
from latentsearch.training import train


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


def _seed_ae(form: str) -> nn.Module:
    """latentsearch's seed-ae with its upsample-convolutions computed in ``form``."""
    model = SeedAutoencoder(num_classes=10)
    for m in model.modules():
        if isinstance(m, UpsampleConv2d):
            m.form = form
    return model


def measure(
    model: nn.Module, channels_last: bool, batch: int, steps: int, precision: str = "fp32"
) -> float:
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
        with autocast(precision, torch.device("cpu")):
            out = model(x)
            loss = F.mse_loss(out.reconstruction.float(), x) + F.cross_entropy(
                out.logits.float(), y
            )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def _synthetic_cifar(n: int) -> DataSplits:
    rng = np.random.default_rng(0)

    def part(m: int, tag: str) -> ImageData:
        return ImageData(
            pixels=rng.integers(0, 256, (m, 32, 32, 3), dtype=np.uint8),
            labels=rng.integers(0, 10, m).astype(np.int64),
            class_names=[str(i) for i in range(10)],
            ids=[f"{tag}{i}" for i in range(m)],
        )

    return DataSplits(name="random 32x32x3", train=part(n, "a"), test=part(64, "b"))


def real_loop(precision: str, threads: int, n_images: int) -> float:
    """Images/s of one epoch of ``training.train`` (study-hint config, batch 32)."""
    cfg = TrainConfig(
        data="synthetic",
        model="seed-ae",
        label_fraction=1.0,
        epochs=1,
        batch_size=32,
        threads=threads,
        precision=precision,
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = train(cfg, Path(tmp) / "run", progress=False, data=_synthetic_cifar(n_images))
    return float(run.history[-1]["images_per_second"])


def keras(python: str, threads: int, n_images: int) -> dict[str, object]:
    """Runs keras_seed_ae.py under ``python``; its JSON result."""
    script = Path(__file__).with_name("keras_seed_ae.py")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [python, str(script), "--threads", str(threads), "--images", str(n_images)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=3200, help="images per real-loop epoch")
    ap.add_argument(
        "--keras-python",
        default=None,
        help="an interpreter with TensorFlow for the Keras reference (default: this one, if "
        "it can import tensorflow)",
    )
    ap.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keras_python = args.keras_python
    if keras_python is None:
        import importlib.util

        keras_python = sys.executable if importlib.util.find_spec("tensorflow") else None
    t0 = time.perf_counter()
    load_before = os.getloadavg()

    keras_runs: list[dict[str, object]] = []
    loop_runs: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(args.repeats):
        if keras_python:
            keras_runs.append(keras(keras_python, args.threads, args.images))
            print(f"keras run {r + 1}: {keras_runs[-1]['images_per_second']} img/s", flush=True)
        for precision in loop_runs:
            loop_runs[precision].append(real_loop(precision, args.threads, args.images))
            print(f"real loop {precision} run {r + 1}: {loop_runs[precision][-1]:.0f} img/s")
    # Each Keras run times several epochs; the median over all of them is the reference (one
    # fast outlier among otherwise steady epochs must not set the bar).
    keras_epochs = [float(v) for k in keras_runs for v in k["images_per_second_runs"]]
    keras_median = statistics.median(keras_epochs) if keras_epochs else None

    def vs_keras(v: float) -> float | None:
        return round(v / keras_median, 2) if keras_median else None

    variants = {
        "plain port (NCHW, Upsample+Conv2d)": (_plain_seed_ae, False),
        "channels-last, Upsample+Conv2d": (_plain_seed_ae, True),
        "latentsearch, channels-last, form fused": (lambda: _seed_ae("fused"), True),
        "latentsearch, channels-last, form upsample": (lambda: _seed_ae("upsample"), True),
        "latentsearch, channels-last, form auto (what a run uses)": (
            lambda: _seed_ae("auto"),
            True,
        ),
    }
    rows = []
    for precision in ("fp32", "bf16"):
        for name, (build, cl) in variants.items():
            runs = [measure(build(), cl, 32, args.steps, precision) for _ in range(args.repeats)]
            median = statistics.median(runs)
            rows.append(
                {
                    "variant": f"{name}, {precision}",
                    "images_per_second_runs": [round(r, 1) for r in runs],
                    "images_per_second": round(median, 1),
                    "vs_keras": vs_keras(median),
                }
            )
            print(f"{name}, {precision}: {median:.0f} img/s")
    loop = {
        p: {
            "images_per_second_runs": [round(v, 1) for v in runs],
            "images_per_second": round(statistics.median(runs), 1),
            "vs_keras": vs_keras(statistics.median(runs)),
        }
        for p, runs in loop_runs.items()
    }
    result = {
        "what": "seed-ae + hint head, training steps (forward, MSE + CE, backward, Adam), "
        "batch 32, 32x32x3 inputs; 'real_loop' is one epoch of training.train",
        "machine": machine_description(),
        "threads": args.threads,
        "torch": torch.__version__,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "seconds": round(time.perf_counter() - t0, 1),
        "statistic": "median of the runs (Keras: of every timed epoch of every run)",
        "fastest_form_table": {
            f"{d}/{str(t).removeprefix('torch.')}": f for (d, t), f in FASTEST_FORM.items()
        },
        "keras": {
            "runs": keras_runs,
            "images_per_second": keras_median,
            "note": "the study's Keras model, measured in this run"
            if keras_runs
            else "TensorFlow not importable: pass --keras-python",
        },
        "real_loop": loop,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for p, v in loop.items():
        print(f"real loop {p}: {v['images_per_second']:.0f} img/s = {v['vs_keras']}x Keras")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
