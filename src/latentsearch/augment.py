"""Batched, seeded image augmentations on tensors, for contrastive objectives.

Each transform draws its random parameters per image from the global torch RNG (which the
training loop seeds per epoch), so a run is reproducible and resumable. Everything is a few
tensor ops over the whole batch: one ``grid_sample`` for crop + flip, arithmetic for colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """SimCLR-style augmentation strengths (defaults: SimCLR's CIFAR-10 recipe)."""

    crop_scale: tuple[float, float] = (0.2, 1.0)  # area range of the random resized crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect-ratio range of the crop
    flip: bool = True  # random horizontal flip (off for data where mirroring changes meaning)
    jitter_p: float = 0.8  # probability of colour jitter
    brightness: float = 0.4  # multiplicative brightness range ±
    contrast: float = 0.4  # contrast range ±
    saturation: float = 0.4  # saturation range ± (colour images only)
    grayscale_p: float = 0.2  # probability of dropping colour (colour images only)
    # Hue rotation range ± in turns (colour images only). SimCLR's CIFAR-10 recipe uses 0.1;
    # the default 0 keeps runs stored before it existed training as they did.
    hue: float = 0.0


def _uniform(n: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
    return torch.rand(n, device=device) * (hi - lo) + lo


def random_resized_crop(
    x: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float], flip: bool
) -> torch.Tensor:
    """Crops a random box of each image and resizes it back to full size, maybe mirrored.

    Args:
        x: Shape: (B, C, H, W).

    Returns:
        Shape: (B, C, H, W).
    """
    b = x.shape[0]
    dev = x.device
    area = _uniform(b, *scale, dev)
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), dev)
    r = torch.exp(log_r)
    # Box size as a fraction of the side; clamp so the box fits inside the image.
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(b, device=dev) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, device=dev) * 2 - 1) * (1 - h)
    sx = w
    if flip:
        sx = torch.where(torch.rand(b, device=dev) < 0.5, -w, w)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


# RGB -> YIQ (NTSC): Y is luma, the (I, Q) plane holds the hue as an angle.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotates each colour image's hue by an angle, keeping its luma.

    The rotation turns the chroma plane of YIQ, a linear colour space, so it is one 3×3 matrix
    per image: close to HSV's hue shift (what torchvision does) at a fraction of the cost.

    Args:
        x: RGB images in [0, 1]. Shape: (B, 3, H, W).
        turns: Hue rotation per image, in turns (1 = 360°). Shape: (B,).

    Returns:
        Shape: (B, 3, H, W); not clamped.
    """
    to_yiq = _RGB_TO_YIQ.to(device=x.device)
    from_yiq = _YIQ_TO_RGB.to(device=x.device)
    angle = turns.to(torch.float32) * (2 * math.pi)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(x.shape[0], 3, 3, device=x.device)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    m = (from_yiq @ rot @ to_yiq).to(x.dtype)  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x)


def color_jitter(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Random brightness, contrast, saturation and hue, applied with probability ``jitter_p``.

    Args:
        x: Images in [0, 1]. Shape: (B, C, H, W).

    Returns:
        Images in [0, 1]. Shape: (B, C, H, W).
    """
    b = x.shape[0]
    dev = x.device
    apply = (torch.rand(b, device=dev) < cfg.jitter_p).view(b, 1, 1, 1)

    def factor(strength: float) -> torch.Tensor:
        return _uniform(b, 1 - strength, 1 + strength, dev).view(b, 1, 1, 1)

    y = x * factor(cfg.brightness)
    mean = _grey(y).mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * factor(cfg.contrast) + mean
    if x.shape[1] == 3:
        g = _grey(y)
        y = (y - g) * factor(cfg.saturation) + g
        if cfg.hue > 0:
            y = rotate_hue(y, _uniform(b, -cfg.hue, cfg.hue, dev))
    y = y.clamp(0.0, 1.0)
    return torch.where(apply, y, x)


def random_grayscale(x: torch.Tensor, p: float) -> torch.Tensor:
    """Replaces each colour image by its luma with probability ``p``. Shape: (B, C, H, W)."""
    if x.shape[1] == 1 or p <= 0:
        return x
    drop = (torch.rand(x.shape[0], device=x.device) < p).view(-1, 1, 1, 1)
    return torch.where(drop, _grey(x).expand_as(x), x)


def augment(x: torch.Tensor, cfg: AugmentConfig | None = None) -> torch.Tensor:
    """One random view of every image: crop + flip, colour jitter, grayscale.

    Args:
        x: Images in [0, 1]. Shape: (B, C, H, W).
        cfg: Strengths (default: ``AugmentConfig()``).

    Returns:
        Augmented images in [0, 1], same shape and memory format as ``x``.
    """
    cfg = cfg or AugmentConfig()
    y = random_resized_crop(x, cfg.crop_scale, cfg.crop_ratio, cfg.flip)
    y = color_jitter(y.clamp(0.0, 1.0), cfg)
    y = random_grayscale(y, cfg.grayscale_p)
    return y.contiguous(memory_format=torch.channels_last)
