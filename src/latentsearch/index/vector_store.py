"""One small interface over what holds an index's vectors: FAISS in memory, or Milvus.

An :class:`~latentsearch.index.ImageIndex` keeps one float32 embedding per item; a
:class:`VectorStore` holds the same rows, in the same order, and answers nearest-neighbour
queries over them by squared Euclidean distance. Row ``i`` of the store is item ``i``:
``add`` appends rows, ``remove`` drops rows and closes the gaps (order kept), ``replace``
makes the store hold exactly the given rows. A store contributes its part of the index
folder (``save_parts``), which the index writes atomically with ``storage.write_folder``;
``open`` reads it back. The index never asks which backend it holds: ``latentsearch.index.stores``
picks the class by name.

This module holds the interface and FAISS, its default implementation; Milvus implements the
same interface in ``latentsearch.index.milvus``.

>>> store = FaissStore.create(vectors, "flat", fingerprint=fp)
>>> distances, positions = store.add(more).search(queries, k=10)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

from latentsearch.index import backends
from latentsearch.index.errors import ImageIndexError, IndexFormatError

BACKENDS = ("faiss", "milvus")
"""Accepted backend names; ``faiss`` is the default."""

DEFAULT_BACKEND = "faiss"

TOKEN_ENV = "LATENTSEARCH_MILVUS_TOKEN"
"""Environment variable holding the Milvus token when none is given (tokens are never saved)."""

FAISS_FILE = "index.faiss"
"""The FAISS structure's file in an index folder."""


@dataclass(frozen=True)
class MilvusOptions:
    """Where a Milvus-backed index keeps its vectors.

    Attributes:
        uri: None for an embedded milvus-lite database inside the index folder
            (``milvus.db``); else a Milvus server or cluster, e.g. ``http://host:19530``.
        token: Credentials for the server (``user:password`` or an API key); never saved.
        db_name: The server's database, None for its default.
        collection: The collection holding the vectors.
        timeout: Seconds to wait for the server before giving up.
    """

    uri: str | None = None
    token: str | None = field(default=None, repr=False)
    db_name: str | None = None
    collection: str = "latentsearch"
    timeout: float = 10.0


@dataclass(frozen=True)
class SaveParts:
    """A store's part of the index folder.

    Attributes:
        files: File name -> a writer that fills the open file.
        folders: Folder name -> a writer that creates that folder at the given path.
        manifest: Fields the store adds to the manifest (the backend and where it lives).
        keeps_embeddings: Whether the folder must hold ``embeddings.npy``; False when the
            store can give the vectors back itself (a Milvus server).
    """

    files: dict[str, Callable[[IO[bytes]], None]] = field(default_factory=dict)
    folders: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    keeps_embeddings: bool = True


class VectorStore(ABC):
    """Rows of float32 vectors searchable by squared L2; row ``i`` is the index's item ``i``.

    A backend is a subclass registered by its ``backend`` name in
    ``latentsearch.index.stores``; it is made with :meth:`create` and reopened with
    :meth:`open`.

    Attributes:
        backend: ``faiss`` or ``milvus``.
        index_type: ``flat`` (exact), ``hnsw`` or ``ivf`` (approximate).
        params: Build and search settings, e.g. ``{"nlist": 400, "nprobe": 16}``.
        recall_at_10: Sample recall@10 against exact search at build; None when exact.
    """

    backend: ClassVar[str]
    index_type: str
    params: dict[str, int]
    recall_at_10: float | None

    @classmethod
    @abstractmethod
    def create(
        cls,
        vectors: np.ndarray,
        index_type: str,
        *,
        fingerprint: dict[str, Any],
        options: MilvusOptions | None = None,
    ) -> VectorStore:
        """Builds a store over ``vectors`` (and tunes an approximate one for recall).

        Args:
            vectors: Shape: (N, D), float32, N >= 1.
            index_type: One of ``backends.INDEX_TYPES``, as requested (``auto`` included).
            fingerprint: The building run's fingerprint (a Milvus collection records it).
            options: Where a Milvus store keeps its vectors; None for the defaults. FAISS
                ignores it.

        Raises:
            ImageIndexError: For an index kind the backend lacks, or a place it cannot use.
        """

    @classmethod
    @abstractmethod
    def open(
        cls,
        folder: Path,
        manifest: dict[str, Any],
        files: dict[str, IO[bytes]],
        *,
        count: int,
        embeddings: np.ndarray | None,
        options: MilvusOptions | None = None,
    ) -> VectorStore:
        """Reopens the store of a saved index folder.

        Args:
            folder: The index folder.
            manifest: Its manifest (checked).
            files: The open files named by :meth:`files_needed`.
            count: Items the manifest lists.
            embeddings: The folder's ``embeddings.npy``, None where it keeps none.
                Shape: (count, D).
            options: For a Milvus server: the token (never saved) and a longer timeout.

        Raises:
            IndexFormatError: For a store that does not match the manifest.
            ImageIndexError: For a server that cannot be reached.
        """

    @staticmethod
    @abstractmethod
    def files_needed(manifest: dict[str, Any]) -> list[str]:
        """The files, beside the manifest, that an index folder of this backend holds."""

    @classmethod  # noqa: B027 - most stores have no server to reach
    def check_reachable(cls, options: MilvusOptions | None) -> None:
        """Fails fast (ImageIndexError) when the store's server cannot be reached."""

    @abstractmethod
    def __len__(self) -> int:
        """Rows held."""

    rows: np.ndarray | None = None
    """The indexed vectors in row order when the caller keeps them (``ImageIndex`` does): a
    compressed store (FAISS IVF-PQ) re-ranks its candidates with them. Shape: (N, D)."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows of each query.

        Args:
            queries: Checked, C-contiguous. Shape: (Q, D), float32.
            k: 1 <= k <= len(self).

        Returns:
            ``(distances, positions)``, nearest first; squared L2 (float32) and row numbers
            (int64), -1 and inf in slots an approximate search left empty. Shapes: (Q, k).
        """

    @abstractmethod
    def add(self, vectors: np.ndarray) -> VectorStore:
        """Appends rows. Shape: (M, D), float32."""

    @abstractmethod
    def remove(self, positions: np.ndarray) -> VectorStore:
        """Drops these rows; the rows after each move up, keeping their order."""

    @abstractmethod
    def replace(self, vectors: np.ndarray) -> VectorStore:
        """Makes the store hold exactly ``vectors`` (same kind; approximate ones re-tuned).

        Args:
            vectors: Shape: (N, D), float32, N >= 1.
        """

    @abstractmethod
    def save_parts(self) -> SaveParts:
        """What the index folder holds for this store (see :class:`SaveParts`)."""

    @property
    def duplicate_index(self) -> Any | None:
        """A FAISS index with ``range_search`` for approximate duplicate search, or None
        when duplicates are to be found exactly from the embeddings."""
        return None

    def stored_vectors(self) -> np.ndarray | None:
        """The rows, when the index folder does not keep them itself. Shape: (N, D)."""
        return None

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Releases connections and scratch files; the store is unusable afterwards."""


def _check_positions(positions: np.ndarray, n: int) -> np.ndarray:
    pos = np.unique(np.asarray(positions, dtype=np.int64))
    if pos.size and (pos[0] < 0 or pos[-1] >= n):
        raise ImageIndexError(f"positions to remove must lie in [0, {n}), got {pos[[0, -1]]}")
    return pos


class FaissStore(VectorStore):
    """The FAISS index of ``backends.build_index``, in memory, saved as ``index.faiss``."""

    backend = "faiss"

    def __init__(self, built: backends.BuiltIndex, *, requested: str | None = None) -> None:
        self.built = built
        self.index_type = built.index_type
        self.params = dict(built.params)
        self.recall_at_10 = built.recall_at_10
        self._requested = requested or built.index_type

    @classmethod
    def build(cls, vectors: np.ndarray, index_type: str = "auto") -> FaissStore:
        """Builds and tunes the FAISS index ``index_type`` asks for. Shape: (N, D)."""
        return cls(backends.build_index(vectors, index_type), requested=index_type)

    @classmethod
    def create(
        cls,
        vectors: np.ndarray,
        index_type: str,
        *,
        fingerprint: dict[str, Any],
        options: MilvusOptions | None = None,
    ) -> FaissStore:
        return cls.build(vectors, index_type)

    @staticmethod
    def files_needed(manifest: dict[str, Any]) -> list[str]:
        return ["embeddings.npy", FAISS_FILE]

    @classmethod
    def open(
        cls,
        folder: Path,
        manifest: dict[str, Any],
        files: dict[str, IO[bytes]],
        *,
        count: int,
        embeddings: np.ndarray | None,
        options: MilvusOptions | None = None,
    ) -> FaissStore:
        return cls.read(
            files[FAISS_FILE],
            dim=int(manifest["fingerprint"]["embedding_dim"]),
            index_type=str(manifest["index_type"]),
            params={str(k): int(v) for k, v in manifest["index_params"].items()},
            recall=manifest.get("recall_at_10"),
        )

    def __len__(self) -> int:
        return int(self.built.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # IVF-PQ re-ranks its candidates with exact distances from the rows the caller keeps.
        distances, positions = backends.search_index(self.built, queries, k, vectors=self.rows)
        positions = positions.astype(np.int64)
        distances = np.where(positions >= 0, distances, np.inf).astype(np.float32)
        return distances, positions

    def add(self, vectors: np.ndarray) -> FaissStore:
        self.built.index.add(backends.as_vectors(vectors, self.built.index.d))
        return self

    def remove(self, positions: np.ndarray) -> FaissStore:
        pos = _check_positions(positions, len(self))
        if pos.size == 0:
            return self
        if self.index_type == "flat":  # compacts in place, order kept
            self.built.index.remove_ids(pos)
            return self
        # Graph and list indexes cannot close the gaps: rebuild from the kept rows.
        kept = np.delete(self._vectors(), pos, axis=0)
        return self.replace(kept)

    def replace(self, vectors: np.ndarray) -> FaissStore:
        built = backends.build_index(vectors, self._requested)
        self.built = built
        self.index_type, self.params = built.index_type, dict(built.params)
        self.recall_at_10 = built.recall_at_10
        return self

    def _vectors(self) -> np.ndarray:
        import faiss

        if self.rows is not None and len(self.rows) == len(self):
            return np.asarray(self.rows, dtype=np.float32)  # exact; PQ would reconstruct lossily

        index: Any = self.built.index
        if self.index_type == "ivf":
            faiss.extract_index_ivf(index).make_direct_map()
        return np.asarray(index.reconstruct_n(0, index.ntotal), dtype=np.float32)

    def save_parts(self) -> SaveParts:
        import faiss

        io_: Any = faiss  # the callback writer is missing from faiss's type stubs
        index = self.built.index

        def write_index(f: IO[bytes]) -> None:
            faiss.write_index(index, io_.PyCallbackIOWriter(f.write))

        return SaveParts(files={FAISS_FILE: write_index}, manifest={"backend": "faiss"})

    @property
    def duplicate_index(self) -> Any | None:
        return None if self.index_type == "flat" else self.built.index

    @classmethod
    def read(
        cls,
        file: IO[bytes],
        *,
        dim: int,
        index_type: str,
        params: dict[str, int],
        recall: float | None,
    ) -> FaissStore:
        """Reads ``index.faiss`` and checks it is the kind the manifest says.

        Raises:
            IndexFormatError: For a file that is not a FAISS index of that kind.
        """
        import faiss

        io_: Any = faiss  # the callback reader is missing from faiss's type stubs
        try:
            index = faiss.read_index(io_.PyCallbackIOReader(file.read))
        except (RuntimeError, ValueError, OSError) as e:
            raise IndexFormatError(f"{FAISS_FILE} is corrupt: {e}") from None
        if int(index.d) != dim:
            raise IndexFormatError(
                f"{FAISS_FILE} holds vectors of dimension {index.d}, the manifest promises {dim}"
            )
        found = backends.index_type_of(index)
        if found != index_type:
            raise IndexFormatError(
                f"{FAISS_FILE} holds a {found or 'unknown kind of'} index, the manifest says "
                f"{index_type!r}: the folder was edited or mixed from two indexes; rebuild it "
                "with `latentsearch index`"
            )
        backends.set_search_params(index, index_type, params)
        built = backends.BuiltIndex(
            index=index, index_type=index_type, params=params, recall_at_10=recall
        )
        return cls(built)
