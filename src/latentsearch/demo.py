"""The demo: the whole pipeline on scikit-learn's digits, offline, in about a minute."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.data import load_data
from latentsearch.evaluation import evaluate_run, score_embeddings
from latentsearch.metrics import pixel_baseline
from latentsearch.protocols import make_splits
from latentsearch.training import TrainConfig, train

# (row name, run folder, config overrides): the study's two models and the improved one.
DEMO_RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("seed-ae, no labels", "seed-ae", {"model": "seed-ae"}),
    ("seed-ae + hint, 10% labels", "seed-ae-hint10", {"model": "seed-ae", "label_fraction": 0.1}),
    ("seed-ae + hint, all labels", "seed-ae-hint", {"model": "seed-ae", "label_fraction": 1.0}),
    ("conv-ae, no labels", "conv-ae", {"model": "conv-ae"}),
]
DEMO_EPOCHS = 30


def run_demo(out: Path, *, log: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """Trains the demo models on digits and scores them on the held-out digits.

    Args:
        out: Folder for the runs (replaced if it holds an earlier demo).
        log: Receives progress lines.

    Returns:
        One row of metrics per representation, raw pixels first.
    """
    data = load_data("digits")
    splits = make_splits(data, "heldout")
    log(
        f"digits: {len(splits.fit)} training images, {len(splits.cluster)} held-out test "
        f"images ({data.train.image_shape[0]}×{data.train.image_shape[1]} grey, 10 classes)"
    )
    rows: list[dict[str, Any]] = [
        {
            "representation": "raw pixels",
            **score_embeddings(
                splits,
                pixel_baseline(np.asarray(splits.cluster.pixels)),
                pixel_baseline(np.asarray(splits.query.pixels)),
                pixel_baseline(np.asarray(splits.database.pixels)),
            ),
        }
    ]
    for name, folder, overrides in DEMO_RUNS:
        run_dir = out / folder
        if run_dir.exists():
            shutil.rmtree(run_dir)
        config = TrainConfig(data="digits", epochs=DEMO_EPOCHS, batch_size=32, **overrides)
        log(f"training {name} ({DEMO_EPOCHS} epochs) -> {run_dir}")
        run = train(config, run_dir, data=data, progress=True)
        result = evaluate_run(run, data=data)
        rows.append({"representation": name, **result})
    return rows
