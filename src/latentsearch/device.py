"""Picks the compute device."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """Turns ``auto`` / ``cpu`` / ``cuda`` / ``mps`` into a device, checking availability.

    Raises:
        ValueError: When the requested accelerator is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was asked for but MPS is not available")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or mps") from e
