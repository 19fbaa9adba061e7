"""stratified_split and label_subset: coverage, proportions, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from latentsearch.data import DataError, label_subset, stratified_split

LABELS = np.repeat(np.arange(4), [40, 20, 10, 30])  # 100 items, unbalanced


def test_stratified_split_partitions_and_keeps_proportions() -> None:
    train, test = stratified_split(LABELS, 0.2, seed=0)
    assert len(test) == 20 and len(train) == 80
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    assert np.bincount(LABELS[test], minlength=4).tolist() == [8, 4, 2, 6]


def test_stratified_split_is_seeded() -> None:
    a = stratified_split(LABELS, 0.3, seed=1)
    b = stratified_split(LABELS, 0.3, seed=1)
    c = stratified_split(LABELS, 0.3, seed=2)
    assert np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_stratified_split_unlabelled_and_fallbacks() -> None:
    unlabelled = -np.ones(50, dtype=np.int64)
    train, test = stratified_split(unlabelled, 0.2, seed=0)
    assert len(test) == 10 and len(np.intersect1d(train, test)) == 0
    # A class with one member cannot be stratified: plain random split instead.
    single = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])
    train, test = stratified_split(single, 0.5, seed=0)
    assert len(train) + len(test) == 9


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_stratified_split_bad_fraction(fraction: float) -> None:
    with pytest.raises(DataError, match="test_fraction"):
        stratified_split(LABELS, fraction, seed=0)


def test_stratified_split_too_few_items() -> None:
    with pytest.raises(DataError, match="at least 2"):
        stratified_split(np.array([0]), 0.5, seed=0)


def test_label_subset_per_class_counts() -> None:
    labels = np.concatenate([LABELS, -np.ones(7, dtype=np.int64)])
    mask = label_subset(labels, 0.1, seed=0)
    assert mask.dtype == bool and mask.shape == labels.shape
    assert not mask[labels == -1].any()
    assert np.bincount(labels[mask], minlength=4).tolist() == [4, 2, 1, 3]
    # At least one per class however small the fraction.
    tiny = label_subset(labels, 0.001, seed=0)
    assert np.bincount(labels[tiny], minlength=4).tolist() == [1, 1, 1, 1]
    assert not label_subset(labels, 0.0, seed=0).any()
    assert np.array_equal(label_subset(labels, 1.0, seed=0), labels >= 0)


def test_label_subset_is_seeded() -> None:
    a = label_subset(LABELS, 0.5, seed=3)
    assert np.array_equal(a, label_subset(LABELS, 0.5, seed=3))
    assert not np.array_equal(a, label_subset(LABELS, 0.5, seed=4))


@pytest.mark.parametrize("fraction", [-0.5, 1.01])
def test_label_subset_bad_fraction(fraction: float) -> None:
    with pytest.raises(DataError, match="fraction"):
        label_subset(LABELS, fraction, seed=0)


def test_bad_labels_shape() -> None:
    with pytest.raises(DataError, match="one-dimensional"):
        label_subset(np.zeros((2, 2), dtype=int), 0.5, seed=0)
