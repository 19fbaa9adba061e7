"""The two evaluation protocols: which images a model fits and which ones score it.

Every published figure rests on these splits, so they are pinned down here: sizes, which sets
are disjoint (heldout) or overlap (seed, the study's flaw), and that they never change.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from latentsearch.data import DataSplits, ImageData
from latentsearch.errors import ConfigError
from latentsearch.protocols import (
    HELDOUT_VALIDATION_FRACTION,
    PROTOCOLS,
    PSEUDO_TEST_FRACTION,
    SEED_TEST_FRACTION,
    SEED_VALIDATION_SPLIT,
    ProtocolSplits,
    make_splits,
)

N_CLASSES = 4


def _images(n: int, prefix: str, seed: int) -> ImageData:
    """``n`` tiny images of four balanced classes, in shuffled order, ids ``prefix/i``."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % N_CLASSES)
    return ImageData(
        pixels=rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8),
        labels=labels,
        class_names=[f"c{i}" for i in range(N_CLASSES)],
        ids=[f"{prefix}/{i}" for i in range(n)],
    )


@pytest.fixture
def official() -> DataSplits:
    """A source with an official split: 400 training and 100 test images."""
    return DataSplits(train=_images(400, "train", 0), test=_images(100, "test", 1), name="toy")


@pytest.fixture
def unsplit() -> DataSplits:
    """A source without a test split (a folder of class subfolders): 500 images."""
    return DataSplits(train=_images(500, "all", 2), test=None, name="folder")


def _ids(data: ImageData | None) -> set[str]:
    assert data is not None
    return set(data.ids)


def _fractions(data: ImageData) -> np.ndarray:
    counts = Counter(data.labels.tolist())
    return np.array([counts[c] for c in range(N_CLASSES)]) / len(data)


def test_the_protocols_are_heldout_and_seed() -> None:
    assert PROTOCOLS == ("heldout", "seed")


def test_heldout_fits_the_training_split_and_scores_the_official_test_split(
    official: DataSplits,
) -> None:
    s = make_splits(official, "heldout")
    n_val = round(len(official.train) * HELDOUT_VALIDATION_FRACTION)
    assert (len(s.fit), len(s.val or []), len(s.cluster)) == (400 - n_val, n_val, 100)
    # fit and val partition the training split; the database is all of it.
    assert _ids(s.fit) | _ids(s.val) == _ids(official.train) == _ids(s.database)
    assert not _ids(s.fit) & _ids(s.val)
    # Scored on images the model never saw: the official test split, as queries too.
    assert official.test is not None and s.cluster.ids == official.test.ids
    assert s.query is s.cluster and not s.same_set
    assert not (_ids(s.fit) | _ids(s.val)) & _ids(s.cluster)
    # fit and val keep the source's order (sorted positions), so batches are reproducible.
    order = {id_: i for i, id_ in enumerate(official.train.ids)}
    for part in (s.fit, s.val):
        assert part is not None
        positions = [order[i] for i in part.ids]
        assert positions == sorted(positions)


def test_heldout_carves_a_stratified_test_split_from_a_source_without_one(
    unsplit: DataSplits,
) -> None:
    s = make_splits(unsplit, "heldout")
    n_test = round(len(unsplit.train) * PSEUDO_TEST_FRACTION)
    assert len(s.cluster) == n_test and len(s.database) == len(unsplit.train) - n_test
    assert len(s.fit) + len(s.val or []) == len(s.database)
    assert _ids(s.cluster) | _ids(s.database) == _ids(unsplit.train)
    assert not _ids(s.cluster) & _ids(s.database)
    assert not _ids(s.fit) & _ids(s.cluster)
    # Stratified: every class keeps its share in the test and validation sets.
    assert s.val is not None
    np.testing.assert_allclose(_fractions(s.cluster), _fractions(unsplit.train), atol=0.01)
    np.testing.assert_allclose(_fractions(s.val), _fractions(unsplit.train), atol=0.05)


def test_seed_reproduces_the_studys_split_and_its_flaw(official: DataSplits) -> None:
    s = make_splits(official, "seed")
    everything = _ids(official.train) | _ids(official.test)
    n_test = round(len(everything) * SEED_TEST_FRACTION)
    n_train = len(everything) - n_test
    n_fit = int(n_train * (1 - SEED_VALIDATION_SPLIT))
    assert (len(s.query), len(s.cluster), len(s.database)) == (n_test, n_train, n_train)
    assert (len(s.fit), len(s.val or [])) == (n_fit, n_train - n_fit)
    # The study pools train and test, then splits 95/5: queries come from both.
    assert _ids(s.query) | _ids(s.cluster) == everything
    assert not _ids(s.query) & _ids(s.cluster)
    assert {i.split("/")[0] for i in s.query.ids} == {"train", "test"}
    # Keras validation_split: fit on the first 80% of the training arrays, validate on the
    # last 20%, in the split's order, unshuffled.
    assert s.fit.ids == s.cluster.ids[:n_fit]
    assert s.val is not None and s.val.ids == s.cluster.ids[n_fit:]
    # The flaw: KMeans clusters the very images the model (and its hint head) fit.
    assert _ids(s.fit) < _ids(s.cluster)
    assert not _ids(s.fit) & _ids(s.query)
    assert s.database.ids == s.cluster.ids and not s.same_set
    counts = np.bincount(s.query.labels, minlength=N_CLASSES)  # stratified: balanced
    assert counts.max() - counts.min() <= 1


def test_seed_on_a_source_without_a_test_split_splits_all_of_it(unsplit: DataSplits) -> None:
    s = make_splits(unsplit, "seed")
    assert len(s.query) == round(len(unsplit.train) * SEED_TEST_FRACTION)
    assert _ids(s.query) | _ids(s.cluster) == _ids(unsplit.train)
    assert not _ids(s.query) & _ids(s.cluster)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_splits_never_change(official: DataSplits, protocol: str) -> None:
    def ids(s: ProtocolSplits) -> list[list[str]]:
        return [p.ids for p in (s.fit, s.val, s.cluster, s.query, s.database) if p is not None]

    assert official.test is not None
    first = make_splits(official, protocol)
    again = make_splits(official, protocol)
    assert ids(first) == ids(again)
    # Pixels and labels travel with their ids.
    lookup = {id_: i for i, id_ in enumerate([*official.train.ids, *official.test.ids])}
    pixels = np.concatenate([official.train.pixels, official.test.pixels])
    labels = np.concatenate([official.train.labels, official.test.labels])
    for part in (first.fit, first.cluster, first.query):
        rows = [lookup[i] for i in part.ids]
        assert np.array_equal(part.pixels, pixels[rows])
        assert np.array_equal(part.labels, labels[rows])


def test_heldout_on_digits_has_the_sizes_the_demo_reports(digits: DataSplits) -> None:
    s = make_splits(digits, "heldout")
    assert (len(s.fit), len(s.val or []), len(s.cluster), len(s.database)) == (
        1365,
        72,
        360,
        1437,
    )
    s = make_splits(digits, "seed")
    assert (len(s.fit), len(s.val or []), len(s.cluster), len(s.query)) == (1365, 342, 1707, 90)


def test_an_unknown_protocol_is_refused_naming_the_choices(official: DataSplits) -> None:
    with pytest.raises(ConfigError, match="heldout, seed") as e:
        make_splits(official, "leaky")
    assert e.value.field == "protocol"
