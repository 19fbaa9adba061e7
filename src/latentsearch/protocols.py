"""Evaluation protocols: which images train the model and which ones score it.

``heldout`` (the default) is the honest one: the model fits the official training split and is
scored on images it never saw. ``seed`` reproduces Gosthipaty & Chakraborty (2020) exactly,
including its flaw of clustering the very images the hint head was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latentsearch.data import DataSplits, ImageData
from latentsearch.data.splits import stratified_split
from latentsearch.errors import ConfigError

PROTOCOLS = ("heldout", "seed")

# The study: a stratified 95/5 split of train+test, then Keras validation_split=0.2, which
# validates on the *last* 20% of the training arrays without shuffling them first.
SEED_TEST_FRACTION = 0.05
SEED_VALIDATION_SPLIT = 0.2
# heldout keeps a small stratified slice of the training split for the validation loss.
HELDOUT_VALIDATION_FRACTION = 0.05
# Sources without an official test split get one carved out, always with the same seed.
PSEUDO_TEST_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass
class ProtocolSplits:
    """The image sets one protocol derives from a data source.

    Attributes:
        fit: Images the model trains on.
        val: Images for the validation loss (never trained on), or None.
        cluster: Images whose embeddings KMeans clusters and scores.
        query: Retrieval queries.
        database: Images the queries search.
        same_set: Whether query and database are the same images (self-matches excluded).
    """

    fit: ImageData
    val: ImageData | None
    cluster: ImageData
    query: ImageData
    database: ImageData
    same_set: bool = False


def _official_split(data: DataSplits) -> tuple[ImageData, ImageData]:
    if data.test is not None:
        return data.train, data.test
    train_idx, test_idx = stratified_split(
        data.train.labels, test_fraction=PSEUDO_TEST_FRACTION, seed=SPLIT_SEED
    )
    return data.train.subset(train_idx), data.train.subset(test_idx)


def make_splits(data: DataSplits, protocol: str = "heldout") -> ProtocolSplits:
    """Derives the fit / validation / evaluation sets of a protocol.

    Args:
        data: A loaded data source.
        protocol: ``heldout`` or ``seed``.

    Raises:
        ConfigError: For an unknown protocol.
    """
    if protocol == "heldout":
        train, test = _official_split(data)
        fit_idx, val_idx = stratified_split(
            train.labels, test_fraction=HELDOUT_VALIDATION_FRACTION, seed=SPLIT_SEED
        )
        return ProtocolSplits(
            fit=train.subset(np.sort(fit_idx)),
            val=train.subset(np.sort(val_idx)),
            cluster=test,
            query=test,
            database=train,
        )
    if protocol == "seed":
        everything = ImageData.concatenate([data.train, data.test]) if data.test else data.train
        train_idx, test_idx = stratified_split(
            everything.labels, test_fraction=SEED_TEST_FRACTION, seed=SPLIT_SEED
        )
        train = everything.subset(train_idx)
        n_fit = int(len(train) * (1 - SEED_VALIDATION_SPLIT))
        return ProtocolSplits(
            fit=train.subset(np.arange(n_fit)),
            val=train.subset(np.arange(n_fit, len(train))),
            cluster=train,
            query=everything.subset(test_idx),
            database=train,
        )
    raise ConfigError("protocol", f"{protocol!r} is unknown; choose one of: {', '.join(PROTOCOLS)}")
