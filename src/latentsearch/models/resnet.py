"""A small ResNet encoder with a projection head, for contrastive learning on a CPU budget.

CIFAR-style ResNet (3×3 stem, no initial max-pool), one basic block per stage by default (more
with ``stage_blocks``), width doubling at each stride-2 stage until the map is 4×4. At
``width=32`` it has ~1.2 M parameters and trains at a few hundred 32×32 images/s on two CPU
cores; ``width=64`` suits a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentsearch.errors import LatentsearchError
from latentsearch.models.base import EmbeddingModel, ModelOutput
from latentsearch.models.histograms import LBP_CODES, check_stats, hsv_histogram, lbp_histogram


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual connection (projection shortcut when the shape changes).

    Args:
        cin: Input channels.
        cout: Output channels.
        stride: 1 or 2.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, cin, H, W) -> (B, cout, H / stride, W / stride)."""
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


def stages(image_size: int) -> int:
    """Stages of ``SmallResNet`` for ``image_size`` px: one, then one per halving to 4×4.

    32 px: four stages (32, 16, 8, 4); 64 px: five; 8 px: two; 4 px: one.
    """
    n, s = 1, image_size
    while s > 4:
        n, s = n + 1, (s + 1) // 2
    return n


def _stage_blocks(value: int | list[int], n_stages: int) -> list[int]:
    """``stage_blocks`` as one count per stage, checked."""
    counts = [value] * n_stages if isinstance(value, int) else list(value)
    if len(counts) != n_stages:
        raise LatentsearchError(
            f"resnet-s: stage_blocks has {len(counts)} entries, but this image size has "
            f"{n_stages} stages; give one number per stage, or one number for all"
        )
    for n in counts:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise LatentsearchError(
                f"resnet-s: stage_blocks must be positive integers, got {value!r}"
            )
    return counts


class SmallResNet(EmbeddingModel):
    """ResNet encoder → global average pool (the embedding) → MLP projector (for the loss).

    Args:
        in_channels: Image channels.
        image_size: Input height and width (any size ≥ 4).
        num_classes: Size of an optional hint head on the embedding (0: none).
        width: Channels of the first stage.
        projection_dim: Output width of the projection head.
        normalize: Scale embeddings to unit length, so that Euclidean search and KMeans see
            cosine geometry, the geometry the contrastive loss trains. It has no weights, so
            it can be switched for an already trained checkpoint.
        stage_blocks: Basic blocks per stage: one number for every stage, or one per stage
            (``stages(image_size)`` of them; 32 px: four). Extra blocks keep their stage's
            width and map size, so blocks in the late, small-map stages add depth cheaply.
        colour_weight: Share of the squared distance given to the input's HSV histogram
            (:mod:`latentsearch.models.histograms`), appended to the unit embedding; 0: none. Like
            ``normalize`` it has no weights (only ``embedding_dim`` grows, by
            ``colour_bins ** 3``); it needs ``normalize``.
        texture_weight: The same for the histogram of local binary patterns (256 more
            dimensions).
        colour_bins: Histogram bins per HSV channel.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 0,
        width: int = 32,
        projection_dim: int = 128,
        normalize: bool = True,
        stage_blocks: int | list[int] = 1,
        colour_weight: float = 0.0,
        texture_weight: float = 0.0,
        colour_bins: int = 8,
    ) -> None:
        super().__init__()
        check_stats(colour_weight, texture_weight, colour_bins, in_channels)
        if (colour_weight or texture_weight) and not normalize:
            raise LatentsearchError("resnet-s: colour and texture parts need normalize=True")
        for name, value in (("width", width), ("projection_dim", projection_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LatentsearchError(
                    f"resnet-s: {name} must be a positive integer, got {value!r}"
                )
        if image_size < 4:
            raise LatentsearchError(
                f"resnet-s needs images of at least 4×4 pixels, got {image_size}"
            )
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.normalize = normalize
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        per_stage = _stage_blocks(stage_blocks, stages(image_size))
        blocks: list[nn.Module] = []
        c = width
        for stage, n_blocks in enumerate(per_stage):
            # The first stage keeps the image's size; each later one halves it, doubling width.
            cout, stride = (c, 1) if stage == 0 else (c * 2, 2)
            blocks.append(BasicBlock(c, cout, stride))
            blocks.extend(BasicBlock(cout, cout, 1) for _ in range(n_blocks - 1))
            c = cout
        self.blocks = nn.Sequential(*blocks)
        self.colour_weight = float(colour_weight)
        self.texture_weight = float(texture_weight)
        self.colour_bins = colour_bins
        self.embedding_dim = (
            c
            + (colour_bins**3 if colour_weight > 0 else 0)
            + (LBP_CODES if texture_weight > 0 else 0)
        )
        self.projector = nn.Sequential(
            nn.Linear(c, c, bias=False),
            nn.BatchNorm1d(c),
            nn.ReLU(inplace=True),
            nn.Linear(c, projection_dim),
        )
        self.head = nn.Linear(c, num_classes) if num_classes > 0 else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features, unnormalised. Shape: (B, C, H, W) -> (B, embedding_dim)."""
        return self.blocks(self.stem(x)).mean(dim=(2, 3))

    def _embedding(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Features ``h`` (B, C) of images ``x`` (B, 3, H, W) -> the embedding (B, D)."""
        if not self.normalize:
            return h
        unit = F.normalize(h, dim=1)
        wc, wt = self.colour_weight, self.texture_weight
        if wc == 0 and wt == 0:
            return unit
        parts = [unit.float() * (1 - wc - wt) ** 0.5]
        if wc > 0:
            parts.append(hsv_histogram(x, self.colour_bins) * wc**0.5)
        if wt > 0:
            parts.append(lbp_histogram(x) * wt**0.5)
        return torch.cat(parts, dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding used for search and clustering.

        Shape: (B, C, H, W) -> (B, embedding_dim), unit length when ``normalize``: the
        normalised features, followed by the colour and texture parts when their weights
        are above 0.
        """
        return self._embedding(self.features(x), x)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """Encodes, projects and (with a head) classifies.

        Args:
            x: Images in [0, 1]. Shape: (B, C, H, W).

        Returns:
            ``embedding`` (B, D) as ``embed`` gives it; ``projection`` (B, P) and ``logits``
            (B, K) or None, both read from the unnormalised features; no reconstruction.
        """
        h = self.features(x)
        logits = self.head(h) if self.head is not None else None
        emb = self._embedding(h, x)
        return ModelOutput(embedding=emb, projection=self.projector(h), logits=logits)
