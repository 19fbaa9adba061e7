"""Precision choice: what auto picks, and clear errors for what the hardware lacks."""

from __future__ import annotations

import pytest
import torch

from latentsearch import precision
from latentsearch.precision import PrecisionError, autocast, resolve_precision

CPU = torch.device("cpu")


def test_fp32_is_always_available() -> None:
    assert resolve_precision("fp32", CPU) == "fp32"


def test_auto_uses_bf16_only_on_a_cpu_with_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", CPU) == "fp32"


def test_bf16_on_a_cpu_without_it_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(PrecisionError, match="no native bf16"):
        resolve_precision("bf16", CPU)


def test_fp16_needs_a_gpu_and_unknown_names_are_refused() -> None:
    with pytest.raises(PrecisionError, match="not available on cpu"):
        resolve_precision("fp16", CPU)
    with pytest.raises(PrecisionError, match="unknown precision"):
        resolve_precision("fp8", CPU)


def test_autocast_runs_matmuls_in_bf16_and_fp32_leaves_them_alone() -> None:
    a = torch.rand(4, 4)
    with autocast("fp32", CPU):
        assert (a @ a).dtype == torch.float32
    with autocast("bf16", CPU):
        assert (a @ a).dtype == torch.bfloat16
