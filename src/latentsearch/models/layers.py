"""Building blocks shared by the models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class UpsampleConv2d(nn.Module):
    """Nearest-neighbour ×2 upsampling followed by a 3×3 'same' convolution, computed cheaply.

    Mathematically identical to ``nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(cin,
    cout, 3, padding=1))`` and holding the same 3×3 weight, but it never materialises the
    upsampled tensor. Each of the four output phases (even/odd row × even/odd column) sees a
    2×2 window of the *input*, with a kernel made by summing rows/columns of the 3×3 kernel:
    along one axis, phase 0 uses ``[w0, w1 + w2]`` on ``x[i-1], x[i]`` and phase 1 uses
    ``[w0 + w1, w2]`` on ``x[i], x[i+1]``. That is 16 instead of 36 multiply-adds per input
    pixel and channel pair, which makes the study's decoder ~2× cheaper to train on a CPU.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def phase_kernels(self) -> torch.Tensor:
        """The four 2×2 kernels, stacked phase-major. Shape: (4 * out, in, 2, 2)."""
        w = self.weight
        # Collapse rows: phase 0 -> [w0, w1+w2], phase 1 -> [w0+w1, w2].
        rows = (
            torch.stack([w[:, :, 0], w[:, :, 1] + w[:, :, 2]], dim=2),
            torch.stack([w[:, :, 0] + w[:, :, 1], w[:, :, 2]], dim=2),
        )
        kernels = []
        for r in rows:  # r: (out, in, 2, 3)
            kernels.append(torch.stack([r[..., 0], r[..., 1] + r[..., 2]], dim=3))
            kernels.append(torch.stack([r[..., 0] + r[..., 1], r[..., 2]], dim=3))
        return torch.cat(kernels, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsamples and convolves.

        Args:
            x: Shape: (B, in, H, W).

        Returns:
            Shape: (B, out, 2H, 2W).
        """
        b, _, h, w = x.shape
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), self.phase_kernels(), self.bias.repeat(4))
        # y: (B, 4*out, H+1, W+1); phase (a, c) lives at offset (a, c) of its block.
        y = y.view(b, 2, 2, self.out_channels, h + 1, w + 1)
        phases = [[y[:, a, c, :, a : a + h, c : c + w] for c in (0, 1)] for a in (0, 1)]
        # Interleave: out[..., 2i+a, 2j+c] = phases[a][c][..., i, j].
        rows = [torch.stack(phases[a], dim=-1) for a in (0, 1)]  # (B, out, H, W, 2)
        out = torch.stack(rows, dim=3)  # (B, out, H, 2, W, 2)
        return out.reshape(b, self.out_channels, 2 * h, 2 * w)
