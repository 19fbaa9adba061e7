"""Shared model contract: every model exposes ``embed`` and ``embedding_dim``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ModelOutput:
    """What a model's forward pass returns.

    Attributes:
        embedding: Pooled representation used for retrieval. Shape: (B, D).
        reconstruction: Decoded image in [0, 1], or None for encoder-only models.
            Shape: (B, C, H, W).
        logits: Class scores from a hint head, or None without one. Shape: (B, K).
        projection: Output of a projection head for contrastive objectives, or None.
            Shape: (B, P).
    """

    embedding: torch.Tensor
    reconstruction: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    projection: torch.Tensor | None = None


class EmbeddingModel(nn.Module):
    """Base class: subclasses set ``embedding_dim`` and implement ``forward``."""

    embedding_dim: int
    in_channels: int
    image_size: int
    num_classes: int

    def forward(self, x: torch.Tensor) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeds a batch of images.

        Args:
            x: Images scaled to [0, 1]. Shape: (B, C, H, W).

        Returns:
            Embeddings. Shape: (B, embedding_dim).
        """
        return self.forward(x).embedding
