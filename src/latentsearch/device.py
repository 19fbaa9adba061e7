"""Picks the compute device."""

from __future__ import annotations

import torch

from latentsearch.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """Turns ``auto`` / ``cpu`` / ``cuda`` / ``mps`` into a device, checking availability.

    Raises:
        ConfigError: When the requested accelerator is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but no CUDA GPU is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", "mps was asked for but MPS is not available")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ConfigError("device", f"{name!r} is unknown: use auto, cpu, cuda or mps") from e
