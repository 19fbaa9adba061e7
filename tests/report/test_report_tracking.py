"""Experiment tracking: the null tracker, the missing-wandb error, and wandb via a fake module."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from latentsearch.report.tracking import (
    NullTracker,
    Tracker,
    TrackingError,
    WandbTracker,
    make_tracker,
)
from latentsearch.runs import TrainConfig

RECORD = {
    "epoch": 2,
    "train": {"loss": 0.5, "mse": 0.4},
    "val": {"loss": 0.6, "mse": 0.5},
    "seconds": 3.0,
    "images_per_second": 400.0,
    "lr": 0.001,
}


class FakeRun:
    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls
        self.summary: dict[str, Any] = {}

    def log(self, data: dict[str, Any], step: int | None = None) -> None:
        self.calls.append(("log", data, step))

    def finish(self) -> None:
        self.calls.append(("finish",))


@pytest.fixture
def fake_wandb(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """A ``wandb`` module that records what it is asked to do."""
    calls: list[tuple[str, Any]] = []
    module = types.ModuleType("wandb")

    def init(**kwargs: Any) -> FakeRun:
        calls.append(("init", kwargs))
        module.run = FakeRun(calls)  # type: ignore[attr-defined]
        return module.run  # type: ignore[attr-defined]

    class FakeImage:
        def __init__(self, path: str) -> None:
            self.path = path

    module.init = init  # type: ignore[attr-defined]
    module.Image = FakeImage  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", module)
    return calls


def test_tracking_off_gives_a_tracker_that_does_nothing(tmp_path: Path) -> None:
    tracker = make_tracker(False, tmp_path / "run", {"data": "digits"})
    assert isinstance(tracker, NullTracker) and isinstance(tracker, Tracker)
    tracker.log_epoch(RECORD)
    tracker.log_report(tmp_path)
    tracker.finish()
    assert not (tmp_path / "run").exists()


def test_tracking_without_wandb_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(TrackingError, match=r"pip install wandb.*WANDB_MODE=offline"):
        make_tracker(True, tmp_path / "run", {"data": "digits"})


def test_wandb_tracker_logs_config_epochs_report_and_finishes(
    tmp_path: Path, fake_wandb: list[tuple[str, Any]]
) -> None:
    config = TrainConfig(data="digits", epochs=2)
    tracker = make_tracker(True, tmp_path / "my-run", config)
    assert isinstance(tracker, WandbTracker) and isinstance(tracker, Tracker)
    assert fake_wandb == [
        (
            "init",
            {
                "project": "latentsearch",
                "name": "my-run",
                "dir": str(tmp_path / "my-run"),
                "config": config.to_dict(),
            },
        )
    ]

    tracker.log_epoch(RECORD)
    assert fake_wandb[-1] == (
        "log",
        {"train/loss": 0.5, "train/mse": 0.4, "val/loss": 0.6, "val/mse": 0.5,
         "seconds": 3.0, "images_per_second": 400.0, "lr": 0.001},
        2,
    )  # fmt: skip

    report = tmp_path / "report"
    report.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(report / "retrieval.png")
    metrics = {"nmi": 0.5, "protocol": "heldout", "baseline": {"nmi": 0.4}}
    (report / "report.json").write_text(json.dumps({"metrics": metrics}))
    tracker.log_report(report)
    name, images, step = fake_wandb[-1]
    assert name == "log" and step is None
    assert list(images) == ["report/retrieval"]
    assert images["report/retrieval"].path == str(report / "retrieval.png")
    run = sys.modules["wandb"].run  # type: ignore[attr-defined]
    assert run.summary == {"nmi": 0.5, "baseline/nmi": 0.4}

    tracker.finish()
    assert fake_wandb[-1] == ("finish",)
