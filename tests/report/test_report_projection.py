"""2-D maps: both t-SNE backends, the UMAP hook, and their errors."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from latentsearch.report import projection


@pytest.fixture
def blobs() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(40, 6)) + np.repeat(np.arange(2), 20)[:, None] * 8).astype(np.float32)


@pytest.mark.parametrize("backend", ["openTSNE", "scikit-learn"])
def test_tsne_maps_to_2d_repeatably_and_keeps_blobs_apart(blobs: np.ndarray, backend: str) -> None:
    if backend == "openTSNE":
        pytest.importorskip("openTSNE")
    points = projection.tsne_2d(blobs, seed=1, backend=backend)
    assert points.shape == (40, 2) and points.dtype == np.float32
    assert np.array_equal(points, projection.tsne_2d(blobs, seed=1, backend=backend))
    a, b = points[:20].mean(axis=0), points[20:].mean(axis=0)
    spread = max(points[:20].std(), points[20:].std())
    assert np.linalg.norm(a - b) > 2 * spread


def test_tsne_falls_back_to_scikit_learn_without_opentsne(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "openTSNE", None)
    assert projection.tsne_backend() == "scikit-learn"


def test_map_errors_are_clear(blobs: np.ndarray) -> None:
    with pytest.raises(ValueError, match="at least 5 points"):
        projection.tsne_2d(blobs[:3])
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        projection.tsne_2d(blobs[0])
    with pytest.raises(ValueError, match="unknown t-SNE backend"):
        projection.tsne_2d(blobs, backend="nope")


def test_umap_is_used_when_importable(monkeypatch: pytest.MonkeyPatch, blobs: np.ndarray) -> None:
    calls: list[dict[str, object]] = []

    class FakeUMAP:
        def __init__(self, **kwargs: object) -> None:
            calls.append(kwargs)

        def fit_transform(self, x: np.ndarray) -> np.ndarray:
            return x[:, :2]

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    assert projection.umap_available()
    points = projection.umap_2d(blobs, seed=7)
    assert points.shape == (40, 2)
    assert calls == [{"n_components": 2, "n_neighbors": 15, "random_state": 7}]
    monkeypatch.setitem(sys.modules, "umap", None)
    assert not projection.umap_available()
