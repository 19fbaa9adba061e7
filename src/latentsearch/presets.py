"""Named training configurations, so a user need not know the hyper-parameters.

Each preset is a set of ``TrainConfig`` overrides with a one-line summary, shown by
``latentsearch train --help``; what each reached is in the README and ``docs/experiments.md``.
Options given on the command line override the preset's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentsearch.errors import LatentsearchError


@dataclass(frozen=True)
class Preset:
    """A named configuration.

    Attributes:
        summary: One line on what it is for.
        overrides: ``TrainConfig`` fields it sets.
    """

    summary: str
    overrides: dict[str, Any] = field(default_factory=dict)


AUTO_TEMPERATURE = 0.5
"""The auto recipe's NT-Xent temperature (SimCLR's CIFAR-10 value)."""

STUDY_EPOCHS = 10
"""The study's training length (Gosthipaty & Chakraborty, 2020)."""

_STUDY = {
    "model": "seed-ae",
    "objective": "reconstruction",
    "epochs": STUDY_EPOCHS,
    "batch_size": 32,
    "lr": 1e-3,
    "precision": "fp32",  # the study trained in fp32; reproductions do too
}
# Sized for two CPU cores (width 16; docs/experiments.md, "Why auto chooses what it does").
# On a GPU, pass a larger --width.
_SIMCLR: dict[str, Any] = {
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
    "auto": Preset(
        "the default without labels: SimCLR with augmentations, then nearest-neighbour "
        "positives; batch and epochs chosen from the images (size, channels, count, mirror "
        "symmetry)",
        {},
    ),
    "study-vanilla": Preset(
        "the study's autoencoder, no labels",
        {**_STUDY},
    ),
    "study-hint": Preset(
        "the study's autoencoder with its hint head on every label",
        {**_STUDY, "label_fraction": 1.0},
    ),
    "simclr": Preset(
        "SimCLR on a small ResNet, no labels",
        {**_SIMCLR},
    ),
    "simclr-hint10": Preset(
        "SimCLR + hint on 10% of the labels",
        {**_SIMCLR, "label_fraction": 0.1},
    ),
    "supervised": Preset(
        "cross-entropy on one augmented view (crops, flips) of every labelled image: resnet-s "
        "width 32, SGD (Nesterov, lr 0.1, weight decay 5e-4), cosine decay",
        {
            **_SIMCLR,
            "model_kwargs": {"width": 32},
            "objective": "classification",
            "label_fraction": 1.0,
            "epochs": 50,
            "optimizer": "sgd",
            "lr": 0.1,
            "weight_decay": 5e-4,
        },
    ),
    "supervised-10": Preset(
        "the supervised recipe when a tenth of the images are labelled: batches of 2,560 "
        "images hold ~256 labelled ones (only those are trained on), 150 epochs",
        {
            **_SIMCLR,
            "model_kwargs": {"width": 32},
            "objective": "classification",
            "label_fraction": 0.1,
            "batch_size": 2560,
            "epochs": 150,
            "optimizer": "sgd",
            "lr": 0.1,
            "weight_decay": 5e-4,
        },
    ),
    "simclr-hint": Preset(
        "SimCLR + hint on every label",
        {**_SIMCLR, "label_fraction": 1.0},
    ),
}

# What `latentsearch reproduce` trains: the study's two models (their presets), under both
# protocols in this order.
STUDY_VARIANTS = {"vanilla": "study-vanilla", "hint": "study-hint"}
STUDY_PROTOCOLS = ("seed", "heldout")


# The auto recipe's compute budget: images seen in training (each as two augmented views):
# 95 epochs of CIFAR-10's 47,500 fit images.
AUTO_IMAGES_SEEN = 4_512_500
# Fewest and most epochs: small collections are capped at 200 (better than 100 there).
AUTO_EPOCHS = (15, 200)
# The budget is one of time, counted at the speed of resnet-s with one block per stage: a
# layout that trains more slowly per image spends it in proportionally fewer epochs (two
# blocks in the last two stages: 634 vs 785 img/s, benchmarks/results/resnet_layouts.json).
AUTO_DEEP_COST = 785 / 634
# NNCLR positives: their share of the contrastive loss and the largest queue (the queue is a
# fifth of the training images below that: objectives.neighbour_queue_size).
AUTO_NEIGHBOUR_WEIGHT = 0.5
AUTO_QUEUE_MAX = 8192
MIRROR_RATIO_MAX = 1.1  # flip only when mirrored images look like the collection
MIRROR_SAMPLE_MIN = 8  # fewer images cannot tell (data.stats.mirror_ratio refuses them)
COLOUR_FRACTION_MIN = 0.05  # three-channel images with fewer coloured pixels are grey


PHOTO_MIN_SIDE = 128
"""Median short side (px) from which a folder's images count as photographs."""
AUTO_TEXTURE_WEIGHT = 0.4
"""Share of the squared distance the LBP texture histogram gets in photographs' embeddings."""
AUTO_COLOUR_WEIGHT = 0.2
"""Share the HSV colour histogram gets in colour photographs' embeddings."""
GREY_SHARE_MAX = 0.1
"""Largest share of grey images in a collection whose embeddings get a colour part."""


def photographs(sizes: np.ndarray) -> tuple[bool, str]:
    """Whether a folder's images are photographs (not thumbnails), from their sizes.

    Photographs are still trained and embedded at 32 px: on the photo dev sets 64 px at the
    same training time measured worse (``benchmarks/results/photos.json``). They get texture
    and colour parts in their embeddings instead (``auto_recipe``).

    Args:
        sizes: (width, height) of a sample of the images. Shape: (M, 2).

    Returns:
        The answer, and one line on why.
    """
    if not len(sizes):
        return False, "no image size could be read: treated as small images"
    short = float(np.median(sizes.min(axis=1)))
    photo = short >= PHOTO_MIN_SIDE
    return photo, (
        f"median short side {short:.0f} px: "
        + ("photographs" if photo else "small images")
        + f" (from {PHOTO_MIN_SIDE} px); trained and embedded at 32 px"
    )


@dataclass(frozen=True)
class Recipe:
    """A training recipe chosen from the data.

    Attributes:
        overrides: ``TrainConfig`` fields to set.
        reasons: One line per choice, saying what in the data led to it.
        budget_epochs: The epochs the recipe's time budget gives (``overrides`` holds the
            user's when they chose them).
    """

    overrides: dict[str, Any]
    reasons: list[str]
    budget_epochs: int


TRAIN_IMAGES_PER_SECOND = {16: 785.0, 24: 341.0, 32: 223.0}
"""resnet-s training speed at 32 px by width, one block per stage, batch 256 of two views, bf16,
on the 2-core CPU of ``benchmarks/results/resnet_layouts.json``: the basis of time estimates."""


def training_seconds(config: Any, n_fit: int) -> float:
    """About how long ``config`` trains on ``n_fit`` images on a 2-core CPU (resnet-s only; other
    models are timed at resnet-s width 16's speed). Cost grows with the pixels per image and,
    for deeper layouts, with the blocks (``AUTO_DEEP_COST``)."""
    kwargs = getattr(config, "model_kwargs", {}) or {}
    speed = TRAIN_IMAGES_PER_SECOND.get(int(kwargs.get("width", 16)), 785.0)
    size = getattr(config, "image_size", None) or 32
    blocks = kwargs.get("stage_blocks", 1)
    deep = isinstance(blocks, list) and max(blocks) > 1
    per_image = pixel_cost(size) * (AUTO_DEEP_COST if deep else 1.0) / speed
    return float(config.epochs * n_fit * per_image)


def pixel_cost(image_size: int) -> float:
    """Training time per image at ``image_size`` relative to 32 px (never below 1: smaller
    images do not train proportionally faster on a CPU)."""
    return max(1.0, (image_size / 32) ** 2)


def auto_epochs(n_fit: int, cost: float = 1.0) -> int:
    """The auto recipe's epochs for ``n_fit`` training images: its budget, within the bounds.

    Args:
        n_fit: Images the run fits on.
        cost: Training time per image relative to resnet-s with one block per stage
            (``AUTO_DEEP_COST`` for the deeper layout).
    """
    lo, hi = AUTO_EPOCHS
    return int(min(hi, max(lo, round(AUTO_IMAGES_SEEN / cost / max(n_fit, 1)))))


def auto_neighbour_start(epochs: int) -> int:
    """The first epoch (0-based) of the auto recipe's neighbour positives: after a third."""
    return epochs // 3


def _augmentations(pixels: np.ndarray, colour: bool, reasons: list[str]) -> dict[str, Any]:
    """The auto recipe's augmentations for images like ``pixels`` (N, H, W, C); says why."""
    from latentsearch.data.stats import mirror_ratio

    n, h, _, c = pixels.shape
    # Grey images keep 40% crops from 20 px: 20% was worse on Fashion-MNIST.
    if colour and h >= 24:
        crop = (0.2, 1.0)
    elif h >= 20:
        crop = (0.4, 1.0)
    else:
        crop = (0.7, 1.0)
    kind = "colour" if colour else "grey" if c == 1 else "grey (3 equal channels)"
    reasons.append(f"{h}×{h} {kind} images: crops of {crop[0]:.0%}-100%")
    if n < MIRROR_SAMPLE_MIN:
        flip = True
        reasons.append(f"{n} images, too few to measure mirror symmetry: random flips")
    else:
        ratio = mirror_ratio(pixels)
        flip = ratio <= MIRROR_RATIO_MAX
        reasons.append(
            f"mirror ratio {ratio:.2f} ({'≤' if flip else '>'} {MIRROR_RATIO_MAX}): "
            + ("random flips" if flip else "no flips (mirrored images are not like these)")
        )
    augment: dict[str, Any] = {"crop_scale": list(crop), "flip": flip}
    if colour:
        # No hue shift (SimCLR has ±0.1 turn): worse on CIFAR-10 at this budget.
        reasons.append("colour: jitter (p 0.8, ±0.4) and 20% greyscale")
    else:
        # Crops alone let two views be matched by their intensity histogram (SimCLR's
        # shortcut); brightness and contrast jitter breaks it, and grey images have both.
        augment.update(jitter_p=0.8, saturation=0.0, grayscale_p=0.0)
        reasons.append("grey: brightness and contrast jitter (p 0.8, ±0.4), no colour change")
    return augment


def auto_recipe(
    pixels: np.ndarray,
    *,
    n_fit: int | None = None,
    epochs: int | None = None,
    photographs: bool = False,
) -> Recipe:
    """The no-label recipe for a collection, chosen from its images' size, channels and count.

    SimCLR on resnet-s (width 16, sized for a CPU), with augmentations only as strong as the
    images allow: colour photos get SimCLR's CIFAR-10 recipe; grey images (one channel, or
    three equal ones, as folders decode them) get brightness and contrast jitter but no colour
    change; small images get gentler crops (a 20% crop of an
    8×8 image is 3 pixels wide); random flips only when mirrored images look like the collection
    (:func:`latentsearch.data.stats.mirror_ratio`). Epochs spend a fixed budget of images
    seen, within ``AUTO_EPOCHS``. The first third of the epochs is plain SimCLR; from then on,
    half of the contrastive loss takes nearest neighbours from a queue of recent images as
    positives (NNCLR), which pulls similar images together, not only two views of one image.

    Args:
        pixels: The training images (a sample is read). Shape: (N, H, W, C), uint8.
        n_fit: Images the run will fit on (default N).
        epochs: The run's epochs, when the user chose them (the neighbour positives still start
            after a third of them); default: from the budget.
        photographs: The images are photographs (:func:`photographs`): their embeddings
            get texture and colour parts (``_statistics_parts``).
    """
    from latentsearch.data.stats import colour_fraction

    n, h, _, c = pixels.shape
    n_fit = n_fit or n
    reasons: list[str] = []
    # Folders decode to RGB, so grey scans arrive with three equal channels: look at the pixels.
    colour = c == 3 and colour_fraction(pixels) >= COLOUR_FRACTION_MIN
    augment = _augmentations(pixels, colour, reasons)
    # NT-Xent temperature 0.5 (SimCLR's CIFAR-10 value) beat 0.2 on every collection tried.
    temperature = AUTO_TEMPERATURE
    reasons.append(f"NT-Xent temperature {temperature}")
    # Two basic blocks in the last two stages for colour images from 24 px (better on CIFAR-10,
    # with fewer epochs: AUTO_DEEP_COST); grey and small images keep one block each.
    deep = colour and h >= 24
    budget = auto_epochs(n_fit, AUTO_DEEP_COST if deep else 1.0)
    chosen = epochs is None
    if epochs is None:
        epochs = budget
    batch = 256 if n_fit >= 10_000 else 128
    reasons.append(
        f"{n_fit:,} images: {epochs} epochs{'' if chosen else ' (as given)'} at batch {batch}"
        + (" (the time budget at the deeper layout's speed)" if deep and chosen else "")
    )
    # Neighbour positives after a third of the epochs (better on digits, CIFAR-10 and
    # Fashion-MNIST than none).
    start = auto_neighbour_start(epochs)
    from latentsearch.objectives import neighbour_queue_size  # torch: only when a recipe is made

    queue = neighbour_queue_size(n_fit, largest=AUTO_QUEUE_MAX)
    reasons.append(
        f"nearest-neighbour positives (weight {AUTO_NEIGHBOUR_WEIGHT}, queue {queue:,}) "
        f"from epoch {start + 1}"
    )
    model_kwargs: dict[str, Any] = dict(_SIMCLR["model_kwargs"])
    if deep:
        from latentsearch.models.resnet import stages

        n = stages(h)
        model_kwargs["stage_blocks"] = [1] * (n - 2) + [2, 2]
        reasons.append(f"colour, {h} px: two blocks in the last two stages")
    if photographs:
        reasons.extend(_statistics_parts(pixels, colour, model_kwargs))
    overrides = {
        **_SIMCLR,
        "model_kwargs": model_kwargs,
        "epochs": epochs,
        "batch_size": batch,
        "objective_kwargs": {
            "temperature": temperature,
            "augment": augment,
            "neighbour_weight": AUTO_NEIGHBOUR_WEIGHT,
            "queue_size": queue,
            "neighbour_start_epoch": start,
        },
    }
    return Recipe(overrides=overrides, reasons=reasons, budget_epochs=budget)


def _statistics_parts(pixels: np.ndarray, colour: bool, model_kwargs: dict[str, Any]) -> list[str]:
    """Adds texture (and colour) parts to a photo collection's model; says why.

    Measured on the photo dev sets (``benchmarks/results/photos.json``): the 32 px network
    alone trails an HSV colour histogram on scene tiles, and misses grey and cropped copies
    that an LBP texture histogram finds. Colour is left out when one image in ten or more is
    grey: a colour histogram compares a grey copy with other grey images, not with its original.
    """
    from latentsearch.data.stats import grey_share

    model_kwargs["texture_weight"] = AUTO_TEXTURE_WEIGHT
    reasons = [f"photographs: an LBP texture part ({AUTO_TEXTURE_WEIGHT:.0%} of the distance)"]
    share = grey_share(pixels) if colour else 1.0
    if colour and share < GREY_SHARE_MAX:
        model_kwargs["colour_weight"] = AUTO_COLOUR_WEIGHT
        reasons.append(
            f"{share:.0%} grey images: an HSV colour part ({AUTO_COLOUR_WEIGHT:.0%}), the "
            "colours the jitter teaches the network to ignore"
        )
    elif colour:
        reasons.append(f"{share:.0%} grey images (≥ {GREY_SHARE_MAX:.0%}): no colour part")
    return reasons


def resolve_preset(name: str | None) -> dict[str, Any]:
    """The overrides of a preset (none for ``None``).

    Raises:
        ValueError: For an unknown name.
    """
    if name is None:
        return {}
    if name not in PRESETS:
        raise LatentsearchError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return dict(PRESETS[name].overrides)
