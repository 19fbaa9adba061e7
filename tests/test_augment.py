from __future__ import annotations

import pytest
import torch

from latentsearch.augment import (
    AugmentConfig,
    augment,
    color_jitter,
    random_resized_crop,
    rotate_hue,
)


@pytest.mark.parametrize("channels", [1, 3])
def test_views_keep_shape_range_and_layout(channels: int) -> None:
    torch.manual_seed(0)
    x = torch.rand(16, channels, 12, 12)
    y = augment(x)
    assert y.shape == x.shape
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.isfinite(y).all()
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert not torch.allclose(y, x)  # something changed


def test_views_are_reproducible_from_the_seed() -> None:
    x = torch.rand(8, 3, 16, 16)
    torch.manual_seed(5)
    a = augment(x)
    torch.manual_seed(5)
    b = augment(x)
    torch.manual_seed(6)
    c = augment(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_full_crop_without_flip_is_the_identity() -> None:
    x = torch.rand(4, 3, 8, 8)
    y = random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_flipping_mirrors_about_half_the_images_and_changes_nothing_else() -> None:
    x = torch.rand(64, 1, 6, 6)  # random, so no image is its own mirror image
    torch.manual_seed(0)
    # With a full crop, a flip is the only change; each image gets one with probability 1/2.
    y = random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True)
    flipped = torch.tensor([torch.allclose(y[i], x[i].flip(-1), atol=1e-5) for i in range(64)])
    same = torch.tensor([torch.allclose(y[i], x[i], atol=1e-5) for i in range(64)])
    assert bool((flipped ^ same).all())  # each image is either mirrored or left as it was
    # Some are mirrored and some are not: a crop that never (or always) flips fails here.
    assert 16 <= int(flipped.sum()) <= 48
    unflipped = random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    torch.testing.assert_close(unflipped, x, atol=1e-5, rtol=0)


def test_jitter_with_probability_zero_changes_nothing() -> None:
    x = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(color_jitter(x, AugmentConfig(jitter_p=0.0)), x)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def test_hue_rotation_keeps_luma_and_grey_and_turns_red_towards_cyan() -> None:
    x = torch.rand(6, 3, 5, 5)
    turns = torch.tensor([0.0, 1.0, 0.1, -0.1, 0.25, 0.5])
    y = rotate_hue(x, turns)
    torch.testing.assert_close(y[:2], x[:2], atol=1e-5, rtol=0)  # no turn, or a full one
    assert not torch.allclose(y[2:], x[2:], atol=1e-3)
    torch.testing.assert_close(_luma(y), _luma(x), atol=1e-5, rtol=0)
    grey = torch.rand(2, 1, 4, 4).expand(2, 3, 4, 4)
    torch.testing.assert_close(rotate_hue(grey, torch.tensor([0.2, -0.4])), grey, atol=1e-5, rtol=0)
    # Half a turn takes red to its opposite hue: less red, more green and blue.
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 0.6
    red[:, 1:] = 0.2
    half = rotate_hue(red, torch.tensor([0.5]))
    assert float(half[0, 0].mean()) < 0.3 and float(half[0, 1:].mean()) > 0.3


def test_hue_rotations_compose() -> None:
    x = torch.rand(3, 3, 4, 4)
    a, b = torch.tensor([0.1, -0.3, 0.05]), torch.tensor([0.2, 0.1, -0.45])
    torch.testing.assert_close(
        rotate_hue(rotate_hue(x, a), b), rotate_hue(x, a + b), atol=1e-5, rtol=0
    )


def test_hue_jitter_changes_colour_images_only_when_asked() -> None:
    x = 0.3 + 0.4 * torch.rand(8, 3, 6, 6)  # mid-tones: a small hue turn needs no clamping
    plain = AugmentConfig(jitter_p=1.0, brightness=0.0, contrast=0.0, saturation=0.0)
    with_hue = AugmentConfig(jitter_p=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.1)
    torch.manual_seed(0)
    torch.testing.assert_close(color_jitter(x, plain), x, atol=1e-6, rtol=0)
    torch.manual_seed(0)
    y = color_jitter(x, with_hue)
    assert not torch.allclose(y, x, atol=1e-3)
    torch.testing.assert_close(_luma(y), _luma(x), atol=1e-5, rtol=0)
    g = torch.rand(8, 1, 6, 6)
    torch.testing.assert_close(color_jitter(g, with_hue), g, atol=1e-6, rtol=0)
