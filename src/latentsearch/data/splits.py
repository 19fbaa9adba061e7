"""Seeded, stratified train/test splits and labelled subsets."""

from __future__ import annotations

import numpy as np

from latentsearch.data.base import DataError


def _as_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"labels must be one-dimensional (N,), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"labels must be integers (-1 for unlabelled), got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Splits items into train and test, keeping class proportions where possible.

    Uses scikit-learn's ``train_test_split`` with ``stratify=labels`` (unlabelled ``-1`` items
    form a group of their own). When stratification is impossible (all items unlabelled, a
    class with a single item, or fewer test items than classes) it falls back to a plain
    seeded random split.

    Args:
        labels: Class index per item, -1 where unknown. Shape: (N,).
        test_fraction: Share of the items that go to the test side, in (0, 1).
        seed: Random seed; the same inputs always give the same split.

    Returns:
        ``(train_index, test_index)``: sorted int64 indices into ``labels`` that together
        cover every item once. Shapes: (N - T,), (T,).

    Raises:
        DataError: For a fraction outside (0, 1) or fewer than two items.
    """
    y = _as_labels(labels)
    if not 0.0 < float(test_fraction) < 1.0:
        raise DataError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    n = len(y)
    if n < 2:
        raise DataError(f"cannot split {n} item(s) into train and test; need at least 2")
    from sklearn.model_selection import train_test_split  # 0.5 s to import: only when used

    index = np.arange(n)
    train = test = None
    if (y >= 0).any():
        try:
            train, test = train_test_split(
                index, test_size=test_fraction, random_state=seed, stratify=y
            )
        except ValueError:
            train = test = None
    if train is None or test is None:
        try:
            train, test = train_test_split(index, test_size=test_fraction, random_state=seed)
        except ValueError as exc:
            raise DataError(
                f"cannot split {n} items with test_fraction={test_fraction}: {exc}"
            ) from None
    return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)


def label_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Chooses which labels to keep, e.g. to simulate a partly labelled data set.

    Per class, ``round(fraction * count)`` items are kept (at least one when ``fraction > 0``),
    chosen at random with ``seed``. Unlabelled (-1) items are never kept.

    Args:
        labels: Class index per item, -1 where unknown. Shape: (N,).
        fraction: Share of each class's labelled items to keep, in [0, 1].
        seed: Random seed; the same inputs always give the same mask.

    Returns:
        Boolean mask, True where the label is kept. Shape: (N,).

    Raises:
        DataError: For a fraction outside [0, 1].
    """
    y = _as_labels(labels)
    if not 0.0 <= float(fraction) <= 1.0:
        raise DataError(f"fraction must be between 0 and 1, got {fraction}")
    keep = np.zeros(len(y), dtype=bool)
    if fraction == 0:
        return keep
    rng = np.random.default_rng(seed)
    for cls in np.unique(y[y >= 0]):
        members = np.flatnonzero(y == cls)
        k = min(len(members), max(1, round(fraction * len(members))))
        keep[rng.choice(members, size=k, replace=False)] = True
    return keep
