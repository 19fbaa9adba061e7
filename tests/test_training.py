from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from latentsearch.data import DataSplits, load_data
from latentsearch.diskspace import DiskFullError
from latentsearch.errors import ConfigError
from latentsearch.runs import (
    Run,
    RunError,
    TrainConfig,
    best_checkpoint,
    best_epoch,
    checkpoint_path,
    checkpoints,
    load_run,
    read_history,
    weights_hash,
)
from latentsearch.training import build_model, load_initial_weights, make_optimizer, train


def _like(run: Run, **kw: object) -> TrainConfig:
    """The config of ``run`` (the tiny run: digits, 2 epochs, batch 64, seed 3, hint on half
    the labels) with some fields changed."""
    return dataclasses.replace(run.config, **kw)  # type: ignore[arg-type]


def test_run_folder_holds_config_metrics_and_the_last_and_best_checkpoints(
    tiny_run: Run,
) -> None:
    run, folder = tiny_run, tiny_run.path
    assert json.loads((folder / "config.json").read_text())["label_fraction"] == 0.5
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    first = json.loads(lines[0])
    assert {"mse", "hint_ce", "loss"} <= set(first["train"])
    assert {"mse", "hint_ce", "loss"} <= set(first["val"])
    assert first["images_per_second"] > 0
    ckpts = sorted((folder / "checkpoints").glob("*.pt"))
    best = min((1, 2), key=lambda e: json.loads(lines[e - 1])["val"]["loss"])
    assert [c.name for c in ckpts] == sorted({f"epoch-{best:03d}.pt", "epoch-002.pt"})
    state = torch.load(ckpts[-1], weights_only=True)  # no pickled objects inside
    assert state["model_name"] == "seed-ae" and state["epoch"] == 2
    reloaded = load_run(folder)
    assert reloaded.fingerprint == run.fingerprint
    assert reloaded.class_names == [str(i) for i in range(10)]


def test_training_is_deterministic_for_a_seed(
    tmp_path: Path, digits: DataSplits, tiny_run: Run
) -> None:
    a = tiny_run
    b = train(_like(a), tmp_path / "b", progress=False, data=digits)
    c = train(_like(a, seed=4), tmp_path / "c", progress=False, data=digits)
    assert weights_hash(a.model) == weights_hash(b.model)
    assert a.history[-1]["train"] == b.history[-1]["train"]
    assert weights_hash(a.model) != weights_hash(c.model)


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(
    tmp_path: Path, digits: DataSplits, tiny_run: Run, copy_tiny_run: Callable[[Path], Path]
) -> None:
    full = train(_like(tiny_run, epochs=3), tmp_path / "full", progress=False, data=digits)
    part = copy_tiny_run(tmp_path / "part")  # the same config, stopped after 2 epochs
    resumed = train(_like(tiny_run, epochs=3), part, resume=True, progress=False, data=digits)
    assert weights_hash(resumed.model) == weights_hash(full.model)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["train"] == full.history[-1]["train"]


def _nnclr_config(epochs: int, seed: int) -> TrainConfig:
    """A tiny SimCLR run on digits with NNCLR positives from epoch 2 (queue of 256), at a
    constant learning rate (a cosine schedule would depend on ``epochs``)."""
    objective = {"neighbour_weight": 0.5, "queue_size": 256, "neighbour_start_epoch": 1}
    return TrainConfig(
        data="digits",
        model="resnet-s",
        model_kwargs={"width": 4},
        objective="contrastive",
        objective_kwargs=objective,
        epochs=epochs,
        batch_size=128,
        cosine_schedule=False,
        seed=seed,
    )


def test_neighbour_positives_begin_at_their_start_epoch_in_a_real_run(
    tmp_path: Path, digits: DataSplits
) -> None:
    # The loop tells the objective each epoch: epoch 1 is plain SimCLR, epoch 2 adds NNCLR.
    cfg = _nnclr_config(epochs=2, seed=1)
    run = train(cfg, tmp_path / "r", progress=False, data=digits)
    first, second = (h["train"] for h in run.history)
    assert "nn_xent" not in first and first["loss"] == pytest.approx(first["nt_xent"])
    assert second["nn_xent"] > 0


def test_resume_with_neighbour_positives_keeps_the_queue(
    tmp_path: Path, digits: DataSplits
) -> None:
    # The queue is in the checkpoint: a run stopped after epoch 2 and resumed ends with the
    # same weights as one that never stopped (an empty queue would skip NNCLR at first).
    cfg = _nnclr_config(epochs=3, seed=2)
    full = train(cfg, tmp_path / "full", progress=False, data=digits)
    part = tmp_path / "part"
    train(dataclasses.replace(cfg, epochs=2), part, progress=False, data=digits)
    saved = torch.load(part / "checkpoints" / "epoch-002.pt", weights_only=True)
    assert saved["objective"]["queue"].shape[0] == 256
    resumed = train(cfg, part, resume=True, progress=False, data=digits)
    assert weights_hash(resumed.model) == weights_hash(full.model)
    assert resumed.history[-1]["train"] == full.history[-1]["train"]


def test_resume_refuses_another_config(
    tmp_path: Path, digits: DataSplits, tiny_run: Run, copy_tiny_run: Callable[[Path], Path]
) -> None:
    run = copy_tiny_run(tmp_path / "run")
    with pytest.raises(RunError, match="another config"):
        train(_like(tiny_run, epochs=3, lr=0.1), run, resume=True, data=digits)
    with pytest.raises(RunError, match="not empty"):
        train(_like(tiny_run, epochs=3), run, data=digits)
    with pytest.raises(RunError, match="no checkpoint"):
        train(_like(tiny_run), tmp_path / "fresh", resume=True, data=digits)


def test_a_checkpoint_of_another_model_is_refused_clearly(
    tmp_path: Path, copy_tiny_run: Callable[[Path], Path]
) -> None:
    ckpt = copy_tiny_run(tmp_path / "run") / "checkpoints" / "epoch-002.pt"
    state = torch.load(ckpt, weights_only=True)
    state["model_name"] = "conv-ae"
    torch.save(state, ckpt)
    with pytest.raises(RunError, match="do not fit model 'conv-ae'"):
        load_run(tmp_path / "run")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="not a latentsearch checkpoint: it is not a file written"):
        load_run(tmp_path / "junk.pt")
    with pytest.raises(RunError, match="no run folder"):
        load_run(tmp_path / "missing")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"label_fraction": 1.5}, "label_fraction must be in"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"optimizer": "lbfgs"}, "optimizer must be one of adamw, sgd"),
    ],
)
def test_bad_settings_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        TrainConfig(**kw)  # type: ignore[arg-type]
    assert e.value.field == next(iter(kw))  # the command line names its flag from this


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
    tmp_path: Path, digits: DataSplits, tiny_run: Run
) -> None:
    params = [torch.nn.Parameter(torch.ones(3))]
    sgd = make_optimizer(TrainConfig(optimizer="sgd", lr=0.1, weight_decay=5e-4), params)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert sgd.defaults["weight_decay"] == 5e-4
    assert isinstance(make_optimizer(TrainConfig(), params), torch.optim.AdamW)

    config = _like(tiny_run, optimizer="sgd", lr=0.05, label_fraction=0.0)
    run = train(config, tmp_path / "run", data=digits)
    losses = [r["train"]["loss"] for r in run.history]
    assert losses[-1] < losses[0]  # SGD lowers the loss
    assert load_run(tmp_path / "run").config.optimizer == "sgd"


def test_init_copies_every_matching_tensor_and_reports_it(tiny_run: Run, tmp_path: Path) -> None:
    fresh = build_model(tiny_run.config, load_data("digits").train, num_classes=10)
    report = load_initial_weights(fresh, tiny_run.path)  # a run folder: its newest checkpoint
    assert not report.missing and not report.mismatched and not report.unused
    for name, tensor in fresh.state_dict().items():
        torch.testing.assert_close(tensor, tiny_run.model.state_dict()[name])
    assert "tensors loaded" in report.summary()

    # A plain state dict saved from DistributedDataParallel ("module." prefix) loads as well.
    plain = tmp_path / "weights.pt"
    torch.save({f"module.{k}": v for k, v in tiny_run.model.state_dict().items()}, plain)
    again = build_model(tiny_run.config, load_data("digits").train, num_classes=10)
    assert load_initial_weights(again, plain).loaded == report.loaded


def test_init_skips_tensors_of_another_shape_and_refuses_another_architecture(
    tiny_run: Run, tmp_path: Path
) -> None:
    digits = load_data("digits")
    no_head = build_model(tiny_run.config, digits.train, num_classes=3)  # head: 3 classes, not 10
    report = load_initial_weights(no_head, tiny_run.path)
    assert report.mismatched and all("head" in name for name, _, _ in report.mismatched)
    assert "skipped" in report.summary()

    other = build_model(_like(tiny_run, model="resnet-s"), digits.train, num_classes=0)
    with pytest.raises(RunError, match=r"no tensor of .* fits this model"):
        load_initial_weights(other, tiny_run.path)
    (tmp_path / "junk.pt").write_bytes(b"not weights")
    with pytest.raises(RunError, match="not a PyTorch weights file"):
        load_initial_weights(other, tmp_path / "junk.pt")
    with pytest.raises(RunError, match="no such file"):
        load_initial_weights(other, tmp_path / "missing.pt")


def test_a_run_started_from_init_records_it_and_says_what_it_loaded(
    tiny_run: Run, tmp_path: Path
) -> None:
    lines: list[str] = []
    cfg = dataclasses.replace(tiny_run.config, init=str(tiny_run.path), epochs=1)
    run = train(cfg, tmp_path / "tuned", progress=False, notify=lines.append)
    assert run.config.init == str(tiny_run.path)
    assert len(lines) == 1 and lines[0].startswith(f"init from {tiny_run.path}")


@pytest.mark.parametrize(
    "optimizer",
    [
        {"state": {}, "param_groups": []},  # another number of parameter groups
        {"param_groups": [{"params": [0]}]},  # no per-parameter state at all
        {"state": {}, "param_groups": [{"params": "x"}]},
    ],
)
def test_resume_from_a_training_state_that_does_not_fit_is_a_run_error(
    tmp_path: Path,
    digits: DataSplits,
    tiny_run: Run,
    copy_tiny_run: Callable[[Path], Path],
    optimizer: dict[str, Any],
) -> None:
    part = copy_tiny_run(tmp_path / "part")
    ckpt = checkpoints(part)[-1]
    state = torch.load(ckpt, weights_only=True)
    state["optimizer"] = optimizer
    torch.save(state, ckpt)
    with pytest.raises(RunError, match="cannot resume: the newest checkpoint's training") as e:
        train(_like(tiny_run, epochs=3), part, resume=True, progress=False, data=digits)
    assert "\n" not in str(e.value)


def test_pruned_checkpoints_keep_the_best_loadable_and_the_last_resumable(
    tmp_path: Path, digits: DataSplits, tiny_run: Run, copy_tiny_run: Callable[[Path], Path]
) -> None:
    # Every epoch's checkpoint kept (491 MB for 50 epochs on 320 images) was issue 38's item
    # 11: by default only the newest (to resume from) and the best validation loss's stay.
    # (The tiny run is pruned too: test_resume_continues_exactly_... resumes one.)
    every = train(
        _like(tiny_run, keep_checkpoints="all"), tmp_path / "all", progress=False, data=digits
    )
    assert [p.name for p in checkpoints(every.path)] == ["epoch-001.pt", "epoch-002.pt"]
    kept = copy_tiny_run(tmp_path / "kept")
    best = best_epoch(read_history(kept))
    assert best is not None
    assert checkpoints(kept) == sorted({checkpoint_path(kept, e) for e in (best, 2)})
    best_path = best_checkpoint(kept)
    assert best_path == checkpoint_path(kept, best)
    assert best_path is not None and load_run(best_path).epoch == best
    resumed = train(_like(tiny_run, epochs=3), kept, resume=True, progress=False, data=digits)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    best = best_epoch(resumed.history)
    assert checkpoints(kept) == sorted({checkpoint_path(kept, e) for e in (best, 3)})


def _checkpoint_bytes(run: Run) -> int:
    return max(p.stat().st_size for p in checkpoints(run.path))


def test_a_full_disk_stops_training_in_one_line_keeping_earlier_checkpoints(
    small_fs: Callable[[int], Path], digits: DataSplits, tiny_run: Run
) -> None:
    # Room for one checkpoint and a half: epoch 2's does not fit. torch's own writer said
    # "RuntimeError: [enforce fail at inline_container.cc:672]" and left epoch-002.pt.tmp.
    disk = small_fs(int(1.5 * _checkpoint_bytes(tiny_run)) // 1024)
    config = _like(tiny_run, epochs=3, keep_checkpoints="all")
    with pytest.raises(DiskFullError) as caught:
        train(config, disk / "run", progress=False, data=digits)
    message = str(caught.value)
    assert message.startswith(f"not enough space in {disk / 'run' / 'checkpoints'} for ")
    assert "epoch-002.pt (it needs " in message and "\n" not in message
    assert sorted(p.name for p in (disk / "run" / "checkpoints").iterdir()) == ["epoch-001.pt"]
    assert load_run(disk / "run").epoch == 1  # what was saved before is intact
    assert len(read_history(disk / "run")) == 1
