"""An improved convolutional autoencoder with a compact dense bottleneck.

Differences from the study's model, each aimed at a latent space that clusters: two convs per
resolution, strided downsampling to a 4×4 (or smaller) map, and a small dense bottleneck (64-d
by default) that *is* the embedding, so the decoder cannot bypass it through spatial detail.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentsearch.errors import LatentsearchError
from latentsearch.models.base import EmbeddingModel, ModelOutput


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _stages(image_size: int) -> int:
    """Number of stride-2 stages that bring ``image_size`` down to at most 4 pixels."""
    n, s = 0, image_size
    while s > 4:
        s = (s + 1) // 2
        n += 1
    return n


class ConvAutoencoder(EmbeddingModel):
    """Conv encoder → dense bottleneck → conv decoder, for any square input size.

    Args:
        in_channels: Image channels.
        image_size: Input height and width (any size ≥ 4).
        num_classes: Size of the optional hint head on the embedding (0: none).
        embedding_dim: Width of the bottleneck.
        width: Channels of the first stage; each later stage doubles it (capped at 8×).
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 0,
        embedding_dim: int = 64,
        width: int = 32,
    ) -> None:
        super().__init__()
        if image_size < 4:
            raise LatentsearchError(
                f"conv-ae needs images of at least 4×4 pixels, got {image_size}"
            )
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        n = _stages(image_size)
        chans = [min(width * 2**i, width * 8) for i in range(n + 1)]
        enc: list[nn.Module] = [_block(in_channels, chans[0], 1)]
        enc += [_block(chans[i], chans[i + 1], 2) for i in range(n)]
        self.encoder = nn.Sequential(*enc)
        self.grid = image_size
        for _ in range(n):
            self.grid = (self.grid + 1) // 2
        flat = chans[-1] * self.grid * self.grid
        self.to_latent = nn.Linear(flat, embedding_dim)
        self.from_latent = nn.Sequential(nn.Linear(embedding_dim, flat), nn.ReLU(inplace=True))
        dec: list[nn.Module] = []
        for i in reversed(range(n)):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), _block(chans[i + 1], chans[i], 1)]
        self.decoder = nn.Sequential(*dec)
        self.to_pixels = nn.Conv2d(chans[0], in_channels, 3, padding=1)
        self.head = nn.Linear(embedding_dim, num_classes) if num_classes > 0 else None
        self._chans_last = chans[-1]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, C, H, W) -> (B, embedding_dim)."""
        return self.to_latent(self.encoder(x).flatten(1))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """Encodes to the bottleneck, decodes and (with a head) classifies.

        Args:
            x: Images in [0, 1]. Shape: (B, C, H, W).

        Returns:
            ``embedding`` (B, D), ``reconstruction`` (B, C, H, W), ``logits`` (B, K) or None.
        """
        z = self.embed(x)
        h = self.from_latent(z).view(-1, self._chans_last, self.grid, self.grid)
        h = self.to_pixels(self.decoder(h))
        if h.shape[-1] != self.image_size:
            # Odd sizes (e.g. 28 → 4 → 32) decode slightly larger: resample back.
            h = F.interpolate(h, size=(self.image_size, self.image_size), mode="bilinear")
        recon = torch.sigmoid(h)
        logits = self.head(z) if self.head is not None else None
        return ModelOutput(embedding=z, reconstruction=recon, logits=logits)
