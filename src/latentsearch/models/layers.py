"""Building blocks shared by the models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FORMS = ("auto", "fused", "upsample")

# The faster form per (device type, compute dtype), from benchmarks/bench_train.py
# (results/train_throughput.json, seed-ae training steps, channels-last, batch 32). Pairs not
# listed take "upsample": the plain form is what cuDNN and other back ends are tuned for.
FASTEST_FORM: dict[tuple[str, torch.dtype], str] = {
    ("cpu", torch.float32): "fused",
    ("cpu", torch.bfloat16): "upsample",
}


def fastest_form(x: torch.Tensor) -> str:
    """The form :data:`FASTEST_FORM` lists for ``x``'s device and the dtype convolutions run in."""
    device = x.device.type
    dtype = x.dtype
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    return FASTEST_FORM.get((device, dtype), "upsample")


class UpsampleConv2d(nn.Module):
    """Nearest-neighbour ×2 upsampling followed by a 3×3 'same' convolution, computed cheaply.

    Mathematically identical to ``nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(cin,
    cout, 3, padding=1))`` and holding the same 3×3 weight, but it never materialises the
    upsampled tensor. Each of the four output phases (even/odd row × even/odd column) sees a
    2×2 window of the *input*, with a kernel made by summing rows/columns of the 3×3 kernel:
    along one axis, phase 0 uses ``[w0, w1 + w2]`` on ``x[i-1], x[i]`` and phase 1 uses
    ``[w0 + w1, w2]`` on ``x[i], x[i+1]``. That is 16 instead of 36 multiply-adds per input
    pixel and channel pair.

    Fewer multiply-adds is not always faster: oneDNN's bf16 convolution on an upsampled map
    beat the phase split's four small convolutions and interleave (benchmarks/bench_train.py).
    So ``form="auto"`` computes each call the way :data:`FASTEST_FORM` lists as measured fastest
    for its device and compute dtype (under autocast, the autocast dtype); ``"fused"`` and
    ``"upsample"`` force one. Both forms hold the same weight, so checkpoints do not depend on it.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        form: ``auto``, ``fused`` or ``upsample``.
    """

    def __init__(self, in_channels: int, out_channels: int, form: str = "auto") -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.form = form
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
        form = self.form if self.form != "auto" else fastest_form(x)
        if form == "upsample":
            up = F.interpolate(x, scale_factor=2.0, mode="nearest")
            return F.conv2d(up, self.weight, self.bias, padding=1)
        return self._fused(x)

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        """The phase-split computation. Shape: (B, in, H, W) -> (B, out, 2H, 2W)."""
        b, _, h, w = x.shape
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), self.phase_kernels(), self.bias.repeat(4))
        # y: (B, 4*out, H+1, W+1); phase (a, c) lives at offset (a, c) of its block.
        y = y.view(b, 2, 2, self.out_channels, h + 1, w + 1)
        phases = [[y[:, a, c, :, a : a + h, c : c + w] for c in (0, 1)] for a in (0, 1)]
        # Interleave: out[..., 2i+a, 2j+c] = phases[a][c][..., i, j].
        rows = [torch.stack(phases[a], dim=-1) for a in (0, 1)]  # (B, out, H, W, 2)
        out = torch.stack(rows, dim=3)  # (B, out, H, 2, W, 2)
        return out.reshape(b, self.out_channels, 2 * h, 2 * w)
