"""Persisted image indexes: build with a trained run, save, load, search, update, deduplicate.

Every index is built and updated by one pipeline, ``streaming.index_images`` /
``streaming.update_images``, from a folder of files (streamed) or images in memory, with
what to build given as an :class:`IndexSpec`; ``ImageIndex`` loads, saves and searches.
Vector stores (FAISS, Milvus) are chosen by name in ``stores``.

>>> from latentsearch.index import IndexSpec
>>> from latentsearch.index.streaming import index_images
>>> from latentsearch.runs import load_run
>>> run = load_run("runs/demo/seed-ae")
>>> index_images(run, "photos/", "photos.index", spec=IndexSpec(index_type="hnsw"))
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
from latentsearch.index.spec import IndexSpec
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
    "IndexSpec",
    "MilvusOptions",
    "Neighbor",
    "StoredPixelsUnavailable",
    "UnknownItem",
    "UpdateReport",
    "VectorStore",
    "all_images",
    "default_threshold",
]
