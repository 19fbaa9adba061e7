"""2-D maps of embeddings: t-SNE (openTSNE when installed, else scikit-learn) and UMAP."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import numpy as np

MIN_POINTS = 5  # fewer points than this make no map worth drawing


def _importable(name: str) -> bool:
    # find_spec alone would miss (or choke on) a module placed in sys.modules by hand.
    if name in sys.modules:
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


def _perplexity(n: int) -> float:
    # 30 is the usual default; both libraries need it well below the number of points.
    return float(min(30.0, max(2.0, (n - 1) / 3)))


def _check(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must have shape (N, D), got {x.shape}")
    if len(x) < MIN_POINTS:
        raise ValueError(f"a 2-D map needs at least {MIN_POINTS} points, got {len(x)}")
    return x


def tsne_backend() -> str:
    """``"openTSNE"`` when that package is importable, else ``"scikit-learn"``."""
    return "openTSNE" if _importable("openTSNE") else "scikit-learn"


def tsne_2d(x: np.ndarray, *, seed: int = 0, backend: str | None = None) -> np.ndarray:
    """Seeded t-SNE of embeddings to 2-D.

    Args:
        x: Embeddings. Shape: (N, D), N >= 5.
        seed: Random state of the optimisation (PCA initialisation, so runs repeat).
        backend: ``"openTSNE"`` or ``"scikit-learn"``; None picks :func:`tsne_backend`.

    Returns:
        Map coordinates. Shape: (N, 2), float32.

    Raises:
        ValueError: For too few points, a wrong shape or an unknown backend.
    """
    x = _check(x)
    backend = backend or tsne_backend()
    perplexity = _perplexity(len(x))
    if backend == "openTSNE":
        from openTSNE import TSNE as OpenTSNE

        points = OpenTSNE(
            n_components=2, perplexity=perplexity, random_state=seed, n_jobs=1, verbose=False
        ).fit(x)
    elif backend == "scikit-learn":
        from sklearn.manifold import TSNE

        points = TSNE(
            n_components=2, perplexity=perplexity, random_state=seed, init="pca"
        ).fit_transform(x)
    else:
        raise ValueError(f"unknown t-SNE backend {backend!r}; choose openTSNE or scikit-learn")
    return np.asarray(points, dtype=np.float32)


def umap_available() -> bool:
    """Whether the ``umap`` package (umap-learn) is importable."""
    return _importable("umap")


def umap_2d(x: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Seeded UMAP of embeddings to 2-D (needs the optional ``umap-learn`` package).

    Args:
        x: Embeddings. Shape: (N, D), N >= 5.
        seed: UMAP's random state.

    Returns:
        Map coordinates. Shape: (N, 2), float32.

    Raises:
        ValueError: For too few points or a wrong shape.
        ModuleNotFoundError: Without ``umap-learn``.
    """
    x = _check(x)
    umap = importlib.import_module("umap")
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed)
    return np.asarray(reducer.fit_transform(x), dtype=np.float32)
