"""The two ways to train a SCAN head: from images (frozen or fine-tuned encoder), or from
embeddings computed beforehand (frozen encoder)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch

from latentsearch.augment import AugmentConfig
from latentsearch.clusters.config import ClusterConfig
from latentsearch.clusters.head import ClusterHead
from latentsearch.clusters.scan import (
    EncoderTuning,
    Stage,
    best_head,
    finetune,
    self_label,
    self_label_encoder,
    train_heads,
)
from latentsearch.clusters.views import embed_views, mine_neighbours
from latentsearch.embedding import embed_images
from latentsearch.errors import LatentsearchError
from latentsearch.models.base import EmbeddingModel


def fit_cluster_head(
    model: EmbeddingModel,
    pixels: np.ndarray,
    *,
    config: ClusterConfig | None = None,
    augment_config: AugmentConfig | None = None,
    encoder_sha256: str = "",
    precision: str = "fp32",
    log: Callable[[str], None] | None = None,
) -> ClusterHead:
    """Trains a SCAN head on the embeddings of ``pixels`` (and the encoder, if asked).

    Args:
        model: The trained encoder (not modified; fine-tuning trains a copy).
        pixels: The images to learn clusters from, e.g. the training images.
            Shape: (N, H, W, C), uint8.
        config: Head settings (default ``ClusterConfig()``).
        augment_config: The views' augmentations (default: the run's contrastive ones).
        encoder_sha256: Recorded so that a head is never used with other weights.
        precision: Autocast precision of the fine-tuning passes ("fp32", "bf16", "fp16").
        log: Receives one line per stage.

    Returns:
        The head with the lowest SCAN loss, after self-labelling.

    Raises:
        LatentsearchError: Fewer images than ``2 * n_clusters``.
    """
    cfg = config or ClusterConfig()
    _check_enough_images(len(pixels), cfg)
    t0 = time.perf_counter()
    aug = augment_config or AugmentConfig()
    stage = _start(cfg, log)
    plain = embed_images(model, pixels)
    neighbours = mine_neighbours(plain, cfg.n_neighbours)
    stage.say(f"cluster head: mined {neighbours.shape[1]} neighbours of {len(plain):,} images")
    views = torch.from_numpy(embed_views(model, pixels, cfg.views, aug))
    stage.say(f"cluster head: embedded {cfg.views} augmented views per image")
    heads, per_head = train_heads(views, neighbours, stage)
    tuning = EncoderTuning(copy.deepcopy(model), pixels, aug, precision) if cfg.finetunes else None
    if tuning is not None and cfg.finetune_epochs > 0:
        per_head = finetune(tuning, heads, neighbours, stage)
        stage.say(
            f"cluster head: fine-tuned the encoder with the heads for {cfg.finetune_epochs} epochs"
        )
    net = best_head(heads, per_head, stage.say)
    encoder: EmbeddingModel | None = None
    if tuning is not None:
        self_label_encoder(tuning, net, stage)
        encoder = tuning.encoder.eval()
        # The head's own self-labelling then reads the fine-tuned encoder's embeddings.
        plain = embed_images(encoder, pixels)
        views = torch.from_numpy(embed_views(encoder, pixels, cfg.views, aug))
    self_label(net, plain, views, stage)
    return _finished(net, stage, encoder_sha256, t0, encoder)


def fit_head_on_embeddings(
    plain: np.ndarray,
    views: np.ndarray,
    *,
    config: ClusterConfig | None = None,
    encoder_sha256: str = "",
    log: Callable[[str], None] | None = None,
) -> ClusterHead:
    """The frozen-encoder SCAN head from embeddings computed beforehand.

    :func:`fit_cluster_head` without fine-tuning is this after embedding the images; given
    the embeddings, several head settings can be compared without embedding again.

    Args:
        plain: Unaugmented embeddings, where neighbours and self-labels come from.
            Shape: (N, D).
        views: Embeddings of augmented copies, what the head learns from. Shape: (V, N, D).
        config: Head settings; ``views`` must be at least ``config.views``, and fine-tuning
            is refused (it needs the images).
        encoder_sha256: Recorded so that a head is never used with other weights.
        log: Receives one line per stage.

    Returns:
        The head with the lowest SCAN loss, after self-labelling.

    Raises:
        LatentsearchError: Mismatched shapes, too few views or images, or fine-tuning asked for.
    """
    cfg = config or ClusterConfig()
    if cfg.finetunes:
        raise LatentsearchError("fine-tuning needs the images: use fit_cluster_head")
    if views.ndim != 3 or views.shape[1:] != plain.shape or len(views) < cfg.views:
        raise LatentsearchError(
            f"views of shape {views.shape} do not match {cfg.views} views of embeddings of "
            f"shape {plain.shape}"
        )
    _check_enough_images(len(plain), cfg)
    t0 = time.perf_counter()
    stage = _start(cfg, log)
    neighbours = mine_neighbours(plain, cfg.n_neighbours)
    view_tensor = torch.from_numpy(np.ascontiguousarray(views[: cfg.views], dtype=np.float32))
    heads, per_head = train_heads(view_tensor, neighbours, stage)
    net = best_head(heads, per_head, stage.say)
    self_label(net, plain, view_tensor, stage)
    return _finished(net, stage, encoder_sha256, t0)


def _check_enough_images(n: int, cfg: ClusterConfig) -> None:
    if n < 2 * cfg.n_clusters:
        raise LatentsearchError(
            f"{n} images are too few for {cfg.n_clusters} clusters (need at least "
            f"{2 * cfg.n_clusters})"
        )


def _start(cfg: ClusterConfig, log: Callable[[str], None] | None) -> Stage:
    """Seeds torch (the heads' weights, augmentations) and the generator every step draws from."""
    torch.manual_seed(cfg.seed)
    say = log or (lambda line: None)
    return Stage(cfg=cfg, rng=np.random.default_rng(cfg.seed), history=[], say=say)


def _finished(
    net: torch.nn.Sequential,
    stage: Stage,
    encoder_sha256: str,
    started: float,
    encoder: EmbeddingModel | None = None,
) -> ClusterHead:
    """The trained head, in eval mode, timed from ``started`` (a ``perf_counter`` value)."""
    return ClusterHead(
        net=net.eval(),
        config=stage.cfg,
        encoder_sha256=encoder_sha256,
        history=stage.history,
        seconds=time.perf_counter() - started,
        encoder=encoder,
    )
