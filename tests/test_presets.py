from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentsearch.augment import AugmentConfig
from latentsearch.data import DataSplits
from latentsearch.presets import (
    AUTO_COLOUR_WEIGHT,
    AUTO_DEEP_COST,
    AUTO_EPOCHS,
    AUTO_IMAGES_SEEN,
    AUTO_TEXTURE_WEIGHT,
    PHOTO_MIN_SIDE,
    auto_epochs,
    auto_recipe,
    photographs,
    training_seconds,
)
from latentsearch.runs import TrainConfig


def test_auto_gives_colour_photos_colour_distortion_without_hue() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
    recipe = auto_recipe(pixels, n_fit=50_000)
    aug = recipe.overrides["objective_kwargs"]["augment"]
    assert aug["crop_scale"] == [0.2, 1.0] and aug.get("hue", 0.0) == 0.0  # measured worse
    cfg = AugmentConfig(**{**aug, "crop_scale": tuple(aug["crop_scale"])})
    assert cfg.jitter_p > 0 and cfg.saturation > 0 and cfg.grayscale_p > 0
    assert any("greyscale" in r for r in recipe.reasons)


def test_auto_never_shifts_the_hue_of_grey_images() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)
    aug = auto_recipe(pixels).overrides["objective_kwargs"]["augment"]
    assert aug.get("hue", 0.0) == 0.0 and aug["saturation"] == 0.0


def test_auto_adds_neighbour_positives_after_a_third_with_a_queue_sized_to_the_images() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
    big = auto_recipe(pixels, n_fit=47_500).overrides
    kwargs = big["objective_kwargs"]
    assert kwargs["neighbour_weight"] == 0.5 and kwargs["queue_size"] == 8192  # capped
    assert kwargs["neighbour_start_epoch"] == big["epochs"] // 3 > 0
    small = auto_recipe(pixels, n_fit=1_000, epochs=9).overrides
    assert small["epochs"] == 9
    assert small["objective_kwargs"]["queue_size"] == 200  # a fifth of the images
    assert small["objective_kwargs"]["neighbour_start_epoch"] == 3


def test_auto_treats_grey_images_decoded_to_rgb_as_grey() -> None:
    # A folder of grey PNGs decodes to three equal channels: the recipe must see grey images.
    grey = np.random.default_rng(0).integers(0, 256, size=(64, 32, 32, 1), dtype=np.uint8)
    one = auto_recipe(grey, n_fit=10_000)
    three = auto_recipe(np.repeat(grey, 3, axis=-1), n_fit=10_000)
    aug = three.overrides["objective_kwargs"]["augment"]
    assert aug == one.overrides["objective_kwargs"]["augment"]
    assert aug["saturation"] == 0.0 and aug["crop_scale"] == [0.4, 1.0]
    assert "grey (3 equal channels)" in three.reasons[0]


def test_auto_epochs_spend_the_image_budget_within_the_bounds() -> None:
    lo, hi = AUTO_EPOCHS
    assert auto_epochs(47_500) == 95  # CIFAR-10's fit images: the budget, not a bound
    assert auto_epochs(57_000) == 79  # Fashion-MNIST's
    assert auto_epochs(1_365) == hi == 200  # small collections stop at the cap
    assert auto_epochs(10_000_000) == lo
    assert auto_epochs(AUTO_IMAGES_SEEN // hi) == hi and auto_epochs(AUTO_IMAGES_SEEN // 150) == 150


def test_auto_deepens_the_late_stages_for_colour_photos_only() -> None:
    from latentsearch.models import create_model

    rng = np.random.default_rng(0)
    for size, blocks in ((32, [1, 1, 2, 2]), (64, [1, 1, 1, 2, 2])):
        photos = rng.integers(0, 256, size=(64, size, size, 3), dtype=np.uint8)
        kwargs = auto_recipe(photos, n_fit=10_000).overrides["model_kwargs"]
        assert kwargs == {"width": 16, "stage_blocks": blocks}
        create_model("resnet-s", image_size=size, **kwargs)  # one count per stage: it builds
    grey = rng.integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)
    tiny = rng.integers(0, 256, size=(64, 16, 16, 3), dtype=np.uint8)
    for pixels in (grey, tiny):  # not measured there: one block per stage
        assert auto_recipe(pixels).overrides["model_kwargs"] == {"width": 16}


def test_auto_spends_the_same_time_in_fewer_epochs_on_the_slower_deep_layout() -> None:
    rng = np.random.default_rng(0)
    photos = rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, size=(64, 32, 32, 1), dtype=np.uint8)
    deep = auto_recipe(photos, n_fit=47_500)
    flat = auto_recipe(grey, n_fit=47_500)
    assert deep.overrides["epochs"] == deep.budget_epochs == 77  # CIFAR-10: 95 / 1.24
    assert flat.overrides["epochs"] == flat.budget_epochs == auto_epochs(47_500) == 95
    assert auto_epochs(47_500, AUTO_DEEP_COST) == 77
    assert deep.overrides["objective_kwargs"]["neighbour_start_epoch"] == 77 // 3
    given = auto_recipe(photos, n_fit=47_500, epochs=95)  # the user's epochs win; budget kept
    assert given.overrides["epochs"] == 95 and given.budget_epochs == 77
    assert any("95 epochs (as given)" in r for r in given.reasons)


def test_auto_as_it_picks_itself_beats_raw_pixels_on_held_out_digits(
    tmp_path: Path, digits: DataSplits
) -> None:
    # The no-label default's promise: never worse than raw pixels, on P@10 and on NMI.
    from latentsearch.evaluation import evaluate_run
    from latentsearch.protocols import make_splits
    from latentsearch.runs import TrainConfig
    from latentsearch.training import train

    fit = make_splits(digits, "heldout").fit
    recipe = auto_recipe(fit.pixels, n_fit=len(fit))
    assert recipe.overrides["epochs"] == 200  # the cap, as the README's figures used
    config = TrainConfig(data="digits", **recipe.overrides)
    run = train(config, tmp_path / "run", progress=False, data=digits)
    result = evaluate_run(run, data=digits, baseline=True)
    # Measured (seeds 0-2, 2-core CPU): NMI 0.800-0.836 vs 0.710, P@10 0.977 vs 0.944.
    assert result["nmi"] > result["baseline"]["nmi"] + 0.03
    assert result["precision_at_10"] > result["baseline"]["precision_at_10"] + 0.01


def test_photographs_are_told_from_thumbnails_by_their_short_side() -> None:
    photo, why = photographs(np.array([[1024, 576], [800, 600], [192, 192]]))
    assert photo and "576 px" in why and "32 px" in why
    small, _ = photographs(np.array([[32, 32], [PHOTO_MIN_SIDE - 1, 4000]]))
    assert not small
    assert photographs(np.zeros((0, 2), dtype=np.int64))[0] is False


def _photos(n: int, grey: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    pixels[:grey] = pixels[:grey, :, :, :1]  # three equal channels: grey pictures
    return pixels


def test_photographs_get_texture_and_colour_parts_unless_many_are_grey() -> None:
    thumbnails = auto_recipe(_photos(40, 0)).overrides["model_kwargs"]
    assert "texture_weight" not in thumbnails and "colour_weight" not in thumbnails
    colour = auto_recipe(_photos(40, 2), photographs=True)
    kwargs = colour.overrides["model_kwargs"]
    assert kwargs["texture_weight"] == AUTO_TEXTURE_WEIGHT
    assert kwargs["colour_weight"] == AUTO_COLOUR_WEIGHT
    mixed = auto_recipe(_photos(40, 8), photographs=True)  # one in five grey
    kwargs = mixed.overrides["model_kwargs"]
    assert kwargs["texture_weight"] == AUTO_TEXTURE_WEIGHT and "colour_weight" not in kwargs
    assert any("20% grey images" in r and "no colour part" in r for r in mixed.reasons)
    grey = auto_recipe(_photos(40, 40)[..., :1], photographs=True).overrides["model_kwargs"]
    assert grey["texture_weight"] == AUTO_TEXTURE_WEIGHT and "colour_weight" not in grey


def test_the_time_estimate_grows_with_epochs_pixels_and_depth() -> None:
    base = TrainConfig(model="resnet-s", model_kwargs={"width": 16}, epochs=10)
    seconds = training_seconds(base, 1000)
    assert seconds == pytest.approx(10 * 1000 / 785)
    bigger = TrainConfig(model="resnet-s", model_kwargs={"width": 16}, epochs=10, image_size=64)
    assert training_seconds(bigger, 1000) == pytest.approx(4 * seconds)
    deep = TrainConfig(
        model="resnet-s", model_kwargs={"width": 16, "stage_blocks": [1, 1, 2, 2]}, epochs=10
    )
    assert training_seconds(deep, 1000) == pytest.approx(AUTO_DEEP_COST * seconds)
