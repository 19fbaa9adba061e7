"""The demo: the whole pipeline on scikit-learn's digits, offline, in about a minute and a half."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentsearch.data import load_data
from latentsearch.evaluation import Evaluation, evaluate_run
from latentsearch.presets import auto_recipe
from latentsearch.protocols import make_splits
from latentsearch.report import build_report
from latentsearch.runs import Run, TrainConfig
from latentsearch.training import train

# (row name, run folder, config overrides): the study's two models and the improved one,
# trained for DEMO_EPOCHS at batch 32; run_demo adds the no-label default, `auto`.
DEMO_RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("seed-ae, no labels", "seed-ae", {"model": "seed-ae"}),
    ("seed-ae + hint, 10% labels", "seed-ae-hint10", {"model": "seed-ae", "label_fraction": 0.1}),
    ("seed-ae + hint, all labels", "seed-ae-hint", {"model": "seed-ae", "label_fraction": 1.0}),
    ("conv-ae, no labels", "conv-ae", {"model": "conv-ae"}),
]
DEMO_EPOCHS = 15


def run_demo(
    out: Path, *, log: Callable[[str], None] = lambda s: None
) -> tuple[list[dict[str, Any]], Path]:
    """Trains the demo models on digits and scores them on the held-out digits.

    Args:
        out: Folder for the runs (replaced if it holds an earlier demo).
        log: Receives progress lines.

    Returns:
        One row of metrics per representation (raw pixels first), and the path of the HTML
        report of the run with the best NMI.
    """
    data = load_data("digits")
    splits = make_splits(data, "heldout")
    log(
        f"digits: {len(splits.fit)} training images, {len(splits.cluster)} held-out test "
        f"images ({data.train.image_shape[0]}×{data.train.image_shape[1]} grey, 10 classes)"
    )
    runs = [
        (name, folder, {"epochs": DEMO_EPOCHS, "batch_size": 32, **overrides})
        for name, folder, overrides in DEMO_RUNS
    ]
    # What `latentsearch train` does with no labels and no preset: chosen from the images.
    recipe = auto_recipe(splits.fit.pixels, n_fit=len(splits.fit))
    runs.append(("auto (contrastive), no labels", "auto", recipe.overrides))
    rows: list[dict[str, Any]] = []
    best: tuple[Run, Path, Evaluation] | None = None
    for name, folder, overrides in runs:
        run_dir = out / folder
        if run_dir.exists():
            shutil.rmtree(run_dir)
        config = TrainConfig(data="digits", **overrides)
        log(f"training {name} ({config.epochs} epochs) -> {run_dir}")
        run = train(config, run_dir, data=data, progress=True)
        result = evaluate_run(run, data=data, baseline=True)
        rows.append({"representation": name, **result})
        if best is None or result["nmi"] > best[2]["nmi"]:
            best = (run, run_dir, result)
    # Every evaluation scored raw pixels on the same held-out images; show that once, first.
    rows.insert(0, {"representation": "raw pixels", **rows[0]["baseline"]})
    assert best is not None  # runs is not empty
    run, run_dir, result = best
    log(f"writing the report of {run_dir.name}")
    report = build_report(run, run_dir / "report", data=data, evaluation=result)
    return rows, report
