"""Statistics parts for embeddings: colour (HSV histogram) and texture (LBP histogram).

A contrastive encoder trained at 32 px with colour jitter learns to ignore colour and fine
texture, and in collections of photographs these are often what tells images apart: the
palette of a scene, the grain of a painting, the pattern a grey copy still shares with its
original. The histograms have no weights; :class:`~latentsearch.models.resnet.SmallResNet`
appends them to its unit embedding with ``colour_weight`` and ``texture_weight``, so the squared
Euclidean distance between two embeddings becomes
``(1 - wc - wt) |a - b|^2 + wc |ca - cb|^2 + wt |ta - tb|^2``: a weighted sum of the learned
distance and the Hellinger distances between the histograms. Both are square-rooted
frequencies, so each part has unit length.
"""

from __future__ import annotations

import torch

from latentsearch.errors import LatentsearchError


def check_stats(
    colour_weight: float, texture_weight: float, colour_bins: int, in_channels: int
) -> None:
    """Refuses statistics parts that cannot be computed.

    Raises:
        LatentsearchError: Weights outside [0, 1) or summing to 1 or more, bins outside
            [2, 32], or a colour part for grey images.
    """
    for name, value in (("colour_weight", colour_weight), ("texture_weight", texture_weight)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise LatentsearchError(f"{name} must be in [0, 1), got {value!r}")
    if colour_weight + texture_weight >= 1:
        raise LatentsearchError(
            f"colour_weight + texture_weight must be below 1 (the learned part keeps the rest), "
            f"got {colour_weight} + {texture_weight}"
        )
    if (
        isinstance(colour_bins, bool)
        or not isinstance(colour_bins, int)
        or not (2 <= colour_bins <= 32)
    ):
        raise LatentsearchError(f"colour_bins must be an integer from 2 to 32, got {colour_bins!r}")
    if colour_weight > 0 and in_channels != 3:
        raise LatentsearchError(
            f"a colour part needs three-channel images, got {in_channels}; use colour_weight=0"
        )


def hsv_histogram(x: torch.Tensor, bins: int = 8) -> torch.Tensor:
    """Joint hue × saturation × value histogram of each image, as square-rooted frequencies.

    The square root (the Hellinger form) gives each histogram unit length, so the squared
    Euclidean distance between two of them is twice the squared Hellinger distance, in [0, 2].

    Args:
        x: RGB images in [0, 1]. Shape: (B, 3, H, W).
        bins: Bins per channel (``bins ** 3`` in all).

    Returns:
        Shape: (B, bins ** 3), float32, each row of unit length.
    """
    x = x.float().clamp(0.0, 1.0)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    value, _ = x.max(dim=1)
    low, _ = x.min(dim=1)
    spread = value - low
    safe = spread.clamp_min(1e-12)
    saturation = torch.where(value > 0, spread / value.clamp_min(1e-12), torch.zeros_like(value))
    # Hue in turns: the sector of the largest channel plus the offset within it.
    hue = torch.where(
        value == r,
        torch.remainder((g - b) / safe, 6.0),
        torch.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = torch.where(spread > 0, hue / 6.0, torch.zeros_like(hue))

    def level(channel: torch.Tensor) -> torch.Tensor:
        return (channel * bins).long().clamp(0, bins - 1)

    index = ((level(hue) * bins + level(saturation)) * bins + level(value)).flatten(1)
    counts = torch.zeros(x.shape[0], bins**3, dtype=torch.float32, device=x.device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float32))
    return (counts / index.shape[1]).sqrt()


LBP_CODES = 256
"""Local binary patterns of the 8 neighbours at distance 1: 2^8 codes."""

_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def lbp_histogram(x: torch.Tensor) -> torch.Tensor:
    """Histogram of local binary patterns of the luminance, as square-rooted frequencies.

    Each inner pixel gets an 8-bit code, one bit per neighbour at least as bright as itself
    (Ojala et al., 2002). The histogram describes texture and is unchanged by any monotone
    change of brightness or contrast, and by turning a colour image grey.

    Args:
        x: Images in [0, 1], RGB or grey. Shape: (B, C, H, W), H and W at least 3.

    Returns:
        Shape: (B, 256), float32, each row of unit length.
    """
    x = x.float()
    if x.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
        y = (x * weights).sum(dim=1)
    else:
        y = x[:, 0]
    h, w = y.shape[1:]
    centre = y[:, 1 : h - 1, 1 : w - 1]
    code = torch.zeros_like(centre, dtype=torch.long)
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        neighbour = y[:, 1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]
        code |= (neighbour >= centre).long() << bit
    index = code.flatten(1)
    counts = torch.zeros(x.shape[0], LBP_CODES, dtype=torch.float32, device=x.device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float32))
    return (counts / index.shape[1]).sqrt()
