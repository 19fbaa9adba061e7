"""The synthetic vectors the search benchmarks share (``bench_search``, ``bench_milvus``,
``bench_scale_index``), so that their figures are measured on the same data."""

from __future__ import annotations

import numpy as np


def clustered_vectors(
    n: int, dim: int = 128, components: int = 1_000, *, seed: int = 0
) -> np.ndarray:
    """A Gaussian mixture with per-axis scale ``j ** -0.25`` (j = 1..dim), randomly rotated.

    Components overlap, so the data is neither uniformly random (every neighbour equally far,
    hopeless for HNSW) nor trivially separable. Generated 100,000 rows at a time.

    Shape: (n, dim), float32.
    """
    rng = np.random.default_rng(seed)
    scale = np.arange(1, dim + 1, dtype=np.float32) ** -0.25
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    centres = rng.standard_normal((components, dim)).astype(np.float32) * scale
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(start + 100_000, n)
        comp = rng.integers(0, components, stop - start)
        x = centres[comp] + rng.standard_normal((stop - start, dim), dtype=np.float32) * scale
        out[start:stop] = x @ rotation
    return out
