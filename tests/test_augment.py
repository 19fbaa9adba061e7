from __future__ import annotations

import pytest
import torch

from latentsearch.augment import AugmentConfig, augment, color_jitter, random_resized_crop


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
