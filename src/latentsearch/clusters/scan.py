"""SCAN's steps: heads on frozen views, fine-tuning with the encoder, and self-labelling.

Every step draws its batch orders, neighbours and views from one generator, in the order
:mod:`latentsearch.clusters.training` calls them, so a seed gives the same head every time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentsearch.augment import AugmentConfig, augment
from latentsearch.clusters.config import ClusterConfig
from latentsearch.clusters.head import ClusterHeads, head_probabilities
from latentsearch.embedding import embed_images, to_tensor
from latentsearch.models.base import EmbeddingModel
from latentsearch.objectives import scan_loss
from latentsearch.precision import autocast


@dataclass
class Stage:
    """What every step of one head's training shares.

    Attributes:
        cfg: The head's settings.
        rng: The one generator of batch orders, sampled neighbours and views.
        history: Per-epoch losses; each step appends its epochs.
        say: Receives progress lines.
    """

    cfg: ClusterConfig
    rng: np.random.Generator
    history: list[dict[str, float]]
    say: Callable[[str], None]


@dataclass
class EncoderTuning:
    """The encoder copy the fine-tuning steps train, and the images they augment for it.

    Attributes:
        encoder: Trained in place.
        pixels: The images. Shape: (N, H, W, C), uint8.
        aug: Their augmentations.
        precision: Autocast precision of the encoder's forward passes.
    """

    encoder: EmbeddingModel
    pixels: np.ndarray
    aug: AugmentConfig
    precision: str

    @property
    def device(self) -> torch.device:
        """Where the encoder lives."""
        return next(self.encoder.parameters()).device

    def embed_augmented(self, index: np.ndarray) -> torch.Tensor:
        """Embeddings of fresh augmentations of the images at ``index``. Shape: (B, D)."""
        x = augment(to_tensor(self.pixels[index], self.device), self.aug)
        with autocast(self.precision, self.device):
            z = self.encoder.embed(x)
        return z.float()


def _batches(order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive batches of ``order``; a last one of a single item is skipped.

    BatchNorm cannot train on one item.
    """
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        if len(batch) >= 2:
            yield batch


def _pick_neighbours(
    neighbours: np.ndarray, anchors: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One of its mined neighbours per anchor, drawn uniformly. Shape: (B,)."""
    return neighbours[anchors, rng.integers(0, neighbours.shape[1], len(anchors))]


def _adam_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def train_heads(
    views: torch.Tensor, neighbours: np.ndarray, stage: Stage
) -> tuple[ClusterHeads, torch.Tensor]:
    """SCAN's step on frozen embeddings: ``cfg.heads`` heads, each anchor with a neighbour.

    Args:
        views: Augmented embeddings. Shape: (V, N, D).
        neighbours: Mined neighbour indices. Shape: (N, k).

    Returns:
        The heads and each one's mean SCAN loss over the last epoch. Shape of the loss: (H,).
    """
    cfg, rng = stage.cfg, stage.rng
    _, n, dim = views.shape
    heads = ClusterHeads(dim, cfg.n_clusters, cfg.heads, cfg.hidden)
    opt = torch.optim.Adam(heads.parameters(), lr=cfg.lr, weight_decay=1e-4)

    def view_batch(index: np.ndarray) -> torch.Tensor:
        which = torch.from_numpy(rng.integers(0, cfg.views, len(index)))
        return views[which, torch.from_numpy(index)]

    heads.train()
    per_head = torch.zeros(cfg.heads)
    for epoch in range(cfg.epochs):
        per_head.zero_()
        steps = 0
        for anchors in _batches(rng.permutation(n), cfg.batch_size):
            picked = _pick_neighbours(neighbours, anchors, rng)
            total, _ = scan_loss(
                heads(view_batch(anchors)), heads(view_batch(picked)), cfg.entropy_weight
            )
            _adam_step(opt, total.sum())
            per_head += total.detach()
            steps += 1
        per_head /= max(steps, 1)
        stage.history.append({"epoch": epoch + 1, "scan_loss": float(per_head.min())})
    return heads, per_head


def best_head(
    heads: ClusterHeads, per_head: torch.Tensor, say: Callable[[str], None]
) -> nn.Sequential:
    """The head with the lowest SCAN loss."""
    best = int(per_head.argmin())
    say(f"cluster head: SCAN loss {float(per_head[best]):.4f} (best of {len(per_head)} heads)")
    net = heads.heads[best]
    if not isinstance(net, nn.Sequential):  # ModuleList indexing loses the element type
        raise TypeError("cluster heads must be nn.Sequential")
    return net


def finetune(
    tuning: EncoderTuning, heads: ClusterHeads, neighbours: np.ndarray, stage: Stage
) -> torch.Tensor:
    """SCAN with the encoder trained: anchors and a mined neighbour each, freshly augmented.

    Anchors and neighbours go through the encoder as one batch (one BatchNorm batch), the
    heads score each pair with :func:`~latentsearch.objectives.scan_loss`, and both encoder
    and heads step with Adam.

    Args:
        tuning: The encoder (trained in place) and its images.
        heads: Trained in place.
        neighbours: Mined neighbour indices. Shape: (N, k).
        stage: Its ``say`` receives one line per epoch.

    Returns:
        Each head's mean SCAN loss over the last epoch. Shape: (H,).
    """
    cfg, rng, encoder = stage.cfg, stage.rng, tuning.encoder
    heads.to(tuning.device)
    params = [*encoder.parameters(), *heads.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.finetune_lr, weight_decay=1e-4)
    encoder.train()
    heads.train()
    per_head = torch.zeros(cfg.heads)
    for epoch in range(cfg.finetune_epochs):
        t0 = time.perf_counter()
        per_head.zero_()
        steps = 0
        for anchors in _batches(rng.permutation(len(tuning.pixels)), cfg.finetune_batch_size):
            picked = _pick_neighbours(neighbours, anchors, rng)
            logits = heads(tuning.embed_augmented(np.concatenate([anchors, picked])))
            total, _ = scan_loss(
                logits[:, : len(anchors)], logits[:, len(anchors) :], cfg.entropy_weight
            )
            _adam_step(opt, total.sum())
            per_head += total.detach().cpu()
            steps += 1
        per_head /= max(steps, 1)
        stage.history.append(
            {"epoch": cfg.epochs + epoch + 1, "finetune_scan_loss": float(per_head.min())}
        )
        stage.say(
            f"cluster head: fine-tuning epoch {epoch + 1}/{cfg.finetune_epochs}: SCAN loss "
            f"{float(per_head.min()):.4f}, {time.perf_counter() - t0:.0f}s"
        )
    heads.cpu()
    return per_head


def confident_targets(
    prob: torch.Tensor, cfg: ClusterConfig
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor] | None:
    """Self-labelling's targets: the confident predictions and their clusters' loss weights.

    Each cluster's weight is the inverse of its share of the confident images, so that large
    clusters do not swallow small ones.

    Args:
        prob: Cluster probabilities. Shape: (N, K).

    Returns:
        Every image's predicted cluster (N,), the indices of the confident ones (M,) and one
        weight per cluster (K,); None when fewer than two images are confident.
    """
    conf, target = prob.max(dim=1)
    keep = torch.nonzero(conf >= cfg.confidence).squeeze(1).numpy()
    if len(keep) < 2:
        return None
    counts = torch.bincount(target[keep], minlength=cfg.n_clusters).float()
    weight = torch.where(counts > 0, counts.sum() / (counts * cfg.n_clusters), 0.0)
    return target, keep, weight


def self_label(net: nn.Module, plain: np.ndarray, views: torch.Tensor, stage: Stage) -> None:
    """SCAN's self-labelling of the head alone: augmented views against confident predictions.

    Args:
        net: The kept head; trained in place.
        plain: Unaugmented embeddings, where the targets come from. Shape: (N, D).
        views: Augmented embeddings, what the head learns from. Shape: (V, N, D).
    """
    cfg, rng = stage.cfg, stage.rng
    if cfg.self_label_epochs <= 0:
        return
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr * 0.1, weight_decay=1e-4)
    first = cfg.epochs + cfg.finetune_epochs + cfg.finetune_self_label_epochs
    for epoch in range(cfg.self_label_epochs):
        targets = confident_targets(head_probabilities(net, plain), cfg)
        if targets is None:
            stage.say("cluster head: no confident predictions to self-label; skipped")
            return
        target, keep, weight = targets
        net.train()
        total, steps = 0.0, 0
        for idx in _batches(rng.permutation(keep), cfg.batch_size):
            which = torch.from_numpy(rng.integers(0, cfg.views, len(idx)))
            logits = net(views[which, torch.from_numpy(idx)])
            loss = F.cross_entropy(logits, target[idx], weight=weight)
            _adam_step(opt, loss)
            total += float(loss.detach())
            steps += 1
        stage.history.append(
            {
                "epoch": first + epoch + 1,
                "self_label_loss": total / max(steps, 1),
                "confident": float(len(keep)) / len(plain),
            }
        )
    stage.say(
        f"cluster head: self-labelled on {stage.history[-1]['confident']:.0%} confident images"
    )


def self_label_encoder(tuning: EncoderTuning, net: nn.Module, stage: Stage) -> None:
    """SCAN's self-labelling with the encoder trained too (its last step).

    Each epoch, the unaugmented images' confident predictions become targets, and encoder and
    head learn them by weighted cross-entropy from freshly augmented copies of those images.

    Args:
        tuning: The encoder (trained in place) and its images.
        net: The kept head; trained in place.
        stage: Its ``say`` receives one line per epoch.
    """
    cfg, rng, encoder = stage.cfg, stage.rng, tuning.encoder
    if cfg.finetune_self_label_epochs <= 0:
        return
    device = tuning.device
    net.to(device)
    params = [*encoder.parameters(), *net.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.finetune_lr, weight_decay=1e-4)
    first = cfg.epochs + cfg.finetune_epochs
    try:
        for epoch in range(cfg.finetune_self_label_epochs):
            t0 = time.perf_counter()
            encoder.eval()
            prob = head_probabilities(net, embed_images(encoder, tuning.pixels))
            targets = confident_targets(prob, cfg)
            if targets is None:
                stage.say(
                    "cluster head: no confident predictions to self-label the encoder; skipped"
                )
                return
            target, keep, weight = targets
            target, weight = target.to(device), weight.to(device)
            encoder.train()
            net.train()
            total, steps = 0.0, 0
            for idx in _batches(rng.permutation(keep), cfg.finetune_batch_size):
                logits = net(tuning.embed_augmented(idx))
                loss = F.cross_entropy(logits, target[torch.from_numpy(idx)], weight=weight)
                _adam_step(opt, loss)
                total += float(loss.detach())
                steps += 1
            confident = float(len(keep)) / len(tuning.pixels)
            used = int((weight > 0).sum())
            stage.history.append(
                {
                    "epoch": first + epoch + 1,
                    "finetune_self_label_loss": total / max(steps, 1),
                    "confident": confident,
                    "confident_clusters": float(used),
                }
            )
            # A cluster with no confident image gets no target and can empty: say so.
            stage.say(
                f"cluster head: self-labelling the encoder, epoch {epoch + 1}/"
                f"{cfg.finetune_self_label_epochs}: loss {total / max(steps, 1):.4f} on "
                f"{confident:.0%} confident images in {used} of {cfg.n_clusters} clusters, "
                f"{time.perf_counter() - t0:.0f}s"
            )
    finally:
        net.cpu()
