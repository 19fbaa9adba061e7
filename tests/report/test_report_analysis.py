"""Samples, matched contingency and per-class precision, checked against other code."""

from __future__ import annotations

import numpy as np
import pytest

from latentsearch.metrics import clustering_accuracy, nearest_neighbors, retrieval_scores
from latentsearch.report.analysis import (
    matched_contingency,
    per_class_precision,
    stratified_sample,
)


def test_stratified_sample_keeps_class_shares_and_repeats_with_its_seed() -> None:
    labels = np.array([0] * 500 + [1] * 300 + [2] * 200)
    sample = stratified_sample(labels, 100, seed=3)
    assert len(sample) == len(set(sample.tolist())) == 100
    assert np.all(np.diff(sample) > 0)
    assert np.bincount(labels[sample]).tolist() == [50, 30, 20]
    assert np.array_equal(sample, stratified_sample(labels, 100, seed=3))
    assert not np.array_equal(sample, stratified_sample(labels, 100, seed=4))
    assert np.array_equal(stratified_sample(labels, 5000), np.arange(1000))
    with pytest.raises(ValueError, match="at least 1"):
        stratified_sample(labels, 0)


def test_matched_contingency_puts_matched_pairs_on_the_diagonal() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    clusters = np.array([2, 2, 1, 0, 0, 1, 1, 2])
    counts, order = matched_contingency(labels, clusters, n_classes=3)
    assert order.tolist() == [2, 0, 1]
    assert counts.tolist() == [[2, 0, 1], [0, 2, 0], [1, 0, 2]]
    assert np.trace(counts) / len(labels) == clustering_accuracy(labels, clusters)


def test_matched_contingency_rejects_unlabelled_items() -> None:
    with pytest.raises(ValueError, match="drop unlabelled"):
        matched_contingency(np.array([0, -1]), np.array([0, 1]), n_classes=2)


@pytest.mark.parametrize("same_set", [False, True])
def test_per_class_precision_averages_back_to_retrieval_scores(same_set: bool) -> None:
    rng = np.random.default_rng(0)
    db_labels = rng.integers(0, 4, 120)
    database = rng.normal(size=(120, 5)) + db_labels[:, None]
    if same_set:
        query, q_labels = database, db_labels
        _, idx = nearest_neighbors(query, database, 10, exclude_self=True)
    else:
        q_labels = np.append(rng.integers(0, 4, 40), -1)  # an unlabelled query is skipped
        query = rng.normal(size=(41, 5)) + q_labels[:, None]
        _, idx = nearest_neighbors(query, database, 10)
    precision, counts = per_class_precision(
        q_labels, db_labels[idx], db_labels, k=10, same_set=same_set, n_classes=5
    )
    assert counts[4] == 0 and np.isnan(precision[4])
    overall = retrieval_scores(query, q_labels, database, db_labels, same_set=same_set)
    weighted = np.nansum(precision * counts) / counts.sum()
    assert weighted == pytest.approx(overall["precision_at_10"], abs=1e-12)
