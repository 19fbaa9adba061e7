"""Named training configurations, so a user need not know the hyper-parameters.

Each preset is a set of ``TrainConfig`` overrides plus what it measured on this project's
benchmarks (``measured``), shown by ``latentsearch train --help``. Options given on the command
line override the preset's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """A named configuration.

    Attributes:
        summary: One line on what it is for.
        overrides: ``TrainConfig`` fields it sets.
        measured: What it reached, where and how long it took (or that it is not yet measured).
    """

    summary: str
    overrides: dict[str, Any] = field(default_factory=dict)
    measured: str = "not yet measured"


_STUDY = {
    "model": "seed-ae",
    "objective": "reconstruction",
    "epochs": 10,
    "batch_size": 32,
    "lr": 1e-3,
}
# Sized for two CPU cores: width 16 trains ~3.5x faster than width 32 (measured, one
# thread: 231 vs 66 img/s contrastive), and at a fixed CPU budget more epochs of the
# narrower net beat fewer of the wider one. On a GPU, pass a larger --width.
_SIMCLR = {
    "model": "resnet-s",
    "model_kwargs": {"width": 16},
    "objective": "contrastive",
    "epochs": 15,
    "batch_size": 256,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "cosine_schedule": True,
}

PRESETS: dict[str, Preset] = {
    "study-vanilla": Preset(
        "the study's autoencoder, no labels",
        {**_STUDY},
        "CIFAR-10 JPEG copy, seed protocol: NMI 0.077, RI 0.811, P@10 0.280; 73 min, 2-core CPU",
    ),
    "study-hint": Preset(
        "the study's autoencoder with its hint head on every label",
        {**_STUDY, "label_fraction": 1.0},
        "CIFAR-10 JPEG copy, seed protocol: NMI 0.385, RI 0.865, P@10 0.551; 74 min, 2-core CPU",
    ),
    "simclr": Preset(
        "SimCLR on a small ResNet, no labels",
        {**_SIMCLR},
        "CIFAR-10 JPEG copy, heldout: NMI 0.237, P@10 0.469 (raw pixels 0.084, 0.278); "
        "46 min on one CPU thread. Fashion-MNIST: NMI 0.566 (8 epochs), 0.600 (24)",
    ),
    "simclr-hint10": Preset(
        "SimCLR + hint on 10% of the labels",
        {**_SIMCLR, "label_fraction": 0.1},
        "CIFAR-10 JPEG copy, heldout: NMI 0.401, P@10 0.578; 48 min on one CPU thread. "
        "Fashion-MNIST, 8 epochs: NMI 0.753",
    ),
    "simclr-hint": Preset(
        "SimCLR + hint on every label",
        {**_SIMCLR, "label_fraction": 1.0},
        "CIFAR-10 JPEG copy, heldout: NMI 0.478, P@10 0.702; 60 min on one CPU thread",
    ),
}


def preset_help() -> str:
    """The presets and their measured results, for ``--help``."""
    lines = [f"{name}: {p.summary} [{p.measured}]" for name, p in PRESETS.items()]
    # argparse formats help with %, so a literal percent sign must be doubled.
    return "; ".join(lines).replace("%", "%%")


def resolve_preset(name: str | None) -> dict[str, Any]:
    """The overrides of a preset (none for ``None``).

    Raises:
        ValueError: For an unknown name.
    """
    if name is None:
        return {}
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return dict(PRESETS[name].overrides)
