"""Reproduces Gosthipaty & Chakraborty (2020): both study models under both protocols."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from latentsearch.data import load_data
from latentsearch.errors import ConfigError, LatentsearchError
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
    seed: int = 0,
) -> TrainConfig:
    """The study's training setup, its preset (seed-ae, Adam 1e-3, batch 32, fp32).

    ``seed`` seeds the weights, batch order and augmentations; the data split is the
    protocol's and does not change with it.
    """
    return TrainConfig(
        data=data,
        data_dir=data_dir,
        protocol=protocol,
        **{**PRESETS[STUDY_VARIANTS[variant]].overrides, "epochs": epochs, "seed": seed},
        threads=threads,
    )


def run_folder_name(protocol: str, variant: str, seed: int) -> str:
    """``<protocol>-<variant>`` for seed 0 (the folders of earlier versions), else ``-seed<S>``."""
    return f"{protocol}-{variant}" + (f"-seed{seed}" if seed else "")


_IDENTITY = ("protocol", "model", "objective", "label_fraction", "seed")
"""The config fields that make a run folder the one ``reproduce`` asked for."""


def _train_or_reuse(
    config: TrainConfig, run_dir: Path, data: Any, log: Callable[[str], None]
) -> Run:
    if checkpoints(run_dir):
        run = load_run(run_dir)
        found = {k: getattr(run.config, k) for k in _IDENTITY}
        wanted = {k: getattr(config, k) for k in _IDENTITY}
        if found != wanted:
            raise LatentsearchError(
                f"{run_dir} holds another run ({found}), not the one asked for ({wanted}); "
                "move it away or choose another --out"
            )
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
    seeds: Iterable[int] = (0,),
    variants: Iterable[str] = VARIANTS,
    log: Callable[[str], None] = lambda s: None,
) -> list[dict[str, Any]]:
    """Trains (or reuses) and evaluates the study's models under each protocol and seed.

    Args:
        data: ``cifar10`` or a CIFAR-10 image folder.
        data_dir: Where the CIFAR-10 archive is.
        out: Folder for the runs, one sub-folder ``<protocol>-<variant>`` each.
        protocols: Which protocols to run.
        epochs: Epochs per model (the study: 10).
        threads: torch CPU threads.
        data_label: How to name the data in the rows (default: the source's name).
        seeds: Training seeds; each trains its own model (weights, batch order).
        variants: Which of the study's models (``vanilla``, ``hint``).
        log: Receives progress lines.

    Returns:
        One row per (protocol, variant, seed) with metrics, published numbers and timings.

    Raises:
        ConfigError: On an unknown variant or a repeated seed.
        LatentsearchError: When a run folder holds a run with another identity.
    """
    seeds, variants = list(seeds), list(variants)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ConfigError("variants", f"has unknown models {unknown}; choose from {list(VARIANTS)}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", f"repeat: {seeds}; give each seed once")
    splits = load_data(data, data_dir=data_dir, progress=True)
    rows = []
    for protocol, variant, seed in ((p, v, s) for p in protocols for v in variants for s in seeds):
        config = study_config(
            protocol,
            variant,
            data=data,
            data_dir=data_dir,
            epochs=epochs,
            threads=threads,
            seed=seed,
        )
        run_dir = out / run_folder_name(protocol, variant, seed)
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
                "seed": seed,
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


SPREAD_METRICS = ("nmi", "ri", "ari", "acc", "precision_at_10", "map_at_r")
"""The scores ``seed_spread`` summarises over training seeds."""


def seed_spread(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over training seeds, per protocol and model.

    Args:
        rows: Rows from ``reproduce`` (a row without ``seed`` counts as seed 0).

    Returns:
        One dict per (protocol, model) with at least two seeds: ``seeds``, and
        ``<metric>_mean`` / ``<metric>_sd`` for each of ``SPREAD_METRICS``, plus the
        published NMI and RI where the protocol has them.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["protocol"], row["model"]), []).append(row)
    out = []
    for (protocol, model), group in groups.items():
        if len(group) < 2:
            continue
        summary: dict[str, Any] = {
            "protocol": protocol,
            "model": model,
            "seeds": sorted(r.get("seed", 0) for r in group),
        }
        for key in SPREAD_METRICS:
            values = [float(r[key]) for r in group]
            summary[f"{key}_mean"] = statistics.fmean(values)
            summary[f"{key}_sd"] = statistics.stdev(values)
        summary["published_nmi"] = group[0].get("published_nmi")
        summary["published_ri"] = group[0].get("published_ri")
        out.append(summary)
    return out


def merge_rows(
    old: Iterable[dict[str, Any]], new: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rows of an earlier results file with this invocation's rows replacing their namesakes.

    A row is named by (protocol, model, seed); a row without ``seed`` is seed 0.
    """

    def key(row: dict[str, Any]) -> tuple[str, str, int]:
        return (row["protocol"], row["model"], int(row.get("seed", 0)))

    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in new})

    def order(row: dict[str, Any]) -> tuple[Any, ...]:
        protocol, model, seed = key(row)
        rank = VARIANTS.index(model) if model in VARIANTS else len(VARIANTS)
        return (protocol != "seed", protocol, rank, model, seed)

    return sorted(merged.values(), key=order)
