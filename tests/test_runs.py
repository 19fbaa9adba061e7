"""Run state apart from the fit loop: folder layout, checkpoints, fingerprints, refusals."""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from latentsearch.clusters import ClusterHeadError, load_cluster_head
from latentsearch.models import create_model
from latentsearch.runs import (
    CHECKPOINT_FORMAT,
    RESUMABLE_FIELDS,
    Run,
    RunError,
    TrainConfig,
    checkpoint_path,
    checkpoints,
    fingerprint,
    load_run,
    load_versioned,
    prepare_run_folder,
    weights_hash,
)


def test_checkpoints_are_listed_oldest_first(tiny_run: Run, tmp_path: Path) -> None:
    assert checkpoints(tiny_run.path) == [
        checkpoint_path(tiny_run.path, 1),
        checkpoint_path(tiny_run.path, 2),
    ]
    assert checkpoints(tmp_path / "absent") == []


def test_a_loaded_run_has_the_trained_runs_fingerprint(tiny_run: Run) -> None:
    loaded = load_run(tiny_run.path)
    assert loaded.fingerprint == tiny_run.fingerprint == fingerprint(loaded.model, "seed-ae")
    assert loaded.fingerprint["weights_sha256"] == weights_hash(loaded.model)
    assert loaded.config == tiny_run.config and loaded.epoch == 2
    assert load_run(checkpoint_path(tiny_run.path, 1)).epoch == 1  # a checkpoint file too


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
    longer = dataclasses.replace(tiny_run.config, epochs=5, threads=1, precision="fp32")
    state = prepare_run_folder(folder, longer, resume=True)
    assert state is not None and state["epoch"] == 2 and state["format"] == CHECKPOINT_FORMAT
    assert set(RESUMABLE_FIELDS) == {"epochs", "threads", "device", "precision", "world_size"}
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
