"""Reproduces Gosthipaty & Chakraborty (2020): both study models under both protocols."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentsearch.data import load_data
from latentsearch.evaluation import PUBLISHED, evaluate_run
from latentsearch.metrics import METRICS
from latentsearch.presets import PRESETS, STUDY_EPOCHS, STUDY_PROTOCOLS, STUDY_VARIANTS
from latentsearch.runs import (
    EVAL_FILE,
    Run,
    TrainConfig,
    checkpoints,
    load_run,
    machine_description,
)
from latentsearch.training import train

VARIANTS = tuple(STUDY_VARIANTS)
"""The study's two models: ``vanilla`` (no labels) and ``hint`` (a hint head on every label)."""


def study_config(
    protocol: str,
    variant: str,
    *,
    data: str,
    data_dir: str | None,
    epochs: int = STUDY_EPOCHS,
    threads: int | None = None,
) -> TrainConfig:
    """The study's training setup, its preset (seed-ae, Adam 1e-3, batch 32, fp32)."""
    return TrainConfig(
        data=data,
        data_dir=data_dir,
        protocol=protocol,
        **{**PRESETS[STUDY_VARIANTS[variant]].overrides, "epochs": epochs},
        threads=threads,
    )


def _train_or_reuse(
    config: TrainConfig, run_dir: Path, data: Any, log: Callable[[str], None]
) -> Run:
    if checkpoints(run_dir):
        run = load_run(run_dir)
        if run.epoch >= config.epochs:
            log(f"{run_dir}: finished run found, reusing it")
            return run
        log(f"{run_dir}: resuming at epoch {run.epoch + 1}")
        return train(config, run_dir, resume=True, data=data, log=_epoch_logger(log))
    log(
        f"{run_dir}: training {config.model} ({config.protocol}, "
        f"label fraction {config.label_fraction})"
    )
    return train(config, run_dir, data=data, log=_epoch_logger(log))


def _epoch_logger(log: Callable[[str], None]) -> Callable[[dict[str, Any]], None]:
    def f(record: dict[str, Any]) -> None:
        val = record.get("val", {}).get("loss")
        log(
            f"  epoch {record['epoch']}: loss {record['train']['loss']:.4f}"
            + (f", val {val:.4f}" if val is not None else "")
            + f", {record['images_per_second']:.0f} img/s"
        )

    return f


def reproduce(
    *,
    data: str = "cifar10",
    data_dir: str | None = None,
    out: Path,
    protocols: list[str] | tuple[str, ...] = STUDY_PROTOCOLS,
    epochs: int = STUDY_EPOCHS,
    threads: int | None = None,
    data_label: str | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> list[dict[str, Any]]:
    """Trains (or reuses) and evaluates the study's two models under each protocol.

    Args:
        data: ``cifar10`` or a CIFAR-10 image folder.
        data_dir: Where the CIFAR-10 archive is.
        out: Folder for the runs, one sub-folder ``<protocol>-<variant>`` each.
        protocols: Which protocols to run.
        epochs: Epochs per model (the study: 10).
        threads: torch CPU threads.
        data_label: How to name the data in the rows (default: the source's name).
        log: Receives progress lines.

    Returns:
        One row per (protocol, variant) with metrics, published numbers and timings.
    """
    splits = load_data(data, data_dir=data_dir, progress=True)
    rows = []
    for protocol in protocols:
        for variant in VARIANTS:
            config = study_config(
                protocol, variant, data=data, data_dir=data_dir, epochs=epochs, threads=threads
            )
            run_dir = out / f"{protocol}-{variant}"
            run = _train_or_reuse(config, run_dir, splits, log)
            eval_path = run_dir / EVAL_FILE
            result = json.loads(eval_path.read_text()) if eval_path.exists() else None
            if result is None or result.get("epochs") != run.epoch:
                log(f"{run_dir}: evaluating")
                result = evaluate_run(run, data=splits)
                eval_path.write_text(json.dumps(result, indent=2) + "\n")
            seconds = sum(h["seconds"] for h in run.history)
            images = sum(h["seconds"] * h["images_per_second"] for h in run.history)
            published = PUBLISHED[variant] if protocol == "seed" else {}
            rows.append(
                {
                    "protocol": protocol,
                    "model": variant,
                    **{k: result[k] for k in METRICS},
                    "published_nmi": published.get("nmi"),
                    "published_ri": published.get("ri"),
                    "epochs": run.epoch,
                    "train_seconds": round(seconds, 1),
                    "images_per_second": round(images / max(seconds, 1e-9), 1),
                    "data": data_label or splits.name,
                    "machine": machine_description(),
                }
            )
    return rows
