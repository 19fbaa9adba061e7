"""Numeric precision of training: fp32, or mixed precision where the hardware has it.

``auto`` picks bf16 autocast on CPUs with native bf16 arithmetic (AVX-512 BF16, AMX, Arm's
BF16 extension), bf16 on CUDA GPUs that support it and fp16 (with loss scaling) on older ones,
and fp32 everywhere else. Asking for a precision the hardware lacks is an error, not a silent
slowdown: emulated bf16 on a CPU without it is several times slower than fp32.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from latentsearch.errors import LatentsearchError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionError(LatentsearchError):
    """The requested precision is not available on this device."""


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (not emulated in fp32 by oneDNN)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    native = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    try:
        return native and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(name: str, device: torch.device) -> str:
    """Turns a requested precision into the one a run will use on ``device``.

    Args:
        name: One of ``PRECISIONS``.
        device: Where the run trains.

    Returns:
        ``fp32``, ``bf16`` or ``fp16``.

    Raises:
        PrecisionError: The device cannot run the requested precision.
    """
    if name not in PRECISIONS:
        raise PrecisionError(f"unknown precision {name!r}; choose one of: {', '.join(PRECISIONS)}")
    kind = device.type
    if name == "fp32":
        return "fp32"
    if name == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if kind == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if kind == "cuda":
        if name == "bf16" and not torch.cuda.is_bf16_supported():
            raise PrecisionError("precision bf16: this GPU has no bf16 support; use fp16 or fp32")
        return name
    if kind == "cpu" and name == "bf16":
        if not cpu_has_native_bf16():
            raise PrecisionError(
                "precision bf16: this CPU has no native bf16 (AVX-512 BF16, AMX or Arm BF16), so "
                "it would be emulated and slower than fp32; use fp32 or auto"
            )
        return "bf16"
    raise PrecisionError(f"precision {name} is not available on {kind}; use fp32 or auto")


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Mixed-precision autocast for ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 on CUDA (bf16 has fp32's range and needs none)."""
    if precision == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
