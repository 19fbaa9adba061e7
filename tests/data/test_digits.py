"""scikit-learn's digits: shapes, value mapping and the fixed stratified split."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits as sklearn_digits

from latentsearch.data import load_data


def test_shapes_split_sizes_and_values() -> None:
    splits = load_data("digits")
    train, test = splits.train, splits.test
    assert test is not None
    assert splits.name == "digits"
    assert train.pixels.shape == (1437, 8, 8, 1) and train.pixels.dtype == np.uint8
    assert test.pixels.shape == (360, 8, 8, 1)
    assert train.class_names == test.class_names == [str(i) for i in range(10)]
    reference = sklearn_digits()
    index = [int(i.rsplit("/", 1)[1]) for i in train.ids]
    test_index = [int(i.rsplit("/", 1)[1]) for i in test.ids]
    assert sorted(index + test_index) == list(range(1797))
    assert train.ids[0].startswith("digits/train/") and test.ids[0].startswith("digits/test/")
    expected = np.rint(reference.images[index] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(train.pixels[:, :, :, 0], expected)
    np.testing.assert_array_equal(train.labels, reference.target[index])
    assert train.pixels.max() == 255


def test_split_is_stratified_and_deterministic() -> None:
    a, b = load_data("digits"), load_data("digits")
    assert a.train.ids == b.train.ids
    assert a.test is not None
    counts = np.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_image_size() -> None:
    splits = load_data("digits", image_size=16)
    assert splits.train.pixels.shape == (1437, 16, 16, 1)
