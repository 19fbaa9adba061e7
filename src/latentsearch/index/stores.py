"""The vector-store backends by name: a registry, so no caller branches on the backend.

Every backend implements ``vector_store.VectorStore`` and is registered here under its
``backend`` name; a manifest names the backend that saved it. The backend modules import only
the interface, never this registry, so the import graph has no circle.

>>> store = create_store(vectors, "auto", backend="milvus", fingerprint=fp)
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import numpy as np

from latentsearch.index.errors import ImageIndexError
from latentsearch.index.milvus import MilvusStore
from latentsearch.index.vector_store import (
    BACKENDS,
    DEFAULT_BACKEND,
    FaissStore,
    MilvusOptions,
    VectorStore,
)

STORES: dict[str, type[VectorStore]] = {cls.backend: cls for cls in (FaissStore, MilvusStore)}
"""Backend name -> its store class; the keys are ``vector_store.BACKENDS``."""

Backend = str | MilvusOptions
"""A backend as callers give it: a name of ``STORES``, or ``MilvusOptions`` for Milvus."""


def store_class(backend: Backend) -> type[VectorStore]:
    """The store class ``backend`` names.

    Raises:
        ImageIndexError: For an unknown name.
    """
    name = MilvusStore.backend if isinstance(backend, MilvusOptions) else backend
    if name not in STORES:
        raise ImageIndexError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return STORES[name]


def _options(backend: Backend) -> MilvusOptions | None:
    return backend if isinstance(backend, MilvusOptions) else None


def create_store(
    vectors: np.ndarray,
    index_type: str,
    *,
    backend: Backend = DEFAULT_BACKEND,
    fingerprint: dict[str, Any],
) -> VectorStore:
    """Builds the store ``backend`` names over ``vectors`` (see ``VectorStore.create``).

    Args:
        vectors: Shape: (N, D), float32, N >= 1.
        index_type: One of ``backends.INDEX_TYPES``.
        backend: ``faiss``, ``milvus`` (embedded milvus-lite, default options) or
            :class:`MilvusOptions`.
        fingerprint: The building run's fingerprint; a Milvus collection records it.

    Raises:
        ImageIndexError: For an unknown backend or index type, a Milvus server that cannot
            be reached, or a collection that holds another model's vectors.
    """
    cls = store_class(backend)
    return cls.create(vectors, index_type, fingerprint=fingerprint, options=_options(backend))


def check_reachable(backend: Backend) -> None:
    """Connects to the backend's server, if it has one, so a command fails before any work.

    Raises:
        ImageIndexError: For an unknown backend or a server that cannot be reached.
    """
    store_class(backend).check_reachable(_options(backend))


def backend_of(manifest: dict[str, Any]) -> str:
    """The backend a manifest names; manifests from before backends existed are FAISS.

    Raises:
        ValueError: For an unknown backend.
    """
    backend = manifest.get("backend", DEFAULT_BACKEND)
    if backend not in STORES:
        raise ValueError(f"unknown backend {backend!r:.40}; this version knows faiss, milvus")
    return str(backend)


def files_needed(manifest: dict[str, Any]) -> list[str]:
    """The files, beside the manifest, that an index folder with this manifest holds."""
    return STORES[backend_of(manifest)].files_needed(manifest)


def open_store(
    folder: Path,
    manifest: dict[str, Any],
    files: dict[str, IO[bytes]],
    *,
    count: int,
    embeddings: np.ndarray | None,
    options: MilvusOptions | None = None,
) -> VectorStore:
    """Reopens the store of a saved index folder (see ``VectorStore.open``).

    Raises:
        IndexFormatError: For a store that does not match the manifest.
        ImageIndexError: For a Milvus server that cannot be reached.
    """
    cls = STORES[backend_of(manifest)]
    return cls.open(folder, manifest, files, count=count, embeddings=embeddings, options=options)
