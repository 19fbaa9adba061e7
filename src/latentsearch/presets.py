"""Named training configurations, so a user need not know the hyper-parameters.

Each preset is a set of ``TrainConfig`` overrides plus what it measured on this project's
benchmarks (``measured``), shown by ``latentsearch train --help``. Options given on the command
line override the preset's.
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
        measured: What it reached, where and how long it took (or that it is not yet measured).
    """

    summary: str
    overrides: dict[str, Any] = field(default_factory=dict)
    measured: str = "not yet measured"


AUTO_TEMPERATURE = 0.5
"""The auto recipe's NT-Xent temperature (see ``auto_recipe`` for the measurements)."""

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
# Sized for two CPU cores: width 16 trains ~3.5x faster than width 32 (measured, one
# thread: 231 vs 66 img/s contrastive), and at a fixed CPU budget more epochs of the
# narrower net beat fewer of the wider one. On a GPU, pass a larger --width.
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
        "CIFAR-10 JPEG copy, heldout, two blocks in the last two stages, 77 epochs with "
        "neighbour positives from epoch 26, seeds 0 / 1 / 2: NMI 0.369 / 0.366 / 0.350 (SCAN "
        "head 0.366 / 0.346 / 0.375), P@10 0.566 / 0.565 / 0.563 (raw pixels 0.084, 0.278); "
        "seeds 0 and 2 alone: 92.3 and 90.7 min with the head, 2-core CPU, bf16 (95 epochs: NMI "
        "0.383, head 0.393, P@10 0.579 in 116 + 5.6 min; one block per stage, 95 epochs, "
        "seeds 0, 1, 2: NMI 0.317 / 0.301 / 0.316, head 0.342 / 0.321 / 0.338, P@10 0.558 / "
        "0.552 / 0.554; 95-104 min + 5-7 min head). Digits, 200 epochs, 3 seeds: NMI "
        "0.800-0.836, P@10 0.977 (raw pixels 0.710, "
        "0.944). Fashion-MNIST, 79 epochs "
        "and `cluster --finetune-epochs 10`: NMI 0.662 (head 0.688), P@10 0.816 (pixels "
        "0.516, 0.805); 84 min + 22 min head",
    ),
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
        "CIFAR-10 JPEG copy, heldout: NMI 0.739, P@10 0.854 (raw pixels 0.084, 0.278); "
        "50 epochs, 58 min on a shared 2-core CPU (load 1.5-5.4; 39 s/epoch quiet), bf16. "
        "Width 16 with AdamW at decay 5e-4 (no real decay): NMI 0.624, P@10 0.767",
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
        "CIFAR-10 JPEG copy, heldout, 10% of labels: NMI 0.517, P@10 0.664 (simclr-hint10: "
        "0.401, 0.578); 150 epochs, 16 min, 2-core CPU, bf16",
    ),
    "simclr-hint": Preset(
        "SimCLR + hint on every label",
        {**_SIMCLR, "label_fraction": 1.0},
        "CIFAR-10 JPEG copy, heldout: NMI 0.478, P@10 0.702; 60 min on one CPU thread",
    ),
}

# What `latentsearch reproduce` trains: the study's two models (their presets), under both
# protocols in this order.
STUDY_VARIANTS = {"vanilla": "study-vanilla", "hint": "study-hint"}
STUDY_PROTOCOLS = ("seed", "heldout")


# The auto recipe's compute budget: images seen in training (each as two augmented views).
# 4.51M is 95 epochs of CIFAR-10's 47,500 fit images, about 104 minutes on a 2-core CPU with
# bf16 at width 16 (75 epochs measured KMeans NMI 0.280, 100 epochs 0.283, both without
# neighbour positives).
AUTO_IMAGES_SEEN = 4_512_500
# Fewest and most epochs. The budget gives more than 100 epochs below 44,901 training images
# and is capped below 22,507 (CIFAR-10 and Fashion-MNIST spend it in 95 and 79 epochs); 200
# rather than 100 measured better on small collections,
# held out: digits (3 seeds) NMI 0.800-0.836 vs 0.790-0.818, P@10 0.977 (all three) vs
# 0.957-0.979; digits as a 32 px PNG folder (3 seeds) NMI 0.837-0.886 vs 0.761-0.812, P@10
# 0.981-0.986 vs 0.977-0.983; a 2,000-image Fashion-MNIST folder (2 seeds) NMI 0.625/0.641
# vs 0.626/0.624, P@10 0.707/0.714 vs 0.708/0.713. Training takes twice as long (digits ~1 min).
AUTO_EPOCHS = (15, 200)
# The budget is one of time: it is counted at the speed of resnet-s with one block per stage,
# and a layout that trains more slowly per image spends it in proportionally fewer epochs.
# Two blocks in the last two stages (auto's layout for colour images from 24 px) train at
# 634 vs 785 img/s (benchmarks/results/resnet_layouts.json), so CIFAR-10 gets 77 epochs, not
# 95: 116 min of training at 95 epochs plus 5.6 min for the head was over the 2-hour budget.
# Measured at 32 px; on larger images the extra blocks are a smaller share of the work, so
# this cost errs on the side of fewer epochs.
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
    from latentsearch.data.stats import colour_fraction, mirror_ratio

    n, h, _, c = pixels.shape
    n_fit = n_fit or n
    reasons: list[str] = []
    # Folders decode to RGB, so grey scans arrive with three equal channels: look at the pixels.
    colour = c == 3 and colour_fraction(pixels) >= COLOUR_FRACTION_MIN
    # Grey images keep 40% crops at every size from 20 px: 20% measured worse on Fashion-MNIST,
    # held out (60,000 images, one seed: KMeans NMI 0.631 vs 0.662, head 0.639 vs 0.688, P@10
    # 0.820 vs 0.816; a 2,000-image PNG folder, two seeds: NMI 0.565/0.564 vs 0.626/0.624,
    # P@10 0.706/0.705 vs 0.708/0.713). On digits decoded to 32 px retrieval was level (six
    # runs at 20% vs three at 40%: P@10 0.975-0.986 vs 0.977-0.983) and KMeans NMI spread
    # widely (0.78-0.94 vs 0.76-0.81; 360 test images), so Fashion-MNIST decides.
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
        # No hue shift, although SimCLR's strength-0.5 distortion has ±0.1 turn: at this budget
        # it measured worse on CIFAR-10 (100 epochs, one seed, held out): KMeans NMI 0.260 vs
        # 0.283, P@10 0.530 vs 0.547. A small network seems to need the easier task.
        reasons.append("colour: jitter (p 0.8, ±0.4) and 20% greyscale")
    else:
        # Crops alone let two views be matched by their intensity histogram (SimCLR's
        # shortcut); brightness and contrast jitter breaks it, and grey images have both.
        augment.update(jitter_p=0.8, saturation=0.0, grayscale_p=0.0)
        reasons.append("grey: brightness and contrast jitter (p 0.8, ±0.4), no colour change")
    # NT-Xent temperature 0.5 (SimCLR's CIFAR-10 value) beat 0.2 on every collection measured,
    # held out: digits (3 seeds) NMI 0.755-0.778 vs 0.61-0.70, P@10 0.950-0.965 vs
    # 0.931-0.951; CIFAR-10 (75 epochs, one seed each) KMeans NMI 0.280 vs 0.263, P@10 0.540
    # vs 0.541; Fashion-MNIST (62 epochs, one seed each) KMeans NMI 0.648 vs 0.623, P@10
    # 0.821 vs 0.816. Tiny images with gentle crops (near-identical views) need it most.
    temperature = AUTO_TEMPERATURE
    reasons.append(f"NT-Xent temperature {temperature}")
    # Two basic blocks in the last two stages (8×8 and 4×4 maps at 32 px), measured held out
    # on CIFAR-10 (95 epochs, seed 0) against one block per stage: KMeans NMI 0.383 vs 0.317
    # (seeds 1, 2: 0.301, 0.316), SCAN head 0.393 vs 0.342, P@10 0.579 vs 0.558, for 116 vs
    # 95-104 min of training (steps 19% slower: bench_resnet_layouts.py), hence fewer epochs
    # (AUTO_DEEP_COST). At the 77 epochs that gives, seeds 0 / 1 / 2: KMeans NMI 0.369 / 0.366 /
    # 0.350, head 0.366 / 0.346 / 0.375, P@10 0.566 / 0.565 / 0.563 (seeds 0 and 2 alone: 92.3
    # and 90.7 min with the head). Not yet measured on
    # grey or small images: one block each.
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
    # Neighbour positives after a third of the epochs, measured held out against the same
    # recipe without them: digits (100 epochs, 3 seeds, queue 273) NMI 0.790-0.818 vs
    # 0.755-0.778, P@10 0.957-0.979 vs 0.950-0.965 (from half-way: 0.809-0.825, 0.960-0.975);
    # CIFAR-10 95 epochs from epoch 31: KMeans NMI 0.317 (head 0.342), P@10 0.558 (seed 1:
    # 0.301 (0.321), 0.552; seed 2: 0.316 (0.338), 0.554) vs 100 epochs without: 0.283
    # (0.314), 0.547 (one seed);
    # Fashion-MNIST (one seed each) 79 epochs: 0.662 (0.688), 0.816 vs 62 without: 0.648
    # (0.687), 0.821.
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
        raise LatentsearchError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return dict(PRESETS[name].overrides)
