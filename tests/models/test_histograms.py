"""Statistics parts of an embedding: HSV and LBP histograms checked against references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from latentsearch.errors import LatentsearchError
from latentsearch.models import create_model
from latentsearch.models.histograms import hsv_histogram, lbp_histogram


def _pillow_histogram(image: np.ndarray, bins: int) -> np.ndarray:
    """The same histogram from Pillow's own RGB → HSV conversion (channels in 0-255)."""
    hsv = np.asarray(Image.fromarray(image).convert("HSV")).reshape(-1, 3).astype(np.int64)
    level = hsv * bins // 256
    index = (level[:, 0] * bins + level[:, 1]) * bins + level[:, 2]
    counts = np.bincount(index, minlength=bins**3)
    return np.sqrt(counts / counts.sum())


@pytest.mark.parametrize("bins", [4, 8])
def test_the_histogram_matches_pillows_hsv(bins: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 24, 24, 3), dtype=np.uint8)
    images[1, :12] = (200, 30, 30)  # flat red, grey and black areas: hue and saturation edges
    images[2, :, :8] = 128
    images[2, :, 8:12] = 0
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    ours = hsv_histogram(x, bins).numpy()
    assert ours.shape == (3, bins**3)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    for k, image in enumerate(images):
        # Pillow rounds H, S and V to 0-255 first, so a few pixels at bin edges land in the
        # next bin: the sum of |differences| is twice the share of pixels that moved (< 5%).
        assert np.abs(ours[k] ** 2 - _pillow_histogram(image, bins) ** 2).sum() < 0.1


def _loop_lbp(image: np.ndarray) -> np.ndarray:
    """Local binary patterns by explicit loops over the luminance (the definition)."""
    y = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    counts = np.zeros(256)
    for i in range(1, y.shape[0] - 1):
        for j in range(1, y.shape[1] - 1):
            code = sum(1 << b for b, (di, dj) in enumerate(offsets) if y[i + di, j + dj] >= y[i, j])
            counts[code] += 1
    return np.sqrt(counts / counts.sum())


def test_the_texture_histogram_is_the_lbp_definition_and_ignores_grey_and_contrast() -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(2, 10, 12, 3), dtype=np.uint8)
    images[1, 2:6] = 90  # a flat area: ties count as "at least as bright"
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    ours = lbp_histogram(x).numpy()
    for k, image in enumerate(images):
        np.testing.assert_allclose(ours[k], _loop_lbp(image), atol=1e-6)
    grey = x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    assert not torch.equal(lbp_histogram(grey), lbp_histogram(x))  # grey is another image
    dimmer = 0.25 + 0.5 * x  # brighter and lower contrast (exact in binary: no new ties)
    torch.testing.assert_close(lbp_histogram(dimmer), lbp_histogram(x))
    torch.testing.assert_close(lbp_histogram(grey**1.5), lbp_histogram(grey))  # a gamma


def test_statistics_parts_split_the_distance_between_features_colour_and_texture() -> None:
    torch.manual_seed(0)
    plain = create_model("resnet-s", image_size=16, width=8).eval()
    wc, wt = 0.2, 0.3
    both = create_model(
        "resnet-s", image_size=16, width=8, colour_weight=wc, texture_weight=wt
    ).eval()
    both.load_state_dict(plain.state_dict())  # no weights of their own
    assert both.embedding_dim == plain.embedding_dim + 512 + 256
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        z, e = plain.embed(x), both.embed(x)
        assert torch.equal(both(x).embedding, e)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(4))
    c, t = hsv_histogram(x), lbp_histogram(x)
    got = torch.cdist(e, e) ** 2
    want = (
        (1 - wc - wt) * torch.cdist(z, z) ** 2
        + wc * torch.cdist(c, c) ** 2
        + wt * torch.cdist(t, t) ** 2
    )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"colour_weight": 1.0}, "colour_weight"),
        ({"colour_weight": -0.1}, "colour_weight"),
        ({"colour_weight": 0.2, "colour_bins": 1}, "colour_bins"),
        ({"colour_weight": 0.2, "in_channels": 1}, "three-channel"),
        ({"colour_weight": 0.2, "normalize": False}, "normalize"),
        ({"texture_weight": 0.6, "colour_weight": 0.5}, "below 1"),
    ],
)
def test_statistics_parts_that_cannot_be_computed_are_refused(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(LatentsearchError, match=message):
        create_model("resnet-s", image_size=16, width=8, **kwargs)
