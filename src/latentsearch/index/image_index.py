"""A persisted, searchable index of image embeddings made with one trained run.

>>> index = ImageIndex.build(run, all_images(load_data("digits", image_size=8)))
>>> index.save("digits.index")
>>> ImageIndex.load("digits.index").search_images(run, pixels, k=5)[0][0].id
'digits/train/17'

An index folder holds ``index.faiss`` (the FAISS structure), ``embeddings.npy`` (float32
``(N, D)``, kept so updates re-embed only new files and so duplicates can be found) and
``manifest.json``: the format version, the run's fingerprint, the metric, the index kind and
its settings, the measured recall, the precision the images were embedded in (``fp32``, or
``bf16``/``fp16`` autocast; queries are embedded in the same one), where the images came from,
the class names and one entry per item (id, path, label, SHA-256 of the file). With
``backend="milvus"`` the vectors live in Milvus instead of ``index.faiss``
(``latentsearch.index.milvus``): an embedded ``milvus.db`` in the folder, or a server's
collection named in the manifest.
"""

from __future__ import annotations

import errno
import json
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from latentsearch.data import DataError, DataSplits, ImageData, load_data
from latentsearch.embedding import embed_images
from latentsearch.index import backends, storage, stores, vector_store
from latentsearch.index.duplicates import (
    DEFAULT_DUPLICATE_FRACTION,
    DuplicateSearch,
    default_threshold,
    duplicate_fraction,
    find_duplicates,
)
from latentsearch.index.errors import (
    FingerprintMismatch,
    ImageIndexError,
    IndexFormatError,
    StoredPixelsUnavailable,
    UnknownItem,
)
from latentsearch.index.items import (
    IndexItem,
    ItemTable,
    ItemTableBuilder,
    ManifestFormatError,
    ManifestItemsError,
    item_json,
    read_manifest,
    write_manifest,
)
from latentsearch.index.spec import (
    DEFAULT_PRECISION,
    EMBED_PRECISIONS,
    IndexSpec,
    model_device,
)
from latentsearch.precision import PrecisionError, resolve_precision

if TYPE_CHECKING:
    from latentsearch.runs import Run

INDEX_FORMAT = "latentsearch-index/1"
"""Written to every manifest; ``load`` refuses any other value."""

INDEX_FILE = "index.faiss"
EMBEDDINGS_FILE = "embeddings.npy"
MANIFEST_FILE = "manifest.json"

FINGERPRINT_KEYS = ("model", "weights_sha256", "image_size", "in_channels", "embedding_dim")
"""What identifies the run that built an index."""

_FINITE_BLOCK = 65_536  # rows checked at a time when looking for the first non-finite one

_FINGERPRINT_WORDS = {
    "model": "model",
    "weights_sha256": "weights",
    "image_size": "image size",
    "in_channels": "input channels",
    "embedding_dim": "embedding size",
}


@dataclass(frozen=True)
class Neighbor:
    """One search result.

    Attributes:
        rank: 1 for the nearest.
        position: Index into ``ImageIndex.items``.
        id: The item's id.
        path: The item's file, None for array sources.
        label: The item's class index, -1 when unknown.
        class_name: The class's name, None when unknown.
        distance: Squared Euclidean distance between the embeddings.
    """

    rank: int
    position: int
    id: str
    path: str | None
    label: int
    class_name: str | None
    distance: float


@dataclass(frozen=True)
class UpdateReport:
    """What an update did, as lists of ids.

    Attributes:
        added: New ids, embedded.
        changed: Known ids whose file content changed (or cannot be compared), re-embedded.
        removed: Ids that are gone, dropped.
        unchanged: Ids whose file content is the same, stored embedding reused.
    """

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def embedded(self) -> int:
        """How many images were embedded."""
        return len(self.added) + len(self.changed)


def all_images(splits: DataSplits) -> ImageData:
    """Every image of a data source: train, then test where the source has one.

    Unlike ``ImageData.concatenate``, the skipped files of both splits are kept.
    """
    if splits.test is None:
        return splits.train
    both = ImageData.concatenate([splits.train, splits.test])
    return replace(
        both,
        source=f"{splits.name} (train + test)",
        skipped=[*splits.train.skipped, *splits.test.skipped],
    )


def item_table(items: Sequence[IndexItem] | ItemTableBuilder) -> ItemTable:
    """The items (or a builder's) as a table; ImageIndexError when an id appears twice."""
    try:
        return items.build() if isinstance(items, ItemTableBuilder) else ItemTable.from_items(items)
    except ValueError as e:
        raise ImageIndexError(str(e)) from None


def _is_int(value: Any, low: int = 0) -> bool:
    """Whether ``value`` is a JSON integer (not true/false) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_fingerprint(fingerprint: Any) -> None:
    """Raises TypeError for a fingerprint without the five fields of the right types."""
    if not isinstance(fingerprint, dict):
        raise TypeError("fingerprint must be an object")
    missing = [k for k in FINGERPRINT_KEYS if k not in fingerprint]
    if missing:
        raise TypeError(f"fingerprint lacks {', '.join(missing)}")
    for key in ("model", "weights_sha256"):
        if not isinstance(fingerprint[key], str):
            raise TypeError(f"fingerprint {key} must be a string, got {fingerprint[key]!r:.80}")
    for key in ("embedding_dim", "image_size", "in_channels"):
        if not _is_int(fingerprint[key], 1):
            raise TypeError(
                f"fingerprint {key} must be a positive integer, got {fingerprint[key]!r:.80}"
            )


def _check_manifest_values(manifest: dict[str, Any]) -> None:
    """Raises TypeError / ValueError for manifest fields of the wrong type."""
    names = manifest["class_names"]
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise TypeError(f"class_names must be a list of strings, got {names!r:.80}")
    _check_fingerprint(manifest["fingerprint"])
    if manifest["metric"] != backends.METRIC:
        raise ValueError(f"metric {manifest['metric']!r:.40}, this version knows only 'l2'")
    if not isinstance(manifest["run"], str):
        raise TypeError(f"run must be a path, got {manifest['run']!r:.80}")
    for key in ("data", "source", "created", "updated"):
        value = manifest.get(key)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{key} must be a string or null, got {value!r:.80}")
    recall = manifest.get("recall_at_10")
    if recall is not None and (
        isinstance(recall, bool)
        or not isinstance(recall, int | float)
        or not 0.0 <= recall <= 1.0  # False for NaN too
    ):
        raise TypeError(f"recall_at_10 must be a number in [0, 1] or null, got {recall!r:.80}")
    if manifest["index_type"] not in backends.INDEX_TYPES[1:]:
        raise ValueError(f"unknown index_type {manifest['index_type']!r:.40}")
    requested = manifest.get("index_type_requested")
    if requested is not None and requested not in backends.INDEX_TYPES:
        raise ValueError(f"unknown index_type_requested {requested!r:.40}")
    params = manifest["index_params"]
    if not isinstance(params, dict) or not all(_is_int(v) for v in params.values()):
        raise TypeError(f"index_params must map names to integers, got {params!r:.80}")
    if manifest.get("precision", DEFAULT_PRECISION) not in EMBED_PRECISIONS:
        raise ValueError(f"unknown precision {manifest['precision']!r:.40}")


def _check_items(manifest: dict[str, Any], items: ItemTable) -> None:
    """Raises ValueError unless ``count`` and every label agree with the items and classes.

    Vectorised over the labels: no Python step per item.
    """
    count = manifest.get("count", len(items))
    if not _is_int(count) or count != len(items):
        raise ValueError(f"count {count!r:.40} is not the number of items, {len(items)}")
    labels = items.labels()
    n_classes = len(manifest["class_names"])
    bad = np.flatnonzero((labels < -1) | (labels >= n_classes))
    if bad.size:
        p = int(bad[0])
        raise ValueError(
            f"item {p} ({items.id(p)!r:.80}) has label {int(labels[p])}, but there are "
            f"{n_classes} class names (a label is -1 or below that)"
        )


def _parse_manifest(path: Path, text: str) -> tuple[dict[str, Any], ItemTable]:
    """The manifest (without ``items``) and its items, checked.

    Raises:
        IndexFormatError: Naming what is wrong.
        json.JSONDecodeError: For text that is not JSON (the caller calls the index corrupt).
    """
    try:
        manifest, items = read_manifest(text, expect_format=INDEX_FORMAT)
    except ManifestFormatError as e:
        raise IndexFormatError(
            f"{path}/{MANIFEST_FILE} is not a {INDEX_FORMAT} manifest (format {e.found!r})"
        ) from None
    except ManifestItemsError as e:
        raise IndexFormatError(f"{path}/{MANIFEST_FILE} is malformed: {e}") from None
    try:
        missing = [
            k
            for k in ("fingerprint", "index_type", "index_params", "class_names", "run", "metric")
            if k not in manifest
        ]
        if missing:
            raise KeyError(", ".join(missing))
        _check_manifest_values(manifest)
        _check_items(manifest, items)
        stores.files_needed(manifest)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise IndexFormatError(f"{path}/{MANIFEST_FILE} is malformed: {e!r}") from None
    return manifest, items


def _check_embeddings(path: Path, embeddings: np.ndarray, manifest: Any, n: int) -> None:
    """Raises IndexFormatError unless the embeddings are finite float32 ``(n, D)``.

    Costs one pass over the values (about 0.1 s a million 128-d rows), no copy of them.
    """
    dim = int(manifest["fingerprint"]["embedding_dim"])
    if embeddings.dtype != np.float32 or embeddings.shape != (n, dim):
        raise IndexFormatError(
            f"{path}/{EMBEDDINGS_FILE} holds {embeddings.dtype} {embeddings.shape}, the "
            f"manifest promises float32 ({n}, {dim})"
        )
    # NaN and inf carry through a sum; a finite sum means every value is finite. A sum that
    # overflowed float32 from finite values is checked again exactly, a block at a time.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(embeddings)):
            return
    for start in range(0, n, _FINITE_BLOCK):
        block = np.isfinite(embeddings[start : start + _FINITE_BLOCK]).all(axis=1)
        if not block.all():
            row = start + int(np.argmin(block))
            raise IndexFormatError(
                f"{path}/{EMBEDDINGS_FILE} holds NaN or infinite values (row {row} first): "
                "the file is corrupt; rebuild the index with `latentsearch index`"
            )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ImageIndex:
    """Embeddings of a set of images, searchable by squared Euclidean distance.

    Build one with :meth:`build` or read one with :meth:`load`; the constructor is internal.
    Searching is safe from several threads at once; :meth:`update` is not.
    """

    def __init__(
        self,
        *,
        embeddings: np.ndarray,
        items: Sequence[IndexItem],
        meta: dict[str, Any],
        store: vector_store.VectorStore | None = None,
        built: backends.BuiltIndex | None = None,
    ) -> None:
        self._embeddings = embeddings
        self._items = item_table(items)
        self._meta = meta
        if store is None:
            if built is None:
                raise TypeError("ImageIndex needs a vector store")
            store = vector_store.FaissStore(built, requested=meta.get("index_type_requested"))
        self._store = store
        store.rows = embeddings
        # The source of items without a file, loaded on the first request for one.
        self._stored_lock = threading.Lock()
        self._stored: tuple[dict[str, int], np.ndarray] | str | None = None

    # ------------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        run: Run,
        data: ImageData,
        *,
        spec: IndexSpec | None = None,
        progress: bool = False,
        data_spec: str | None = None,
        embeddings: np.ndarray | None = None,
        **spec_fields: Any,
    ) -> ImageIndex:
        """Embeds every image of ``data`` with ``run``'s model and indexes the embeddings.

        A shorthand for ``streaming.index_images(run, data, spec=spec).index``, the one
        pipeline every index is built by.

        Args:
            run: A trained run (``latentsearch.runs.load_run``).
            data: The images, decoded at the run's image size and channels
                (``all_images(load_data(spec, image_size=run.model.image_size))``).
            spec: What to build (``IndexSpec``); or its fields as keywords (``index_type``,
                ``precision``, ``backend``).
            progress: Show a progress bar while embedding, on a terminal.
            data_spec: How to load the images again (a ``load_data`` spec), kept in the
                manifest so tools can show images of sources that have no files.
            embeddings: ``embed_images(run.model, data.pixels)`` if already computed, in
                ``spec.precision``. Shape: (N, D), float32.
            **spec_fields: ``IndexSpec`` fields, when ``spec`` is None.

        Returns:
            The index, not yet saved.

        Raises:
            ImageIndexError: For images of the wrong size, no images, duplicate ids, an
                unknown index type, or ``embeddings`` of another shape.
            PrecisionError: When this machine cannot embed in the precision asked for.
        """
        from latentsearch.index import streaming  # the pipeline builds on this class

        spec = spec or IndexSpec(**spec_fields)
        if embeddings is not None:
            return streaming.index_embeddings(
                run, data, embeddings, spec=spec.resolve(run), data_spec=data_spec
            )
        built = streaming.index_images(run, data, spec=spec, progress=progress, data_spec=data_spec)
        assert built.index is not None  # only a distributed job's other ranks get None
        return built.index

    @classmethod
    def from_embeddings(
        cls,
        run: Run,
        embeddings: np.ndarray,
        items: Sequence[IndexItem],
        *,
        class_names: Sequence[str],
        source: str,
        spec: IndexSpec,
        data_spec: str | None = None,
    ) -> ImageIndex:
        """Indexes embeddings already made with ``run``'s model: the pipeline's last step.

        Args:
            run: The run whose model made the embeddings.
            embeddings: One row per item, in item order. Shape: (N, D), float32.
            items: The indexed images (unique ids).
            class_names: Names of the items' labels.
            source: Where the images came from, for people.
            spec: What to build, resolved (``IndexSpec.resolve``); its precision is the one
                the embeddings were made in, and queries will be embedded in it too.
            data_spec: How to load the images again (a ``load_data`` spec), kept in the
                manifest so tools can show images of sources that have no files.

        Returns:
            The index, not yet saved.

        Raises:
            ImageIndexError: For no items, duplicate ids, an unknown index type or
                precision, or embeddings that are not float32
                ``(len(items), run.model.embedding_dim)``.
        """
        spec.check_embedded()
        if not items:
            raise ImageIndexError(f"nothing to index: {source or 'the data'} holds no images")
        if embeddings.shape != (len(items), run.model.embedding_dim) or (
            embeddings.dtype != np.float32
        ):
            raise ImageIndexError(
                f"embeddings must be float32 ({len(items)}, {run.model.embedding_dim}), one "
                f"row per item, got {embeddings.dtype} {embeddings.shape}"
            )
        items = item_table(items)
        fingerprint = {k: run.fingerprint[k] for k in FINGERPRINT_KEYS}
        store = stores.create_store(
            embeddings, spec.index_type, backend=spec.backend, fingerprint=fingerprint
        )
        meta: dict[str, Any] = {
            "format": INDEX_FORMAT,
            "created": _now(),
            "updated": None,
            "fingerprint": fingerprint,
            "metric": backends.METRIC,
            "backend": store.backend,
            "index_type": store.index_type,
            "index_type_requested": spec.index_type,
            "index_params": dict(store.params),
            "recall_at_10": store.recall_at_10,
            "precision": spec.precision,
            "run": str(Path(run.path).resolve()),
            "source": source,
            "data": data_spec,
            "class_names": list(class_names),
        }
        return cls(embeddings=embeddings, items=items, meta=meta, store=store)

    def update(
        self,
        run: Run,
        data: ImageData,
        *,
        progress: bool = False,
        data_spec: str | None = None,
    ) -> UpdateReport:
        """Brings the index in line with ``data``: embeds new and changed images only.

        A shorthand for ``streaming.update_images(self, run, data).report``, the one pipeline
        every index is updated by: items are matched by id; an image whose content (SHA-256)
        is unchanged keeps its stored embedding; items without a content hash (array sources)
        cannot be compared and are re-embedded.

        Args:
            run: The run that built the index.
            data: The images as they are now (see :meth:`build`).
            progress: Show a progress bar while embedding, on a terminal.
            data_spec: New value for the manifest's ``data`` (None keeps the old one).

        Returns:
            Which ids were added, changed, removed and left unchanged.

        Raises:
            FingerprintMismatch: When ``run`` is not the run that built the index.
            ImageIndexError: For images of the wrong size, no images or duplicate ids.
        """
        from latentsearch.index import streaming  # the pipeline builds on this class

        return streaming.update_images(
            self, run, data, progress=progress, data_spec=data_spec
        ).report

    def plan_update(self, items: Sequence[IndexItem]) -> tuple[UpdateReport, np.ndarray]:
        """What :meth:`update` to ``items`` must embed, without embedding anything.

        Args:
            items: The images as they are now, with their content hashes.

        Returns:
            The report, and for each item the position of the stored embedding it keeps
            (-1: embed it). Shape of the second: (len(items),), int64.
        """
        report = UpdateReport()
        reuse = np.full(len(items), -1, dtype=np.int64)
        new = item_table(items)
        old_of = self._items.positions(new.ids())
        for p, old in enumerate(old_of.tolist()):
            if old < 0:
                report.added.append(new.id(p))
            elif (sha := new.sha256(p)) is not None and sha == self._items.sha256(old):
                report.unchanged.append(new.id(p))
                reuse[p] = old
            else:
                report.changed.append(new.id(p))
        gone = new.positions(self._items.ids()) < 0
        report.removed.extend(self._items.id(p) for p in np.flatnonzero(gone).tolist())
        return report, reuse

    def apply_update(
        self,
        items: Sequence[IndexItem],
        reuse: np.ndarray,
        new: np.ndarray,
        *,
        source: str,
        class_names: Sequence[str],
        data_spec: str | None = None,
    ) -> None:
        """Replaces the items with ``items``, as planned by :meth:`plan_update`.

        Args:
            items: The images as they are now (unique ids).
            reuse: From :meth:`plan_update`. Shape: (len(items),), int64.
            new: Embeddings of the items whose ``reuse`` is -1, in item order, made in
                :attr:`precision`. Shape: (number of -1s, D), float32.
            source: Where the images came from, for people.
            class_names: Names of the items' labels.
            data_spec: New value for the manifest's ``data`` (None keeps the old one).

        Raises:
            ImageIndexError: For no items, duplicate ids, or arrays of the wrong shape.
        """
        if not items:
            raise ImageIndexError(f"nothing to index: {source or 'the data'} holds no images")
        items = item_table(items)
        reuse = np.asarray(reuse, dtype=np.int64)
        todo = np.flatnonzero(reuse < 0)
        if reuse.shape != (len(items),) or new.shape != (len(todo), self.embedding_dim):
            raise ImageIndexError(
                f"an update of {len(items)} items embedding {len(todo)} needs reuse of shape "
                f"({len(items)},) and new embeddings ({len(todo)}, {self.embedding_dim}), got "
                f"{reuse.shape} and {new.shape}"
            )
        kept = ~(reuse < 0)
        embeddings = np.empty((len(items), self.embedding_dim), dtype=np.float32)
        embeddings[kept] = self._embeddings[reuse[kept]]
        embeddings[todo] = new
        same = len(items) == len(self._items) and np.array_equal(reuse, np.arange(len(items)))
        if not same:
            self._store = self._store.replace(embeddings)
        self._embeddings = embeddings
        self._store.rows = embeddings
        self._items = items
        self._meta.update(
            updated=_now(),
            index_type=self._store.index_type,
            index_params=dict(self._store.params),
            recall_at_10=self._store.recall_at_10,
            source=source,
            class_names=list(class_names),
        )
        if data_spec is not None:
            self._meta["data"] = data_spec
        with self._stored_lock:
            self._stored = None  # the source may have changed: load it again when asked

    # ------------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Writes the index folder atomically: on any failure the previous one stays intact.

        The folder holds the manifest and what the vector store keeps there: ``index.faiss``
        and ``embeddings.npy`` for FAISS, ``milvus.db`` and ``embeddings.npy`` for embedded
        Milvus, nothing more for a Milvus server (the vectors live in its collection).

        Args:
            path: The index folder; an existing index there is replaced.

        Returns:
            The folder.

        Raises:
            IndexFormatError: When ``path`` exists and is not an index folder (it is never
                overwritten then).
            OSError: When the files cannot be written.
        """
        path = Path(path)
        if path.exists() and not (
            path.is_dir() and ((path / MANIFEST_FILE).is_file() or not any(path.iterdir()))
        ):
            raise IndexFormatError(
                f"{path} exists and is not an index folder: refusing to overwrite it; "
                "choose another path"
            )
        parts = self._store.save_parts()
        meta = {**self._meta, "count": len(self), **parts.manifest}

        def write_items(f: IO[bytes]) -> None:
            write_manifest(f, meta, self._items)

        def write_embeddings(f: IO[bytes]) -> None:
            np.save(f, self._embeddings, allow_pickle=False)

        files: dict[str, Callable[[IO[bytes]], None] | Path] = dict(parts.files)
        if parts.keeps_embeddings:
            # Vectors mapped read-only from a whole .npy file (a streamed build's merge) are
            # linked into the folder, not written again: 51 GB less to write at 100M.
            files[EMBEDDINGS_FILE] = storage.npy_file_of(self._embeddings) or write_embeddings
        files[MANIFEST_FILE] = write_items
        storage.write_folder(path, files, parts.folders)
        self._meta.update(parts.manifest)
        return path

    @classmethod
    def load(
        cls, path: str | Path, *, milvus: vector_store.MilvusOptions | None = None
    ) -> ImageIndex:
        """Reads an index folder written by :meth:`save`.

        Args:
            path: The index folder.
            milvus: For an index whose vectors live on a Milvus server: the token (never
                saved in the folder) and timeout; the URI and collection come from the
                manifest. Ignored for other indexes.

        Raises:
            IndexFormatError: When the folder is missing, incomplete, corrupt, or of another
                format version, or its Milvus collection no longer matches it.
            ImageIndexError: When its Milvus server cannot be reached.
        """
        path = Path(path)
        if not path.is_dir():
            raise IndexFormatError(
                f"no index at {path}: build one with `latentsearch index RUN IMAGES --out {path}`"
            )
        embeddings: np.ndarray | None = None
        for attempt in range(2):
            try:
                # Open what is there at once (one snapshot), then see what the manifest needs.
                present = [n for n in (EMBEDDINGS_FILE, INDEX_FILE) if (path / n).is_file()]
                with storage.open_members(path, [MANIFEST_FILE, *present]) as files:
                    text = files[MANIFEST_FILE].read().decode("utf-8")
                    manifest, items = _parse_manifest(path, text)
                    del text
                    needed = stores.files_needed(manifest)
                    absent = [n for n in needed if n not in files]
                    if absent:
                        raise FileNotFoundError(errno.ENOENT, "missing", absent[0])
                    if EMBEDDINGS_FILE in needed:
                        embeddings = storage.read_npy(files[EMBEDDINGS_FILE])
                        _check_embeddings(path, embeddings, manifest, len(items))
                    store = stores.open_store(
                        path,
                        manifest,
                        files,
                        count=len(items),
                        embeddings=embeddings,
                        options=milvus,
                    )
                break
            except ImageIndexError:
                raise
            except FileNotFoundError as e:
                # A concurrent save may have swapped the folder while we opened it: retry once.
                if attempt == 0 and path.is_dir():
                    continue
                name = Path(e.filename or "?").name
                raise IndexFormatError(
                    f"{path} is not a complete index folder: {name} is missing"
                ) from None
            except (OSError, ValueError, RuntimeError, UnicodeDecodeError) as e:
                raise IndexFormatError(f"{path} holds a corrupt index: {e}") from None
        if len(store) != len(items):
            raise IndexFormatError(
                f"{path} holds {len(store)} vectors, the manifest promises {len(items)}"
            )
        if embeddings is None:
            embeddings = store.stored_vectors()
            if embeddings is not None:
                _check_embeddings(path, embeddings, manifest, len(items))
        if embeddings is None:  # a store must keep the vectors when the folder does not
            raise IndexFormatError(f"{path} is not a complete index folder: no embeddings")
        manifest.pop("count", None)
        return cls(embeddings=embeddings, items=items, meta=manifest, store=store)

    # ------------------------------------------------------------------------ compatibility
    def check_compatible(self, run: Run) -> None:
        """Raises unless ``run`` is the run (model, weights, input shape) that built the index.

        Raises:
            FingerprintMismatch: Naming each difference.
        """
        mine, theirs = self.fingerprint, run.fingerprint
        diffs = []
        for key in FINGERPRINT_KEYS:
            a, b = mine.get(key), theirs.get(key)
            if a != b:
                if key == "weights_sha256":
                    a, b = f"{str(a)[:12]}…", f"{str(b)[:12]}…"
                diffs.append(f"{_FINGERPRINT_WORDS[key]} {a} (index) vs {b} (run)")
        if diffs:
            raise FingerprintMismatch(
                f"run {run.path} is not the run that built this index ({self._meta.get('run')}): "
                + "; ".join(diffs)
                + ". Use that run, or rebuild the index with this one"
            )

    # ------------------------------------------------------------------------ search
    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest items of each query vector.

        Args:
            vectors: Query embeddings. Shape: (Q, D).
            k: Neighbours per query, >= 1; capped at ``len(self)``.

        Returns:
            ``(distances, positions)``, nearest first; distances are squared L2 (float32),
            positions index ``items`` (int64). An approximate index may return fewer than
            ``k``: the missing slots hold position -1 and distance inf. Shapes: (Q, k), (Q, k).

        Raises:
            ImageIndexError: For a bad shape, dimension, NaN values or ``k``.
        """
        q = backends.as_vectors(vectors, self.embedding_dim, name="query vectors")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ImageIndexError(f"k must be a positive integer, got {k!r}")
        k = min(int(k), len(self))
        return self._store.search(q, k)

    def search_images(self, run: Run, pixels: np.ndarray, k: int) -> list[list[Neighbor]]:
        """Embeds query images with ``run`` and returns their ``k`` nearest indexed images.

        Args:
            run: The run that built the index.
            pixels: Query images at the run's size. Shape: (Q, H, W, C), uint8.
            k: Neighbours per query (capped at ``len(self)``).

        Returns:
            One list per query, nearest first.

        Raises:
            FingerprintMismatch: When ``run`` did not build the index.
            ValueError: For images of the wrong shape.
        """
        return self.search_vectors(self.embed_queries(run, pixels), k)

    def embed_queries(self, run: Run, pixels: np.ndarray) -> np.ndarray:
        """Query images embedded as the indexed ones were (same run, same precision).

        Args:
            run: The run that built the index.
            pixels: Query images at the run's size. Shape: (Q, H, W, C), uint8.

        Returns:
            Shape: (Q, D), float32.

        Raises:
            FingerprintMismatch: When ``run`` did not build the index.
            ValueError: For images of the wrong shape.
        """
        self.check_compatible(run)
        pixels = np.asarray(pixels)
        if pixels.ndim == 3:
            raise ImageIndexError(
                f"pixels must be a batch (Q, H, W, C), got {pixels.shape}; use pixels[None]"
            )
        if pixels.dtype != np.uint8:
            raise ImageIndexError(f"pixels must be uint8, got {pixels.dtype}")
        return embed_images(run.model, pixels, precision=self.precision_for(run))

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[list[Neighbor]]:
        """The ``k`` nearest indexed images of each query embedding, as :class:`Neighbor` s.

        Args:
            vectors: Query embeddings (:meth:`embed_queries`). Shape: (Q, D).
            k: Neighbours per query (capped at ``len(self)``).

        Returns:
            One list per query, nearest first.
        """
        distances, positions = self.search(vectors, k)
        return [self._neighbors(d, p) for d, p in zip(distances, positions, strict=True)]

    def precision_for(self, run: Run) -> str:
        """The index's precision where this machine has it, else fp32 with a warning."""
        try:
            return resolve_precision(self.precision, model_device(run))
        except PrecisionError as e:
            warnings.warn(
                f"the index was embedded in {self.precision}, which this machine lacks ({e}); "
                "embedding in fp32: neighbours may differ slightly from the index's own",
                RuntimeWarning,
                stacklevel=3,
            )
            return DEFAULT_PRECISION

    def neighbors_of(self, id: str, k: int) -> list[Neighbor]:
        """The ``k`` nearest items of an indexed item, from its stored embedding.

        Nothing is decoded or embedded; the item itself is among the results (at distance 0,
        usually first).

        Args:
            id: An indexed id.
            k: Neighbours, >= 1; capped at ``len(self)``.

        Returns:
            Nearest first.

        Raises:
            UnknownItem: When the index holds no such id.
            ImageIndexError: For a bad ``k``.
        """
        p = self.position(id)
        distances, positions = self.search(self._embeddings[p : p + 1], k)
        return self._neighbors(distances[0], positions[0])

    def _neighbors(self, distances: np.ndarray, positions: np.ndarray) -> list[Neighbor]:
        out: list[Neighbor] = []
        t = self._items
        for d, p in zip(distances.tolist(), positions.tolist(), strict=True):
            if p < 0:  # an approximate index may return fewer than k
                continue
            label = t.label(p)
            name = self.class_name(label)
            out.append(Neighbor(len(out) + 1, p, t.id(p), t.path(p), label, name, float(d)))
        return out

    # ------------------------------------------------------------------------ stored pixels
    def stored_pixels(self, id: str, *, download: bool = False) -> np.ndarray:
        """The pixels of an item that has no file (digits, CIFAR-10 batches, idx files).

        They come from the ``load_data`` spec recorded at building (``data_spec``), loaded
        once at the index's image size on the first call and kept; a failure to load is
        kept too, so later calls fail fast.

        Args:
            id: An indexed id.
            download: Let ``load_data`` download a named source that is not here.

        Returns:
            Shape: (H, W, C), uint8.

        Raises:
            UnknownItem: When the index holds no such id.
            StoredPixelsUnavailable: When no source is recorded, it cannot be loaded here, or
                it no longer holds the id.
        """
        self.position(id)
        with self._stored_lock:
            if self._stored is None:
                self._stored = self._load_stored(download=download)
            stored = self._stored
        if isinstance(stored, str):
            raise StoredPixelsUnavailable(f"item {id!r} has no image file, and {stored}")
        rows, pixels = stored
        row = rows.get(id)
        if row is None:
            raise StoredPixelsUnavailable(f"item {id!r} is no longer in {self.data_spec!r}")
        return np.asarray(pixels[row])

    def _load_stored(self, *, download: bool) -> tuple[dict[str, int], np.ndarray] | str:
        """The recorded source's ids and pixels, or why they cannot be had."""
        spec = self.data_spec
        if spec is None:
            return "the index does not record where its images came from"
        try:
            data = all_images(load_data(spec, image_size=self.image_size, download=download))
        except (DataError, OSError) as e:
            return f"its source {spec!r} cannot be loaded here: {e}"
        return {item_id: i for i, item_id in enumerate(data.ids)}, data.pixels

    # ------------------------------------------------------------------------ duplicates
    def duplicates(
        self, threshold: float, *, method: str = "auto", linkage: str = "average"
    ) -> list[list[IndexItem]]:
        """Groups of images whose embeddings are closer than ``threshold`` (squared L2).

        Close pairs are grouped by average linkage (``duplicates.group_pairs``): images join
        a group only while they are close on average to its members, so a chain of similar
        images does not become one group. Memory stays bounded (FAISS range searches in
        batches, never an N x N matrix).
        See :meth:`duplicate_search` for ``method`` and what an approximate search missed.

        Args:
            threshold: Squared L2 distance, > 0; pairs strictly closer are joined.
            method: ``auto``, ``exact`` or ``approximate``.
            linkage: ``average`` or ``single`` (connected components).

        Returns:
            Groups of two or more items, each in index order, ordered by first item.

        Raises:
            ImageIndexError: When ``threshold`` is not a positive number.
        """
        return self.duplicate_search(threshold, method=method, linkage=linkage)[0]

    def duplicate_search(
        self, threshold: float, *, method: str = "auto", linkage: str = "average"
    ) -> tuple[list[list[IndexItem]], DuplicateSearch]:
        """:meth:`duplicates` with how they were found and the missed-pair estimate.

        ``auto`` is exact (all pairs) up to ``duplicates.DUPLICATES_EXACT_MAX_ITEMS`` images,
        and above it an IVF range search (over the index's own IVF-Flat when it has one)
        whose missed pairs are measured against exact search on a sample.

        Returns:
            The groups of items and the search's result (positions, method, estimate).

        Raises:
            ImageIndexError: For a threshold that is not a positive number or an unknown
                method.
        """
        found = find_duplicates(
            self._embeddings,
            threshold,
            method=method,
            index=self._store.duplicate_index,
            linkage=linkage,
        )
        return [[self._items[p] for p in g] for g in found.groups], found

    def default_duplicate_threshold(self) -> float:
        """The threshold ``duplicates`` uses when none is given: a share of the median squared
        distance between two random indexed images, ``PHOTO_DUPLICATE_FRACTION`` when the
        run's model embeds a texture part (the auto recipe's photographs), else
        ``DEFAULT_DUPLICATE_FRACTION``. Needs two or more images.
        """
        from latentsearch.runs import CONFIG_FILE

        try:
            config = json.loads((self.run_path / CONFIG_FILE).read_text())
            fraction = duplicate_fraction(config.get("model_kwargs", {}))
        except (OSError, ValueError, TypeError, AttributeError):
            fraction = DEFAULT_DUPLICATE_FRACTION  # the run moved or is unreadable
        return default_threshold(self._embeddings, fraction)

    # ------------------------------------------------------------------------ accessors
    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return (
            f"ImageIndex({len(self)} items, {self.index_type}, model "
            f"{self.fingerprint.get('model')}, dim {self.embedding_dim})"
        )

    @property
    def items(self) -> ItemTable:
        """Every item, in position order: a read-only sequence of :class:`IndexItem`."""
        return self._items

    def item(self, id: str) -> IndexItem:
        """The item with this id.

        Raises:
            UnknownItem: When the index holds no such id.
        """
        return self._items[self.position(id)]

    def position(self, id: str) -> int:
        """The position of the item with this id.

        Raises:
            UnknownItem: When the index holds no such id.
        """
        p = self._items.position(id)
        if p is None:
            raise UnknownItem(f"no item with id {id!r} in this index")
        return p

    @property
    def embeddings(self) -> np.ndarray:
        """The stored embeddings, read-only. Shape: (N, D), float32."""
        view = self._embeddings.view()
        view.flags.writeable = False
        return view

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as saved, items included (built on each access: O(N))."""
        return {
            **self._meta,
            "count": len(self),
            "items": [item_json(it) for it in self._items],
        }

    @property
    def class_names(self) -> list[str]:
        """Class names; ``items[i].label`` indexes them."""
        return list(self._meta["class_names"])

    @property
    def labelled(self) -> bool:
        """Whether the index was built with labels: class names and at least one labelled item.

        Pages and reports show classes and right/wrong verdicts only then; folder names of an
        index built without labels are places, not classes.
        """
        return bool(self._meta["class_names"]) and bool((self._items.labels() >= 0).any())

    def class_name(self, label: int) -> str | None:
        """The name of class ``label``, None for -1 (unknown) or a label beyond the names."""
        names = self._meta["class_names"]
        return str(names[label]) if 0 <= label < len(names) else None

    @property
    def fingerprint(self) -> dict[str, Any]:
        """The building run's model name, weights hash, image size, channels, embedding size."""
        return dict(self._meta["fingerprint"])

    @property
    def embedding_dim(self) -> int:
        """D, the embedding size."""
        return int(self._meta["fingerprint"]["embedding_dim"])

    @property
    def image_size(self) -> int:
        """The side of the square images the building run takes."""
        return int(self._meta["fingerprint"]["image_size"])

    @property
    def backend(self) -> str:
        """``faiss`` or ``milvus``: what holds and searches the vectors."""
        return self._store.backend

    @property
    def index_type(self) -> str:
        """``flat``, ``hnsw`` or ``ivf``."""
        return self._store.index_type

    @property
    def index_params(self) -> dict[str, int]:
        """Settings of the FAISS index, e.g. ``{"M": 32, "efConstruction": 64, "efSearch": 48}``."""
        return dict(self._store.params)

    @property
    def data_spec(self) -> str | None:
        """The ``load_data`` spec the images came from, when the builder recorded one."""
        spec = self._meta.get("data")
        return None if spec is None else str(spec)

    @property
    def precision(self) -> str:
        """How the indexed images were embedded: ``fp32`` (indexes from before it was
        recorded), ``bf16`` or ``fp16``; queries and updates are embedded the same way."""
        return str(self._meta.get("precision", DEFAULT_PRECISION))

    @property
    def recall_at_10(self) -> float | None:
        """Build-time sample recall@10 for approximate indexes, None for exact ones."""
        return self._store.recall_at_10

    @property
    def run_path(self) -> Path:
        """The folder of the run that built the index."""
        return Path(self._meta["run"])
