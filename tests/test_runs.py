"""Run state apart from the fit loop: folder layout, checkpoints, fingerprints, refusals."""

from __future__ import annotations

import dataclasses
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from latentsearch.clusters import ClusterHeadError, load_cluster_head
from latentsearch.errors import ConfigError
from latentsearch.models import create_model
from latentsearch.runs import (
    CHECKPOINT_FORMAT,
    RESUMABLE_FIELDS,
    Run,
    RunError,
    TrainConfig,
    best_epoch,
    check_checkpoint,
    checkpoint_path,
    checkpoints,
    fingerprint,
    load_run,
    load_versioned,
    prepare_run_folder,
    prune_checkpoints,
    read_checkpoint,
    weights_hash,
)


def _fake_checkpoints(run_dir: Path, epochs: list[int]) -> None:
    (run_dir / "checkpoints").mkdir(parents=True)
    for epoch in epochs:
        checkpoint_path(run_dir, epoch).write_bytes(b"")


def test_checkpoints_are_listed_oldest_first(tiny_run: Run, tmp_path: Path) -> None:
    _fake_checkpoints(tmp_path / "run", [3, 1, 2])
    assert checkpoints(tmp_path / "run") == [
        checkpoint_path(tmp_path / "run", e) for e in (1, 2, 3)
    ]
    assert checkpoints(tiny_run.path)[-1] == checkpoint_path(tiny_run.path, 2)
    assert checkpoints(tmp_path / "absent") == []


def _history(val_losses: list[float | None]) -> list[dict[str, Any]]:
    return [
        {"epoch": e, "train": {"loss": 1.0}, **({} if v is None else {"val": {"loss": v}})}
        for e, v in enumerate(val_losses, start=1)
    ]


def test_the_best_epoch_has_the_lowest_validation_loss() -> None:
    assert best_epoch(_history([0.9, 0.5, 0.7, 0.5])) == 2  # the earliest of a tie
    assert best_epoch(_history([float("nan"), 0.8])) == 2
    assert best_epoch(_history([None, None])) is None  # no validation set: no best
    assert best_epoch([]) is None


def test_pruning_keeps_the_last_and_the_best_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fake_checkpoints(run, [1, 2, 3, 4])
    history = _history([0.9, 0.5, 0.7, 0.8])
    assert prune_checkpoints(run, last=4, history=history, keep="all") == []
    assert len(checkpoints(run)) == 4
    removed = prune_checkpoints(run, last=4, history=history, keep="last-best")
    assert removed == [checkpoint_path(run, 1), checkpoint_path(run, 3)]
    assert checkpoints(run) == [checkpoint_path(run, 2), checkpoint_path(run, 4)]
    # Without validation losses only the last stays.
    assert prune_checkpoints(run, last=4, history=_history([None] * 4), keep="last-best")
    assert checkpoints(run) == [checkpoint_path(run, 4)]
    with pytest.raises(ConfigError, match="keep_checkpoints must be one of last-best, all"):
        prune_checkpoints(run, last=4, history=history, keep="best")
    with pytest.raises(ConfigError, match="keep_checkpoints must be one of"):
        TrainConfig(keep_checkpoints="every")


def test_a_loaded_run_has_the_trained_runs_fingerprint(tiny_run: Run) -> None:
    loaded = load_run(tiny_run.path)
    assert loaded.fingerprint == tiny_run.fingerprint == fingerprint(loaded.model, "seed-ae")
    assert loaded.fingerprint["weights_sha256"] == weights_hash(loaded.model)
    assert loaded.config == tiny_run.config and loaded.epoch == 2
    assert load_run(checkpoint_path(tiny_run.path, 2)).epoch == 2  # a checkpoint file too


def test_a_model_without_a_folder_is_a_run_of_epoch_zero() -> None:
    torch.manual_seed(0)
    model = create_model("seed-ae", in_channels=3, image_size=16)
    run = Run.from_model(model, TrainConfig(model="seed-ae"), "nowhere")
    assert run.epoch == 0 and run.history == [] and run.path == Path("nowhere")
    assert run.fingerprint == {
        "model": "seed-ae",
        "weights_sha256": weights_hash(model),
        "image_size": 16,
        "in_channels": 3,
        "embedding_dim": model.embedding_dim,
    }


def test_a_run_folder_refuses_a_second_run_and_a_resume_of_another_config(
    tiny_run: Run, tmp_path: Path, copy_tiny_run: Callable[[Path], Path]
) -> None:
    assert prepare_run_folder(tmp_path / "new", tiny_run.config, resume=False) is None
    folder = copy_tiny_run(tmp_path / "run")
    with pytest.raises(RunError, match="`resume=True`"):
        prepare_run_folder(folder, tiny_run.config, resume=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is a file"):
        prepare_run_folder(tmp_path / "file", tiny_run.config, resume=False)
    # Where it runs and for how long may change; what it learns may not.
    longer = dataclasses.replace(
        tiny_run.config, epochs=5, threads=1, precision="fp32", keep_checkpoints="all"
    )
    state = prepare_run_folder(folder, longer, resume=True)
    assert state is not None and state["epoch"] == 2 and state["format"] == CHECKPOINT_FORMAT
    assert set(RESUMABLE_FIELDS) == {
        "epochs",
        "threads",
        "device",
        "precision",
        "world_size",
        "keep_checkpoints",
    }
    with pytest.raises(RunError, match="another config; only `epochs`"):
        prepare_run_folder(folder, dataclasses.replace(longer, seed=9), resume=True)


def test_versioned_files_of_another_format_are_refused(tiny_run: Run, tmp_path: Path) -> None:
    ckpt = checkpoint_path(tiny_run.path, 2)
    assert load_versioned(ckpt, CHECKPOINT_FORMAT, what="checkpoint", error=RunError)["epoch"] == 2
    # A checkpoint is not a cluster head, though both load the same way.
    with pytest.raises(ClusterHeadError, match="is not a cluster head"):
        load_cluster_head(ckpt)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ClusterHeadError, match="not a cluster head: it is not a file written by"):
        load_cluster_head(tmp_path / "junk.pt")
    # A zip archive begins like a checkpoint; torch's many-line refusal becomes one line.
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as z:
        z.writestr("a.txt", "not a tensor")
    with pytest.raises(RunError, match="not a readable checkpoint") as caught:
        zipped = tmp_path / "photos.zip"
        load_versioned(zipped, CHECKPOINT_FORMAT, what="checkpoint", error=RunError)
    assert "\n" not in str(caught.value)


def test_a_config_of_json_that_is_not_an_object_is_a_run_error() -> None:
    with pytest.raises(RunError, match="JSON object"):
        TrainConfig.from_dict([1, 2])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- crafted files
def nested(depth: int = 40) -> list[Any]:
    """``a = [a, a]`` ``depth`` times: a few hundred bytes pickled, 2^depth lists walked."""
    x: list[Any] = []
    for _ in range(depth):
        x = [x, x]
    return x


def _expanded(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # The first tensor at its own shape, but every element the one value a stride-0 view
    # stores: a file can promise 2^40 elements this way; none that latentsearch wrote does.
    name, t = next(iter(weights.items()))
    return {**weights, name: t.reshape(-1)[:1].clone().expand(t.shape)}


CRAFTED: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "class names nested 40 deep": ("class_names", lambda s: nested()),
    "class names that are numbers": ("class_names", lambda s: [1, 2, 3]),
    "a class name of a million characters": ("class_names", lambda s: ["x" * 1_000_000]),
    "model kwargs nested 40 deep": (
        "config",
        lambda s: {**s["config"], "model_kwargs": {"width": nested()}},
    ),
    "an image size of a million": (
        "model_args",
        lambda s: {**s["model_args"], "image_size": 10**6},
    ),
    "model args that are a list": ("model_args", lambda s: [s["model_args"]]),
    "an epoch that is a string": ("epoch", lambda s: "2"),
    "a state dict nested 40 deep": ("state_dict", lambda s: nested()),
    "a weight stored as one value": ("state_dict", lambda s: _expanded(s["state_dict"])),
    "an optimizer state nested 40 deep": ("optimizer", lambda s: {"state": nested()}),
    "an unknown field nested 40 deep": ("notes", lambda s: nested()),
}


def _finishes(fn: Callable[[], Any], seconds: float = 60) -> BaseException | None:
    """Runs ``fn`` in a thread and returns what it raised (None: nothing); fails the test
    when it is still running after ``seconds`` (a file that makes loading run away)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as e:  # handed to the test to judge
            outcome.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s")
    return outcome[0]


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_checkpoint_is_refused_in_one_line_by_load_and_resume(
    tiny_run: Run, tmp_path: Path, copy_tiny_run: Callable[[Path], Path], case: str
) -> None:
    folder = copy_tiny_run(tmp_path / "run")
    ckpt = checkpoints(folder)[-1]
    state = torch.load(ckpt, weights_only=True)
    key, make = CRAFTED[case]
    state[key] = make(state)
    torch.save(state, ckpt)
    for load in (
        lambda: load_run(folder),
        lambda: prepare_run_folder(folder, tiny_run.config, resume=True),
    ):
        error = _finishes(load)
        assert isinstance(error, RunError), f"{case}: {error!r}"
        assert str(ckpt) in str(error) and "\n" not in str(error)
        assert "not a valid latentsearch checkpoint" in str(error) or "do not fit" in str(error)


def test_a_real_checkpoint_passes_every_check(tiny_run: Run) -> None:
    state = read_checkpoint(checkpoint_path(tiny_run.path, 2))
    check_checkpoint(state)  # the fields as training writes them, optimizer state included
    assert {"optimizer", "state_dict", "class_names"} <= set(state)
