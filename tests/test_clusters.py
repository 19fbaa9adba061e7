"""The SCAN cluster head: its loss, neighbour mining, training, saving and refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from latentsearch.clusters import (
    ClusterConfig,
    ClusterHeadError,
    fit_cluster_head,
    fit_head_on_embeddings,
    load_cluster_head,
    mine_neighbours,
    scan_loss,
)
from latentsearch.models.base import EmbeddingModel, ModelOutput


def test_scan_loss_rewards_agreeing_neighbours_and_balanced_clusters() -> None:
    k = 4
    confident = torch.eye(k).repeat(8, 1)[None] * 20  # (1, 32, 4): balanced, sure
    same, _ = scan_loss(confident, confident, entropy_weight=1.0)
    shifted, _ = scan_loss(confident, confident.roll(1, dims=2), entropy_weight=1.0)
    assert float(same) < float(shifted)  # neighbours that agree cost less
    collapsed = torch.zeros(1, 32, k)
    collapsed[..., 0] = 20  # everything in one cluster: agrees, but entropy is lost
    one, _ = scan_loss(collapsed, collapsed, entropy_weight=1.0)
    assert float(same) < float(one)
    assert float(same) == pytest.approx(-np.log(k), abs=1e-3)


def test_mined_neighbours_are_the_nearest_other_rows() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    nn_idx = mine_neighbours(x, k=3, block=7)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    expected = np.argsort(-sim, axis=1)[:, :3]
    assert nn_idx.shape == (50, 3)
    assert (np.sort(nn_idx, axis=1) == np.sort(expected, axis=1)).all()


class _Identity(EmbeddingModel):
    """An 'encoder' whose embedding is its first 2 pixels (of a 2x2 image): the head alone."""

    def __init__(self) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.num_classes, self.embedding_dim = 1, 2, 0, 2
        self.scale = torch.nn.Parameter(torch.ones(()))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2] * self.scale

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return ModelOutput(embedding=self.embed(x))


def _blobs(n_per: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = np.array([[40, 40], [215, 40], [40, 215], [215, 215]])
    labels = np.repeat(np.arange(4), n_per)
    points = centres[labels] + rng.normal(scale=12, size=(len(labels), 2))
    pixels = np.zeros((len(labels), 2, 2, 1), dtype=np.uint8)
    pixels[:, 0, :, 0] = np.clip(points, 0, 255)
    return pixels, labels


def test_head_recovers_separated_clusters_and_round_trips(tmp_path: Path) -> None:
    from latentsearch.augment import AugmentConfig

    rng = np.random.default_rng(0)
    pixels, labels = _blobs(60, rng)
    model = _Identity()
    # No crop or flip: on a 2x2 "image" they would swap or blur the two coordinates.
    views = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False, jitter_p=0.0)
    cfg = ClusterConfig(n_clusters=4, n_neighbours=5, epochs=40, heads=3, self_label_epochs=5)
    head = fit_cluster_head(model, pixels, config=cfg, augment_config=views, encoder_sha256="abc")
    emb = pixels[:, 0, :, 0].astype(np.float32) / 255.0
    assigned = head.assign(emb)
    assert normalized_mutual_info_score(labels, assigned) > 0.9
    path = head.save(tmp_path / "cluster_head.pt")
    again = load_cluster_head(path, encoder_sha256="abc")
    assert (again.assign(emb) == assigned).all()
    with pytest.raises(ClusterHeadError, match="another encoder"):
        load_cluster_head(path, encoder_sha256="other")


def test_unreadable_head_and_too_few_images_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "cluster_head.pt"
    bad.write_bytes(b"not a head")
    with pytest.raises(ClusterHeadError, match="not a cluster head: it is not a file written by"):
        load_cluster_head(bad)
    with pytest.raises(ValueError, match="too few"):
        fit_cluster_head(_Identity(), np.zeros((5, 2, 2, 1), np.uint8))


def test_a_head_from_given_embeddings_recovers_the_clusters_and_refuses_mismatches() -> None:
    rng = np.random.default_rng(0)
    pixels, labels = _blobs(60, rng)
    plain = pixels[:, 0, :, 0].astype(np.float32) / 255.0
    views = plain[None] + rng.normal(scale=0.01, size=(3, *plain.shape)).astype(np.float32)
    cfg = ClusterConfig(
        n_clusters=4, n_neighbours=5, epochs=40, heads=3, views=2, self_label_epochs=5
    )
    head = fit_head_on_embeddings(plain, views, config=cfg, encoder_sha256="abc")
    assert normalized_mutual_info_score(labels, head.assign(plain)) > 0.9
    assert head.encoder_sha256 == "abc" and head.encoder is None
    with pytest.raises(ValueError, match="do not match"):
        fit_head_on_embeddings(plain, views[:1], config=cfg)  # fewer views than asked for
    with pytest.raises(ValueError, match="do not match"):
        fit_head_on_embeddings(plain, views[:, :10], config=cfg)
    with pytest.raises(ValueError, match="needs the images"):
        fit_head_on_embeddings(plain, views, config=ClusterConfig(n_clusters=4, finetune_epochs=1))
    with pytest.raises(ValueError, match="too few"):
        fit_head_on_embeddings(plain[:5], views[:, :5], config=cfg)


class _Linear(EmbeddingModel):
    """A trainable encoder of 2x2 images: a linear map starting as 'the first 2 pixels'."""

    def __init__(self) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.num_classes, self.embedding_dim = 1, 2, 0, 2
        self.proj = torch.nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(2, 4))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(1))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return ModelOutput(embedding=self.embed(x))


def _blob_config(**overrides: Any) -> ClusterConfig:
    """A head for the 4 blobs: small and quick, fine-tuning 64 images a step."""
    base: dict[str, Any] = {"n_clusters": 4, "n_neighbours": 5, "epochs": 40, "heads": 3}
    return ClusterConfig(**{**base, "finetune_batch_size": 64, **overrides})


def test_finetuning_trains_a_copy_of_the_encoder_saved_with_the_head(tmp_path: Path) -> None:
    from latentsearch.augment import AugmentConfig

    rng = np.random.default_rng(0)
    pixels, labels = _blobs(60, rng)
    model = _Linear()
    original = model.proj.weight.detach().clone()
    views = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False, jitter_p=0.0)
    cfg = _blob_config(self_label_epochs=5, finetune_epochs=3, finetune_lr=1e-2)
    lines: list[str] = []
    head = fit_cluster_head(
        model, pixels, config=cfg, augment_config=views, encoder_sha256="abc", log=lines.append
    )
    assert sum("fine-tuning epoch" in line for line in lines) == 3  # the user sees progress
    assert torch.equal(model.proj.weight, original)  # the run's encoder is untouched
    assert head.encoder is not None
    assert not torch.equal(head.encoder.proj.weight, original)  # the copy was trained
    assigned = head.assign_images(pixels, model)
    assert normalized_mutual_info_score(labels, assigned) > 0.9
    assert any("finetune_scan_loss" in row for row in head.history)
    path = head.save(tmp_path / "cluster_head.pt")
    with pytest.raises(ClusterHeadError, match="fine-tuned encoder"):
        load_cluster_head(path, encoder_sha256="abc")  # needs the architecture to rebuild it
    again = load_cluster_head(path, encoder_sha256="abc", run_model=model)
    assert (again.assign_images(pixels, model) == assigned).all()
    with pytest.raises(ValueError, match="finetune_epochs"):
        ClusterConfig(finetune_epochs=-1)


def test_self_labelling_the_encoder_trains_the_copy_and_keeps_the_clusters(
    tmp_path: Path,
) -> None:
    from latentsearch.augment import AugmentConfig

    rng = np.random.default_rng(0)
    pixels, labels = _blobs(60, rng)
    model = _Linear()
    original = model.proj.weight.detach().clone()
    views = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False, jitter_p=0.0)
    cfg = _blob_config(
        self_label_epochs=2, confidence=0.9, finetune_lr=1e-3, finetune_self_label_epochs=3
    )
    lines: list[str] = []
    head = fit_cluster_head(
        model, pixels, config=cfg, augment_config=views, encoder_sha256="abc", log=lines.append
    )
    assert sum("self-labelling the encoder" in line for line in lines) == 3
    assert torch.equal(model.proj.weight, original)  # the run's encoder is untouched
    assert head.encoder is not None  # without SCAN fine-tuning, a copy is still made
    assert not torch.equal(head.encoder.proj.weight, original)
    rows = [row for row in head.history if "finetune_self_label_loss" in row]
    assert [row["epoch"] for row in rows] == [41, 42, 43]  # after the 40 SCAN epochs
    assert all(0.0 < row["confident"] <= 1.0 for row in rows)
    assigned = head.assign_images(pixels, model)
    assert normalized_mutual_info_score(labels, assigned) > 0.9
    again = load_cluster_head(head.save(tmp_path / "h.pt"), "abc", run_model=model)
    assert (again.assign_images(pixels, model) == assigned).all()
    with pytest.raises(ValueError, match="finetune_self_label_epochs"):
        ClusterConfig(finetune_self_label_epochs=-1)


def test_self_label_targets_weigh_clusters_by_their_inverse_share() -> None:
    from latentsearch.clusters.scan import confident_targets as _confident_targets

    prob = torch.tensor([[0.995, 0.005], [0.995, 0.005], [0.995, 0.005], [0.01, 0.99], [0.6, 0.4]])
    targets = _confident_targets(prob, ClusterConfig(n_clusters=2, confidence=0.99))
    assert targets is not None
    target, keep, weight = targets
    assert keep.tolist() == [0, 1, 2, 3]  # 0.6 is not sure enough
    assert target[keep].tolist() == [0, 0, 0, 1]
    counts = torch.tensor([3.0, 1.0])
    assert torch.allclose(weight * counts, torch.full((2,), 2.0))  # each cluster weighs 1/K
    unsure = torch.full((4, 2), 0.5)
    assert _confident_targets(unsure, ClusterConfig(n_clusters=2)) is None
