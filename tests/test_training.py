from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from latentsearch.data import DataSplits, load_data
from latentsearch.training import (
    RunError,
    TrainConfig,
    load_run,
    make_optimizer,
    train,
    weights_hash,
)


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_data("digits")


def _config(**kw: object) -> TrainConfig:
    base: dict[str, object] = {"data": "digits", "epochs": 2, "batch_size": 64, "seed": 3}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_run_folder_holds_config_metrics_and_a_checkpoint_per_epoch(
    tmp_path: Path, digits: DataSplits
) -> None:
    run = train(_config(label_fraction=0.5), tmp_path / "run", progress=False, data=digits)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["label_fraction"] == 0.5
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    first = json.loads(lines[0])
    assert {"mse", "hint_ce", "loss"} <= set(first["train"])
    assert {"mse", "hint_ce", "loss"} <= set(first["val"])
    assert first["images_per_second"] > 0
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))
    assert [c.name for c in ckpts] == ["epoch-001.pt", "epoch-002.pt"]
    state = torch.load(ckpts[-1], weights_only=True)  # no pickled objects inside
    assert state["model_name"] == "seed-ae" and state["epoch"] == 2
    reloaded = load_run(tmp_path / "run")
    assert reloaded.fingerprint == run.fingerprint
    assert reloaded.class_names == [str(i) for i in range(10)]


def test_training_is_deterministic_for_a_seed(tmp_path: Path, digits: DataSplits) -> None:
    a = train(_config(), tmp_path / "a", progress=False, data=digits)
    b = train(_config(), tmp_path / "b", progress=False, data=digits)
    c = train(_config(seed=4), tmp_path / "c", progress=False, data=digits)
    assert weights_hash(a.model) == weights_hash(b.model)
    assert a.history[-1]["train"] == b.history[-1]["train"]
    assert weights_hash(a.model) != weights_hash(c.model)


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(
    tmp_path: Path, digits: DataSplits
) -> None:
    full = train(
        _config(epochs=3, label_fraction=0.3), tmp_path / "full", progress=False, data=digits
    )
    train(_config(epochs=2, label_fraction=0.3), tmp_path / "part", progress=False, data=digits)
    resumed = train(
        _config(epochs=3, label_fraction=0.3),
        tmp_path / "part",
        resume=True,
        progress=False,
        data=digits,
    )
    assert weights_hash(resumed.model) == weights_hash(full.model)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["train"] == full.history[-1]["train"]


def test_resume_refuses_another_config(tmp_path: Path, digits: DataSplits) -> None:
    train(_config(epochs=1), tmp_path / "run", progress=False, data=digits)
    with pytest.raises(RunError, match="another config"):
        train(_config(epochs=2, lr=0.1), tmp_path / "run", resume=True, data=digits)
    with pytest.raises(RunError, match="not empty"):
        train(_config(epochs=2), tmp_path / "run", data=digits)
    with pytest.raises(RunError, match="no checkpoint"):
        train(_config(), tmp_path / "fresh", resume=True, data=digits)


def test_a_checkpoint_of_another_model_is_refused_clearly(
    tmp_path: Path, digits: DataSplits
) -> None:
    train(_config(epochs=1), tmp_path / "run", progress=False, data=digits)
    ckpt = tmp_path / "run" / "checkpoints" / "epoch-001.pt"
    state = torch.load(ckpt, weights_only=True)
    state["model_name"] = "conv-ae"
    torch.save(state, ckpt)
    with pytest.raises(RunError, match="do not fit model 'conv-ae'"):
        load_run(tmp_path / "run")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="not a readable"):
        load_run(tmp_path / "junk.pt")
    with pytest.raises(RunError, match="no run folder"):
        load_run(tmp_path / "missing")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"label_fraction": 1.5}, "label-fraction"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"optimizer": "lbfgs"}, "optimizer must be one of adamw, sgd"),
    ],
)
def test_bad_settings_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**kw)


def test_labels_asked_of_an_unlabelled_folder_are_refused(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(folder / f"{i}.png")
    config = TrainConfig(data=str(folder), image_size=8, epochs=1, label_fraction=0.5)
    with pytest.raises(ValueError, match="needs labels"):
        train(config, tmp_path / "run", progress=False)


@pytest.mark.parametrize("n, batch", [(10, 3), (10, 5), (9, 4), (2, 2), (257, 256), (100, 256)])
def test_batches_cover_every_item_once_and_none_has_a_single_image(n: int, batch: int) -> None:
    from latentsearch.training import batch_bounds

    bounds = batch_bounds(n, batch)
    covered = [i for start, stop in bounds for i in range(start, stop)]
    assert covered == list(range(n))
    assert all(stop - start >= 2 for start, stop in bounds)
    assert all(stop - start <= batch + 1 for start, stop in bounds)


def test_sgd_trains_with_nesterov_momentum_and_coupled_decay(
    tmp_path: Path, digits: DataSplits
) -> None:
    params = [torch.nn.Parameter(torch.ones(3))]
    sgd = make_optimizer(_config(optimizer="sgd", lr=0.1, weight_decay=5e-4), params)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert sgd.defaults["weight_decay"] == 5e-4
    assert isinstance(make_optimizer(_config(), params), torch.optim.AdamW)

    run = train(_config(optimizer="sgd", lr=0.05), tmp_path / "run", data=digits)
    losses = [r["train"]["loss"] for r in run.history]
    assert losses[-1] < losses[0]  # SGD lowers the loss
    assert load_run(tmp_path / "run").config.optimizer == "sgd"
