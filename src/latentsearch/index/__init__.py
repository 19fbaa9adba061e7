"""Persisted image indexes: build with a trained run, save, load, search, update, deduplicate.

>>> from latentsearch.data import load_data
>>> from latentsearch.index import ImageIndex, all_images
>>> from latentsearch.runs import load_run
>>> run = load_run("runs/demo/seed-ae")
>>> index = ImageIndex.build(run, all_images(load_data("photos/", image_size=32)))
>>> index.save("photos.index")
>>> neighbors = ImageIndex.load("photos.index").search_images(run, pixels, k=10)
"""

from __future__ import annotations

from latentsearch.index.backends import (
    APPROXIMATE_INDEX,
    EXACT_MAX_ITEMS,
    INDEX_TYPES,
    METRIC,
    TARGET_RECALL,
)
from latentsearch.index.duplicates import DEFAULT_DUPLICATE_FRACTION, default_threshold
from latentsearch.index.errors import (
    FingerprintMismatch,
    ImageIndexError,
    IndexFormatError,
    StoredPixelsUnavailable,
    UnknownItem,
)
from latentsearch.index.image_index import (
    INDEX_FORMAT,
    ImageIndex,
    IndexItem,
    Neighbor,
    UpdateReport,
    all_images,
)
from latentsearch.index.vector_store import BACKENDS, MilvusOptions, VectorStore

__all__ = [
    "APPROXIMATE_INDEX",
    "BACKENDS",
    "DEFAULT_DUPLICATE_FRACTION",
    "EXACT_MAX_ITEMS",
    "INDEX_FORMAT",
    "INDEX_TYPES",
    "METRIC",
    "TARGET_RECALL",
    "FingerprintMismatch",
    "ImageIndex",
    "ImageIndexError",
    "IndexFormatError",
    "IndexItem",
    "MilvusOptions",
    "Neighbor",
    "StoredPixelsUnavailable",
    "UnknownItem",
    "UpdateReport",
    "VectorStore",
    "all_images",
    "default_threshold",
]
