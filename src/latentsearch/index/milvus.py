"""Milvus as an index's vector store: embedded milvus-lite in the index folder, or a server.

By default the vectors live in an embedded milvus-lite database, ``milvus.db`` inside the
index folder (no server to start). Building or loading works on a private scratch copy of
that database, so the folder is only ever written by an atomic save (like ``index.faiss``):
the save closes the scratch database, copies it into the new folder and swaps the folder
into place. With a server URI (``http://host:19530``) the vectors live in the server's
collection; the folder holds the manifest only, and loading fetches the vectors back.

The collection stores one row per item: ``pos`` (the item's position, the primary key) and
``vec`` (its embedding), and records the building run's fingerprint in its properties, so a
collection holding another model's vectors is refused rather than overwritten.
Milvus's ``L2`` metric is squared Euclidean distance, the project's convention.

pymilvus is imported only here, and only when a Milvus store is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import IO, Any

import numpy as np

from latentsearch.index import backends
from latentsearch.index.errors import ImageIndexError, IndexFormatError
from latentsearch.index.vector_store import TOKEN_ENV, MilvusOptions, SaveParts, VectorStore

DB_FOLDER = "milvus.db"
"""The embedded database's folder inside an index folder."""

PK_FIELD = "pos"
VECTOR_FIELD = "vec"
FINGERPRINT_PROPERTY = "latentsearch.fingerprint"
"""Collection property holding the building run's fingerprint (sorted-key JSON)."""

MILVUS_INDEX = {"flat": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT"}
"""Milvus index type for each of the project's index kinds."""

WRITE_BATCH = 8_192
"""Rows per insert / upsert / query call (1M x 128-d stays far below gRPC's message limit)."""

SEARCH_BATCH = 256
"""Queries per search call."""

MAX_K = 16_384
"""Milvus's largest ``limit``."""

TUNE_SAMPLE = 200
"""Indexed vectors used as queries when tuning an approximate collection's search setting."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


def collection_name_for(folder: str | Path) -> str:
    """A collection name derived from an index folder's name: ``latentsearch_<name>``."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", Path(folder).name) or "index"
    return f"latentsearch_{stem}"[:255]


def _pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError:
        raise ImageIndexError(
            "the milvus backend needs pymilvus and milvus-lite: pip install 'latentsearch[milvus]'"
        ) from None
    return pymilvus


def _open_client(options: MilvusOptions, copy_of: Path | None = None) -> tuple[Any, Path | None]:
    """A client of the server at ``options.uri`` or, without one, of an embedded database.

    The embedded database lives in a private scratch folder (empty, or a copy of ``copy_of``
    without its lock), so that a save can swap index folders while a server reads the old one.

    Returns:
        The client, and the scratch folder to remove when done (None for a server).
    """
    if options.uri is not None:
        return _connect(options.uri, options), None
    scratch = Path(tempfile.mkdtemp(prefix="latentsearch-milvus-"))
    try:
        if copy_of is not None:
            shutil.copytree(copy_of, scratch / DB_FOLDER, ignore=shutil.ignore_patterns("LOCK"))
        return _connect(str(scratch / DB_FOLDER), options), scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _connect(uri: str, options: MilvusOptions) -> Any:
    """A dedicated client; ImageIndexError naming ``uri`` when it cannot be reached."""
    pymilvus = _pymilvus()
    try:
        return pymilvus.MilvusClient(
            uri=uri,
            token=options.token or "",
            db_name=options.db_name or "",
            timeout=options.timeout,
            dedicated=True,
        )
    except Exception as e:  # pymilvus raises MilvusException, grpc errors, ValueError...
        what = "open the embedded Milvus database at" if uri.endswith(".db") else "reach Milvus"
        reason = getattr(e, "message", None) or str(e) or type(e).__name__
        raise ImageIndexError(
            f"cannot {what} {uri}: {reason}. Check the address (--milvus-uri), that the "
            "server is running, and the token / database (--milvus-token, --milvus-db)"
        ) from None


def check_reachable(options: MilvusOptions) -> None:
    """Connects once and closes, so a command can fail before doing any work.

    Raises:
        ImageIndexError: When the server cannot be reached within ``options.timeout``.
    """
    if options.uri is not None:
        _connect(options.uri, options).close()


def _kind(requested: str, n: int) -> str:
    """The kind ``requested`` means for ``n`` vectors, refused when Milvus lacks it."""
    if n == 0:
        raise ImageIndexError("nothing to index: no vectors")
    kind = backends.resolve_index_type(requested, n)
    if kind not in MILVUS_INDEX:
        raise ImageIndexError(
            f"the milvus backend builds {', '.join(MILVUS_INDEX)} indexes, not {kind!r}"
        )
    return kind


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ImageIndexError(
            f"bad Milvus collection name {name!r}: use letters, digits and underscores, "
            "not starting with a digit (--milvus-collection)"
        )
    return name


def _settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``milvus`` object, checked; ValueError / TypeError when malformed."""
    m = manifest.get("milvus")
    if not isinstance(m, dict):
        raise TypeError("a milvus index needs a 'milvus' object (uri, db_name, collection)")
    uri, db_name, collection = m.get("uri"), m.get("db_name"), m.get("collection")
    if uri is not None and not isinstance(uri, str):
        raise TypeError(f"milvus.uri must be a string or null, got {uri!r:.80}")
    if db_name is not None and not isinstance(db_name, str):
        raise TypeError(f"milvus.db_name must be a string or null, got {db_name!r:.80}")
    if not isinstance(collection, str) or not _NAME.match(collection):
        raise ValueError(f"milvus.collection {collection!r:.80} is not a collection name")
    return {"uri": uri, "db_name": db_name, "collection": collection}


def _fingerprint_text(fingerprint: dict[str, Any]) -> str:
    return json.dumps(fingerprint, sort_keys=True)


def _release_embedded(client: Any, db_path: Path) -> None:
    """Closes a client of an embedded database and stops milvus-lite's server for it."""
    if client is not None:
        # Closing a broken connection must not hide the real error.
        with contextlib.suppress(Exception):
            client.close()
    try:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(str(db_path))
    except ImportError:
        pass


def _cleanup(state: dict[str, Any]) -> None:
    """Releases a store's connection and deletes its scratch copy (finaliser: no ``self``)."""
    client, scratch = state.pop("client", None), state.pop("scratch", None)
    if scratch is None:
        if client is not None:
            client.close()
        return
    _release_embedded(client, Path(scratch) / DB_FOLDER)
    shutil.rmtree(scratch, ignore_errors=True)


class MilvusStore(VectorStore):
    """The vectors in a Milvus collection; see the module docstring.

    Build with :meth:`build` or reopen a saved one with :meth:`open`.
    """

    backend = "milvus"

    @staticmethod
    def files_needed(manifest: dict[str, Any]) -> list[str]:
        """Files of a Milvus index folder beside the manifest: the embeddings, unless on a
        server."""
        return ["embeddings.npy"] if _settings(manifest)["uri"] is None else []

    @classmethod
    def check_reachable(cls, options: MilvusOptions | None) -> None:
        if options is not None:
            check_reachable(options)

    def __init__(
        self,
        *,
        options: MilvusOptions,
        collection: str,
        fingerprint: dict[str, Any],
        vectors: np.ndarray,
        index_type: str,
        requested: str,
        params: dict[str, int],
        recall_at_10: float | None,
        scratch: Path | None,
        client: Any,
    ) -> None:
        self.options = options
        self.collection = collection
        self.fingerprint = dict(fingerprint)
        self.index_type = index_type
        self.params = dict(params)
        self.recall_at_10 = recall_at_10
        self._requested = requested
        self._vectors = vectors
        self._lock = threading.Lock()
        # Everything the finaliser needs, without a reference to self.
        self._state: dict[str, Any] = {"client": client, "scratch": scratch}
        self._finalizer = weakref.finalize(self, _cleanup, self._state)

    # ------------------------------------------------------------------------ connection
    @property
    def embedded(self) -> bool:
        """Whether the vectors live in an embedded database (no server URI)."""
        return self.options.uri is None

    def _db_path(self) -> Path:
        return Path(self._state["scratch"]) / DB_FOLDER

    def _client(self) -> Any:
        """The connection, reopened after a save closed the embedded database."""
        with self._lock:
            client = self._state.get("client")
            if client is None:
                if not self.embedded or self._state.get("scratch") is None:
                    raise ImageIndexError("this Milvus-backed index was closed")
                client = _connect(str(self._db_path()), self.options)
                client.load_collection(self.collection)
                self._state["client"] = client
            return client

    def close(self) -> None:
        self._finalizer()

    # ------------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        index_type: str,
        *,
        options: MilvusOptions,
        fingerprint: dict[str, Any],
    ) -> MilvusStore:
        """Writes ``vectors`` into a new collection and tunes an approximate one for recall.

        An embedded database is created in a scratch folder until :meth:`save_parts` copies
        it into the index folder. On a server, an existing collection of the same name is
        replaced when it holds the same run's vectors and refused otherwise.

        Args:
            vectors: Shape: (N, D), float32, N >= 1.
            index_type: One of ``backends.INDEX_TYPES``.
            options: Where the vectors go.
            fingerprint: The building run's fingerprint, recorded in the collection.

        Raises:
            ImageIndexError: For an index kind Milvus lacks, a server that cannot be reached,
                a bad collection name, or a collection holding another run's vectors.
        """
        x = backends.as_vectors(vectors)
        kind = _kind(index_type, len(x))
        collection = _check_name(options.collection)
        client, scratch = _open_client(options)
        store = cls(
            options=options,
            collection=collection,
            fingerprint=fingerprint,
            vectors=x,
            index_type=kind,
            requested=index_type,
            params={},
            recall_at_10=None,
            scratch=scratch,
            client=client,
        )
        try:
            store._claim_collection()
            store._create(kind, x)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def create(
        cls,
        vectors: np.ndarray,
        index_type: str,
        *,
        fingerprint: dict[str, Any],
        options: MilvusOptions | None = None,
    ) -> MilvusStore:
        return cls.build(
            vectors, index_type, options=options or MilvusOptions(), fingerprint=fingerprint
        )

    def _claim_collection(self) -> None:
        """Drops a same-named collection of the same run; refuses one of another run."""
        client = self._client()
        if not client.has_collection(self.collection):
            return
        found = self._recorded_fingerprint(client)
        if found != _fingerprint_text(self.fingerprint):
            where = self.options.uri or "the embedded database"
            raise ImageIndexError(
                f"Milvus collection {self.collection!r} at {where} holds vectors of another "
                f"model or run ({_describe(found)}): refusing to overwrite it; choose another "
                "--milvus-collection, or drop that collection first"
            )
        client.drop_collection(self.collection)

    def _recorded_fingerprint(self, client: Any) -> str | None:
        props = client.describe_collection(self.collection).get("properties") or {}
        value = props.get(FINGERPRINT_PROPERTY)
        return None if value is None else str(value)

    def _create(self, kind: str, x: np.ndarray) -> None:
        """Creates the collection for ``kind``, writes ``x`` and tunes the search setting."""
        pymilvus = _pymilvus()
        client = self._client()
        n, d = x.shape
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(PK_FIELD, pymilvus.DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, pymilvus.DataType.FLOAT_VECTOR, dim=d)
        build: dict[str, int] = {}
        if kind == "hnsw":
            build = {"M": backends.HNSW_M, "efConstruction": backends.HNSW_EF_CONSTRUCTION}
        elif kind == "ivf":
            # FAISS's rule, and at least 39 training vectors per list.
            nlist = int(max(1, min(backends.IVF_LISTS_PER_SQRT_N * np.sqrt(n), n // 39)))
            build = {"nlist": nlist}
        index_params = client.prepare_index_params()
        index_params.add_index(
            field_name=VECTOR_FIELD, index_type=MILVUS_INDEX[kind], metric_type="L2", params=build
        )
        client.create_collection(
            self.collection,
            schema=schema,
            index_params=index_params,
            properties={FINGERPRINT_PROPERTY: _fingerprint_text(self.fingerprint)},
        )
        self._write(0, x)
        client.flush(self.collection)
        client.load_collection(self.collection)
        self.index_type, self.params, self.recall_at_10 = kind, build, None
        self._vectors = x
        self._tune()

    def _write(self, start: int, x: np.ndarray, *, upsert: bool = False) -> None:
        """Rows ``x`` at positions ``start, start + 1, ...``."""
        client = self._client()
        put = client.upsert if upsert else client.insert
        for s in range(0, len(x), WRITE_BATCH):
            rows = x[s : s + WRITE_BATCH]
            put(
                self.collection,
                [{PK_FIELD: start + s + i, VECTOR_FIELD: v} for i, v in enumerate(rows)],
            )

    def _write_rows(self, positions: np.ndarray, x: np.ndarray) -> None:
        """Upserts rows ``x`` at arbitrary ``positions``."""
        client = self._client()
        for s in range(0, len(positions), WRITE_BATCH):
            rows = [
                {PK_FIELD: int(p), VECTOR_FIELD: v}
                for p, v in zip(positions[s : s + WRITE_BATCH], x[s : s + WRITE_BATCH], strict=True)
            ]
            client.upsert(self.collection, rows)

    def _tune(self) -> None:
        """Cheapest ``efSearch`` / ``nprobe`` whose sample recall@10 reaches the target."""
        if self.index_type == "flat":
            return
        if self.embedded:
            # milvus-lite indexes new segments in the background and searches them exactly
            # meanwhile, which would make any setting look perfect; loading again builds
            # every segment's index now.
            client = self._client()
            client.release_collection(self.collection)
            client.load_collection(self.collection)
        x, n = self._vectors, len(self._vectors)
        k = min(backends.RECALL_K, n)
        rng = np.random.default_rng(0)
        queries = x[np.sort(rng.choice(n, size=min(TUNE_SAMPLE, n), replace=False))]
        _, exact = backends.exact_neighbors(queries, x, k)
        ladder: tuple[int, ...]
        if self.index_type == "hnsw":
            name, ladder = "efSearch", backends.HNSW_EF_SEARCH
        else:
            nlist = self.params["nlist"]
            name, ladder = "nprobe", (*(p for p in backends.IVF_NPROBE if p < nlist), nlist)
        for value in ladder:
            self.params[name] = value
            _, found = self.search(queries, k)
            self.recall_at_10 = backends.recall_at_k(queries, x, found, exact)
            if self.recall_at_10 >= backends.TARGET_RECALL:
                break

    # ------------------------------------------------------------------------ searching
    def __len__(self) -> int:
        return len(self._vectors)

    def _search_params(self, k: int) -> dict[str, Any]:
        if self.index_type == "hnsw":
            return {"metric_type": "L2", "params": {"ef": max(k, self.params["efSearch"])}}
        if self.index_type == "ivf":
            return {"metric_type": "L2", "params": {"nprobe": self.params["nprobe"]}}
        return {"metric_type": "L2", "params": {}}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k > MAX_K:
            raise ImageIndexError(f"k must be at most {MAX_K} with the milvus backend, got {k}")
        client = self._client()
        q = len(queries)
        distances = np.full((q, k), np.inf, dtype=np.float32)
        positions = np.full((q, k), -1, dtype=np.int64)
        params = self._search_params(k)
        for s in range(0, q, SEARCH_BATCH):
            hits = client.search(
                self.collection,
                data=queries[s : s + SEARCH_BATCH],
                limit=k,
                anns_field=VECTOR_FIELD,
                search_params=params,
                output_fields=[PK_FIELD],
            )
            for row, found in enumerate(hits, start=s):
                for j, hit in enumerate(found):
                    positions[row, j] = int(hit[PK_FIELD])
                    distances[row, j] = float(hit["distance"])
        return distances, positions

    # ------------------------------------------------------------------------ changing
    def add(self, vectors: np.ndarray) -> MilvusStore:
        x = backends.as_vectors(vectors, self._vectors.shape[1])
        self._write(len(self._vectors), x)
        self._vectors = np.concatenate([self._vectors, x])
        self._client().flush(self.collection)
        return self

    def remove(self, positions: np.ndarray) -> MilvusStore:
        n = len(self._vectors)
        pos = np.unique(np.asarray(positions, dtype=np.int64))
        if pos.size == 0:
            return self
        if pos[0] < 0 or pos[-1] >= n:
            raise ImageIndexError(f"positions to remove must lie in [0, {n}), got {pos[[0, -1]]}")
        kept = np.delete(self._vectors, pos, axis=0)
        first = int(pos[0])
        # Rows after the first removed one move up: rewrite that tail under its new keys.
        client = self._client()
        self._write(first, kept[first:], upsert=True)
        client.delete(self.collection, filter=f"{PK_FIELD} >= {len(kept)}")
        client.flush(self.collection)
        self._vectors = kept
        return self

    def replace(self, vectors: np.ndarray) -> MilvusStore:
        x = backends.as_vectors(vectors, self._vectors.shape[1])
        kind = _kind(self._requested, len(x))
        if kind != self.index_type:  # `auto` crossed the exact / approximate line
            self._client().drop_collection(self.collection)
            self._create(kind, x)
            return self
        # Only rows that differ are written: an update that adds a few files at the end of
        # a million-row collection touches a few rows.
        old = self._vectors
        m = min(len(old), len(x))
        changed = np.flatnonzero((old[:m] != x[:m]).any(axis=1))
        if changed.size:
            self._write_rows(changed, x[changed])
        if len(x) > len(old):
            self._write(len(old), x[len(old) :])
        client = self._client()
        if len(x) < len(old):
            client.delete(self.collection, filter=f"{PK_FIELD} >= {len(x)}")
        client.flush(self.collection)
        self._vectors = x
        self._tune()
        return self

    # ------------------------------------------------------------------------ saving
    def save_parts(self) -> SaveParts:
        settings = {
            "uri": self.options.uri,
            "db_name": self.options.db_name,
            "collection": self.collection,
        }
        manifest = {"backend": "milvus", "milvus": settings}
        if not self.embedded:
            self._client().flush(self.collection)
            return SaveParts(manifest=manifest, keeps_embeddings=False)

        def write_db(dest: Path) -> None:
            # Close the scratch database so every write is on disk, copy it, reopen lazily.
            with self._lock:
                client = self._state.pop("client", None)
                if client is not None:
                    client.flush(self.collection)
                _release_embedded(client, self._db_path())
                shutil.copytree(self._db_path(), dest, ignore=shutil.ignore_patterns("LOCK"))

        return SaveParts(folders={DB_FOLDER: write_db}, manifest=manifest)

    def stored_vectors(self) -> np.ndarray | None:
        return None if self.embedded else self._vectors

    # ------------------------------------------------------------------------ loading
    @classmethod
    def open(
        cls,
        folder: Path,
        manifest: dict[str, Any],
        files: dict[str, IO[bytes]] | None = None,
        *,
        count: int,
        embeddings: np.ndarray | None,
        options: MilvusOptions | None = None,
    ) -> MilvusStore:
        """Reopens the store of a saved index folder (see :meth:`VectorStore.open`).

        Raises:
            IndexFormatError: For a database or collection that does not match the manifest.
            ImageIndexError: For a server that cannot be reached.
        """
        try:
            settings = _settings(manifest)
        except (TypeError, ValueError) as e:
            raise IndexFormatError(f"{folder}/manifest.json is malformed: {e}") from None
        given = options or MilvusOptions()
        options = MilvusOptions(
            uri=settings["uri"],
            # The token is never saved: a server (`serve`) finds it in the environment.
            token=given.token if given.token is not None else os.environ.get(TOKEN_ENV),
            db_name=settings["db_name"],
            collection=settings["collection"],
            timeout=given.timeout,
        )
        fingerprint = dict(manifest["fingerprint"])
        source = folder / DB_FOLDER
        if options.uri is None and not source.is_dir():
            raise IndexFormatError(
                f"{folder} is not a complete index folder: {DB_FOLDER} is missing"
            )
        client, scratch = _open_client(options, copy_of=source if options.uri is None else None)
        store = cls(
            options=options,
            collection=options.collection,
            fingerprint=fingerprint,
            vectors=np.empty((0, int(fingerprint["embedding_dim"])), dtype=np.float32),
            index_type=str(manifest["index_type"]),
            requested=str(manifest.get("index_type_requested", manifest["index_type"])),
            params={str(k): int(v) for k, v in manifest["index_params"].items()},
            recall_at_10=manifest.get("recall_at_10"),
            scratch=scratch,
            client=client,
        )
        try:
            store._check_saved(folder, count)
            client.load_collection(store.collection)
            store._vectors = embeddings if embeddings is not None else store._fetch(count)
        except BaseException:
            store.close()
            raise
        return store

    def _check_saved(self, folder: Path, count: int) -> None:
        client = self._client()
        where = self.options.uri or f"{folder}/{DB_FOLDER}"
        if not client.has_collection(self.collection):
            raise IndexFormatError(
                f"{folder}: Milvus collection {self.collection!r} is not in {where}: it was "
                "dropped or renamed; rebuild the index with `latentsearch index`"
            )
        found = self._recorded_fingerprint(client)
        if found != _fingerprint_text(self.fingerprint):
            raise IndexFormatError(
                f"{folder}: Milvus collection {self.collection!r} at {where} now holds vectors "
                f"of another model or run ({_describe(found)}): another index overwrote it; "
                "rebuild this one with `latentsearch index`"
            )
        rows = int(client.get_collection_stats(self.collection).get("row_count", -1))
        if rows != count:
            raise IndexFormatError(
                f"{folder}: Milvus collection {self.collection!r} at {where} holds {rows} "
                f"vectors, the manifest promises {count}: it was changed since the save; "
                "rebuild the index, or update it with `latentsearch index --update`"
            )

    def _fetch(self, count: int) -> np.ndarray:
        """Every row of a server collection, by position. Shape: (count, D)."""
        client = self._client()
        d = int(self.fingerprint["embedding_dim"])
        out = np.empty((count, d), dtype=np.float32)
        seen = np.zeros(count, dtype=bool)
        for s in range(0, count, WRITE_BATCH):
            e = min(count, s + WRITE_BATCH)
            rows = client.query(
                self.collection,
                filter=f"{PK_FIELD} >= {s} and {PK_FIELD} < {e}",
                output_fields=[PK_FIELD, VECTOR_FIELD],
            )
            for r in rows:
                p = int(r[PK_FIELD])
                out[p] = np.asarray(r[VECTOR_FIELD], dtype=np.float32)
                seen[p] = True
        if not seen.all():
            raise IndexFormatError(
                f"Milvus collection {self.collection!r} lacks positions "
                f"{np.flatnonzero(~seen)[:5].tolist()}...: rebuild the index"
            )
        return out


def _describe(fingerprint_text: str | None) -> str:
    if fingerprint_text is None:
        return "no latentsearch fingerprint"
    try:
        fp = json.loads(fingerprint_text)
        return f"model {fp.get('model')}, weights {str(fp.get('weights_sha256'))[:12]}…"
    except (ValueError, AttributeError):
        return "an unreadable fingerprint"
