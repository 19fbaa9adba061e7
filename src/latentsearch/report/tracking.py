"""Experiment tracking: send a run's config, per-epoch metrics and report pictures elsewhere.

Training talks to a :class:`Tracker`; :func:`make_tracker` gives a :class:`WandbTracker` when
tracking is asked for (Weights & Biases, optional: ``pip install wandb``; it logs locally with
``WANDB_MODE=offline``) and a :class:`NullTracker` otherwise, so callers never branch.

>>> tracker = make_tracker(False, "runs/digits", {"data": "digits"})
>>> tracker.log_epoch({"epoch": 1, "train": {"loss": 0.1}})
>>> tracker.finish()
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from latentsearch.errors import LatentsearchError

WANDB_PROJECT = "latentsearch"


class TrackingError(LatentsearchError):
    """Tracking was asked for but cannot work; the message says what to install or set."""


@runtime_checkable
class Tracker(Protocol):
    """Where a run's config, metrics and pictures are sent."""

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """Logs one epoch's record (as in ``metrics.jsonl``: epoch, train, val, lr, ...)."""
        ...

    def log_report(self, report_dir: str | Path) -> None:
        """Logs a report folder's metrics (``report.json``) and its PNGs as images."""
        ...

    def finish(self) -> None:
        """Flushes and closes the tracked run."""
        ...


class NullTracker:
    """Tracks nothing: the tracker used when tracking is off."""

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """Does nothing."""

    def log_report(self, report_dir: str | Path) -> None:
        """Does nothing."""

    def finish(self) -> None:
        """Does nothing."""


def flatten_epoch(record: Mapping[str, Any]) -> dict[str, float]:
    """An epoch record as flat ``{"train/loss": ..., "val/mse": ..., "lr": ...}`` numbers.

    Args:
        record: ``{"epoch": int, "train": {part: value}, "val": {part: value} or None,
            "seconds": float, "images_per_second": float, "lr": float}``; other keys whose
            values are numbers are kept as they are.
    """
    flat: dict[str, float] = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        if isinstance(value, Mapping):
            flat.update({f"{key}/{part}": float(v) for part, v in value.items()})
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[key] = float(value)
    return flat


class WandbTracker:
    """Logs to Weights & Biases: the config once, each epoch, and the report's pictures.

    Args:
        wandb: The imported ``wandb`` module.
        run_dir: The run folder; wandb keeps its local files in ``run_dir/wandb``.
        config: The run's resolved config.
        project: The wandb project.
    """

    def __init__(
        self,
        wandb: Any,
        run_dir: str | Path,
        config: Mapping[str, Any],
        *,
        project: str = WANDB_PROJECT,
    ) -> None:
        self._wandb = wandb
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # wandb reads WANDB_MODE (offline, disabled) and WANDB_PROJECT itself.
        self._run = wandb.init(
            project=project, name=run_dir.name, dir=str(run_dir), config=dict(config)
        )

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """Logs the epoch's losses, timing and learning rate at step ``epoch``."""
        self._run.log(flatten_epoch(record), step=int(record["epoch"]))

    def log_report(self, report_dir: str | Path) -> None:
        """Logs the report's metrics as the run summary and each of its PNGs as an image."""
        report_dir = Path(report_dir)
        report_json = report_dir / "report.json"
        if report_json.exists():
            metrics = json.loads(report_json.read_text()).get("metrics") or {}
            summary = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
            summary.update({f"baseline/{k}": v for k, v in (metrics.get("baseline") or {}).items()})
            self._run.summary.update(summary)
        images = {
            f"report/{png.stem}": self._wandb.Image(str(png))
            for png in sorted(report_dir.glob("*.png"))
        }
        if images:
            self._run.log(images)

    def finish(self) -> None:
        """Finishes the wandb run (uploads, or leaves it for ``wandb sync`` when offline)."""
        self._run.finish()


def make_tracker(enabled: bool, run_dir: str | Path, config: Mapping[str, Any] | Any) -> Tracker:
    """The tracker to use: wandb when ``enabled``, else one that does nothing.

    Args:
        enabled: Whether tracking was asked for (e.g. ``train --wandb``).
        run_dir: The run folder.
        config: The run's config: a mapping, or an object with ``to_dict()`` (TrainConfig).

    Returns:
        A :class:`WandbTracker` or a :class:`NullTracker`.

    Raises:
        TrackingError: If tracking is asked for but ``wandb`` is not installed.
    """
    if not enabled:
        return NullTracker()
    try:
        wandb = importlib.import_module("wandb")
    except ImportError as e:
        raise TrackingError(
            "experiment tracking needs Weights & Biases, which is not installed: run "
            "`pip install wandb`, then `wandb login` (or set WANDB_MODE=offline to log to the "
            "run folder only)"
        ) from e
    settings = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return WandbTracker(wandb, run_dir, settings)
