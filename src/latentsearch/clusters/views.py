"""What a head learns from: each image's nearest neighbours and augmented views' embeddings."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from latentsearch.augment import AugmentConfig, augment
from latentsearch.embedding import to_tensor
from latentsearch.models.base import EmbeddingModel
from latentsearch.objectives import ContrastiveObjective
from latentsearch.runs import TrainConfig


def mine_neighbours(embeddings: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """The ``k`` nearest other rows of each row by cosine similarity.

    Args:
        embeddings: Shape: (N, D).
        k: Neighbours per row (at most N - 1).

    Returns:
        Indices. Shape: (N, k).
    """
    x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    x = F.normalize(x, dim=1)
    k = min(k, len(x) - 1)
    out = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), block):
        sim = x[start : start + block] @ x.T
        rows = torch.arange(start, start + len(sim))
        sim[torch.arange(len(sim)), rows] = -float("inf")  # not its own neighbour
        out[start : start + len(sim)] = sim.topk(k, dim=1).indices.numpy()
    return out


@torch.no_grad()
def embed_views(
    model: EmbeddingModel,
    pixels: np.ndarray,
    views: int,
    augment_config: AugmentConfig,
    *,
    batch_size: int = 512,
) -> np.ndarray:
    """Embeddings of ``views`` random augmentations of every image (frozen model, eval mode).

    Args:
        pixels: Shape: (N, H, W, C), uint8.

    Returns:
        Shape: (views, N, D), float32.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.empty((views, len(pixels), model.embedding_dim), dtype=np.float32)
    try:
        for v in range(views):
            for start in range(0, len(pixels), batch_size):
                x = to_tensor(pixels[start : start + batch_size], device)
                out[v, start : start + len(x)] = model.embed(augment(x, augment_config)).float()
    finally:
        model.train(was_training)
    return out


def view_augmentations(config: TrainConfig) -> AugmentConfig:
    """The augmentations of the views a head learns from, for a run trained with ``config``.

    A contrastive run's own augmentations (its embedding is invariant to them); any other
    encoder was not trained for invariance, so it gets only mild crops.
    """
    if config.objective == "contrastive":
        return ContrastiveObjective(**config.objective_kwargs).augment
    return AugmentConfig(crop_scale=(0.6, 1.0), jitter_p=0.0, grayscale_p=0.0)
