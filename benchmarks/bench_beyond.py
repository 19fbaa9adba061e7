"""Scores trained runs (and raw pixels) for the "beyond the study" table.

Each ``--run SETTING=RUN_FOLDER`` is evaluated under its own protocol (``heldout``: KMeans on the
official test set, test images queried against the training images); ``--pixels`` adds a raw
pixel row for every data source seen. Rows are merged into the output file by (data, setting),
so runs can be scored as they finish. Writes benchmarks/results/beyond.json by default.

    python benchmarks/bench_beyond.py --data-label "CIFAR-10 (JPEG q75 copy)" --pixels \\
        --run "no labels=runs/beyond/cifar-none" --run "hint, 10% of labels=runs/beyond/cifar-10pct"
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from latentsearch.clusters import head_path, load_cluster_head
from latentsearch.data import load_data
from latentsearch.evaluation import evaluate_run, score_pixels
from latentsearch.protocols import make_splits
from latentsearch.runs import TrainConfig, checkpoints, load_run, machine_description

# A run's pixels: (data spec, image size, data folder).
DataSource = tuple[str, int, str | None]

KEYS = ["nmi", "ri", "ari", "ami", "acc", "precision_at_1", "precision_at_10", "map_at_r"]


def _train_seconds(run_dir: Path) -> float:
    """Wall time of the training: every epoch with its validation and checkpoint.

    Runs that recorded only the optimisation time per epoch (``seconds``, before
    ``wall_seconds`` existed) are timed from their folder instead: the newest checkpoint's
    modification time minus the config's, written when training started.
    """
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    if all("wall_seconds" in r for r in records):
        return float(sum(r["wall_seconds"] for r in records))
    ckpts = checkpoints(run_dir)
    span = ckpts[-1].stat().st_mtime - (run_dir / "config.json").stat().st_mtime if ckpts else 0.0
    return float(max(span, sum(r["seconds"] for r in records)))


def _init_train_seconds(config: Any) -> float:
    """Training time of the run this one started from (``--init RUN``), counted in its budget.

    A continuation's own epochs are only part of what its weights cost: the run it was
    initialised from (and that run's own ``init``, and so on) is added. A checkpoint or weights
    file from elsewhere has no recorded time: 0.
    """
    if not config.init:
        return 0.0
    base = Path(config.init)
    if not (base / "metrics.jsonl").is_file():
        return 0.0
    base_config = TrainConfig.from_dict(json.loads((base / "config.json").read_text()))
    return _train_seconds(base) + _init_train_seconds(base_config)


def _model_name(config: Any) -> str:
    extra = ", ".join(f"{k} {v}" for k, v in sorted(config.model_kwargs.items()))
    return f"{config.model} ({extra})" if extra else config.model


def score_run(
    setting: str, run_dir: Path, data_label: str | None
) -> tuple[dict[str, Any], DataSource]:
    """One table row for a trained run, and where its pixels come from."""
    run = load_run(run_dir)
    cfg = run.config
    data = load_data(cfg.data, image_size=run.model.image_size, data_dir=cfg.data_dir)
    result = evaluate_run(run, data=data)
    head_file = head_path(run_dir)
    head = load_cluster_head(head_file, run_model=run.model) if head_file.exists() else None
    head_seconds = head.seconds if head else 0.0
    init_seconds = _init_train_seconds(cfg)
    finetuned: dict[str, Any] = {}
    if head is not None and head.encoder is not None:
        # SCAN fine-tuned a copy of the encoder: how that copy retrieves, beside the run's own.
        tuned = evaluate_run(dataclasses.replace(run, model=head.encoder), data=data)
        finetuned = {
            "cluster_finetune_epochs": head.config.finetune_epochs,
            **{f"finetuned_encoder_{k}": tuned[k] for k in KEYS},
        }
    row: dict[str, Any] = {
        "data": data_label or result["data"],
        "setting": setting,
        "label_fraction": cfg.label_fraction,
        "model": _model_name(cfg),
        "objective": cfg.objective,
        **{k: result[k] for k in KEYS},
        **{k: v for k, v in result.items() if k.startswith("head_")},
        "epochs": run.epoch,
        "train_seconds": round(_train_seconds(run_dir) + init_seconds + head_seconds, 1),
        "cluster_head_seconds": round(head_seconds, 1),
        **({"init": cfg.init, "init_train_seconds": round(init_seconds, 1)} if cfg.init else {}),
        **finetuned,
        "machine": machine_description(),
        "threads": run.history[-1].get("threads", cfg.threads),
        "precision": run.history[-1].get("precision", "fp32"),
        "load_average_during_training": [h.get("load_average") for h in run.history],
        "run": str(run_dir),
        "n_cluster": result["n_cluster"],
        "n_query": result["n_query"],
        "n_database": result["n_database"],
    }
    return row, (cfg.data, run.model.image_size, cfg.data_dir)


def pixel_row(source: DataSource, data_label: str | None) -> dict[str, Any]:
    """The raw-pixel reference row for a data source at the runs' image size (heldout)."""
    spec, image_size, data_dir = source
    data = load_data(spec, image_size=image_size, data_dir=data_dir)
    splits = make_splits(data, "heldout")
    scores = score_pixels(splits)
    return {
        "data": data_label or data.name,
        "setting": "raw pixels",
        "label_fraction": 0.0,
        "model": "none (pixels scaled to [0, 1])",
        "objective": "none",
        **{k: scores[k] for k in KEYS},
        "epochs": 0,
        "train_seconds": 0.0,
        "machine": machine_description(),
        "n_cluster": len(splits.cluster),
        "n_query": len(splits.query),
        "n_database": len(splits.database),
    }


# Issue 9's targets: (data label prefix, setting prefix) -> (NMI, precision@10). NMI counts
# KMeans on the embeddings or the cluster head, whichever is higher.
TARGETS = {
    ("CIFAR-10", "no labels"): (0.35, 0.55),
    ("CIFAR-10", "hint, 10% of labels"): (0.50, 0.55),
    ("CIFAR-10", "10% of labels"): (0.50, 0.55),
    ("CIFAR-10", "hint, all labels"): (0.70, 0.80),
    ("CIFAR-10", "all labels"): (0.70, 0.80),
    ("Fashion-MNIST", "no labels"): (0.684, 0.805),  # N2D's NMI; raw pixels' P@10
}


def target_for(row: dict[str, Any]) -> tuple[float, float] | None:
    """The issue's target for a row, or None (raw pixels, settings without one)."""
    for (data, setting), target in TARGETS.items():
        if row["data"].startswith(data) and row["setting"].startswith(setting):
            return target
    return None


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The README table of the rows: metrics, target (CIFAR-10) and training time."""
    lines = [
        "| data | setting | model | NMI | head NMI | ARI | acc | P@10 | mAP@R "
        "| target NMI / P@10 | epochs | train time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(
        rows,
        key=lambda r: (r["data"], r["setting"] != "raw pixels", r["label_fraction"], r["epochs"]),
    )
    for r in order:
        target = target_for(r)
        target_txt = f"{target[0]:.3g} / {target[1]:.3g}" if target else ""
        minutes = f"{r['train_seconds'] / 60:.0f} min" if r["train_seconds"] else ""
        head_nmi = f"{r['head_nmi']:.3f}" if "head_nmi" in r else ""
        lines.append(
            f"| {r['data']} | {r['setting']} | {r['model']} | {r['nmi']:.3f} "
            f"| {head_nmi} | {r['ari']:.3f} "
            f"| {r['acc']:.3f} | {r['precision_at_10']:.3f} | {r['map_at_r']:.3f} "
            f"| {target_txt} | {r['epochs'] or ''} | {minutes} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Scores the given runs and merges their rows into the JSON file."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", default=[], metavar="SETTING=RUN_FOLDER")
    ap.add_argument("--pixels", action="store_true", help="add a raw-pixel row per data source")
    ap.add_argument("--data-label", default=None, help="how to name the data in the rows")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/beyond.json")
    ap.add_argument("--table", action="store_true", help="only print the Markdown table")
    args = ap.parse_args()
    if args.table:
        print(markdown_table(json.loads(Path(args.out).read_text())["rows"]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    out = Path(args.out)
    rows: list[dict[str, Any]] = json.loads(out.read_text())["rows"] if out.exists() else []
    new: list[dict[str, Any]] = []
    specs: list[DataSource] = []
    for item in args.run:
        setting, sep, folder = item.partition("=")
        if not sep:
            ap.error(f"--run wants SETTING=RUN_FOLDER, got {item!r}")
        t0 = time.perf_counter()
        row, spec = score_run(setting, Path(folder), args.data_label)
        print(
            f"{row['data']} / {setting}: NMI {row['nmi']:.3f}, P@10 "
            f"{row['precision_at_10']:.3f} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        new.append(row)
        if spec not in specs:
            specs.append(spec)
    if args.pixels:
        for spec in specs:
            row = pixel_row(spec, args.data_label)
            print(f"{row['data']} / raw pixels: NMI {row['nmi']:.3f}", flush=True)
            new.append(row)
    replaced = {(r["data"], r["setting"]) for r in new}
    rows = [r for r in rows if (r["data"], r["setting"]) not in replaced] + new
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print(f"wrote {out} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
