"""The one indexing pipeline: a source of images, embedded a chunk at a time, merged into an index.

Every index is built by :func:`index_images` and updated by :func:`update_images`. A source
lists its images before any is read: a folder of image files (:class:`FolderSource`, listed by
``list_image_folder`` in ``load_image_folder``'s ids and order, decoded by ``decode_files`` in
worker processes), or images already decoded in memory (:class:`ArraySource`, an
``ImageData``, which is one chunk). The list is cut into chunks; each chunk's images are
decoded while the previous ones are embedded, and its embeddings and per-file results (content
hash, or why the file was skipped) become a shard. The shards are merged, in order, into the
index. What to build comes as one ``IndexSpec``, resolved once, here.

A folder indexed into ``out`` keeps its shards in a scratch folder beside the output,
``.<out name>.shards/``, so it never holds more than a few chunks of pixels; the scratch
folder is removed after the save. Other builds keep their shards in memory.

Resuming: the scratch folder records the job (run fingerprint, image size, chunk size,
precision and a digest of the file list). A killed job restarted with the same arguments reuses
every shard whose files still have the content hashed in it, and embeds only the rest. Another
run or another file list discards the old shards (``StreamStats.restarted`` says why).

Under ``torchrun`` (``latentsearch.distributed``) each rank embeds its contiguous share of
the chunks (``shard``) into the same scratch folder (the ranks share a file system); rank 0
merges and saves, so the index is the one a single process builds. A file a rank cannot read
is recorded in its shard and reported by rank 0 like any other skipped file.

Updating: every image is hashed (a folder's in the workers), and only new and changed ones are
decoded and embedded, a chunk at a time; an image whose content is unchanged keeps its stored
embedding. Images without a content hash (array sources) cannot be compared and are embedded
again.

Pixels are not kept: every item of a folder has its file, which is what the page and
``search --grid`` show; ``ImageIndex.stored_pixels`` serves only sources without files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from latentsearch.data import SOURCES, DataError, ImageData
from latentsearch.data.folder import (
    DecodedFiles,
    FolderFile,
    FolderListing,
    decode_files,
    hash_files,
    list_image_folder,
)
from latentsearch.data.idx import is_idx_folder
from latentsearch.data.images import quiet_decompression_bomb_warning
from latentsearch.diskspace import (
    DiskFullError,
    allocated_memmap,
    disk_full_error,
    is_disk_full,
    size_text,
)
from latentsearch.embedding import embed_images
from latentsearch.index.errors import ImageIndexError
from latentsearch.index.image_index import (
    FINGERPRINT_KEYS,
    ImageIndex,
    UpdateReport,
    item_table,
)
from latentsearch.index.items import ItemTable, ItemTableBuilder
from latentsearch.index.spec import IndexSpec, model_device

try:
    import fcntl
except ImportError:  # Windows: no lock, a second job on the same output is not detected
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from latentsearch.runs import Run

SHARDS_FORMAT = "latentsearch-index-shards/1"
"""Written to the scratch folder's ``job.json``; shards of any other format are discarded."""

JOB_FILE = "job.json"
LOCK_FILE = "lock"

CHUNK_BYTES = 3 << 20
"""A chunk holds about this many bytes of decoded pixels (``chunk_size`` for ``auto``)."""

MAX_CHUNK = 512
"""Most images per chunk: small chunks keep decoding and embedding overlapped."""

MIN_CHUNK = 16
"""Fewest images per chunk, however big the images."""

WINDOW_PER_WORKER = 2
"""Chunks decoded ahead per worker: enough to keep workers busy, few enough to bound memory."""


@dataclass(frozen=True)
class StreamStats:
    """How a streamed indexing went.

    Attributes:
        files: Files listed (readable or not).
        chunks: Chunks the file list was cut into.
        chunk_size: Files per chunk.
        embedded_chunks: Chunks decoded and embedded by this call (this rank).
        resumed_chunks: Chunks reused from the shards of an earlier, interrupted call.
        restarted: Why the shards of an earlier call were discarded, None when they were not.
        workers: Decoding processes (0: decoded in this process).
        world_size: Ranks that shared the chunks.
        list_seconds: Listing the folder.
        decode_wait_seconds: Time the embedding loop waited for decoded chunks.
        embed_seconds: Embedding (and writing shards).
        merge_seconds: Reading the shards back and building the FAISS index.
        save_seconds: Writing the index folder.
    """

    files: int
    chunks: int
    chunk_size: int
    embedded_chunks: int
    resumed_chunks: int
    restarted: str | None
    workers: int
    world_size: int
    list_seconds: float
    decode_wait_seconds: float
    embed_seconds: float
    merge_seconds: float
    save_seconds: float


@dataclass(frozen=True)
class IndexResult:
    """What :func:`index_images` made.

    Attributes:
        index: The index (saved to ``path`` when one was given); None on ranks other than 0
            of a distributed job.
        path: Where it was saved, None when it was not.
        source: Where the images came from, as ``all_images(load_data(...)).source``.
        skipped: ``(path, reason)`` for every file not indexed, as ``ImageData.skipped``.
        stats: Counts and timings.
    """

    index: ImageIndex | None
    path: Path | None
    source: str
    skipped: list[tuple[str, str]]
    stats: StreamStats


def is_image_folder(spec: str) -> bool:
    """Whether ``load_data(spec)`` would read ``spec`` as a folder of image files."""
    if spec in SOURCES:
        return False
    path = Path(spec).expanduser()
    if not path.is_dir() or is_idx_folder(path):
        return False
    return not ((path / "batches.meta").is_file() and (path / "data_batch_1").is_file())


def auto_chunk_size(image_size: int) -> int:
    """Images per chunk for squares of this side: about ``CHUNK_BYTES`` of pixels."""
    per_image = image_size * image_size * 3
    return max(MIN_CHUNK, min(MAX_CHUNK, CHUNK_BYTES // per_image))


def default_workers() -> int:
    """Decoding processes by default: one per available core."""
    from latentsearch.precision import available_cores

    return available_cores()


def shards_dir(out: str | Path) -> Path:
    """The scratch folder that holds the shards of an indexing job writing ``out``."""
    out = Path(os.path.abspath(out))
    return out.parent / f".{out.name}.shards"


# ---------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class ArrayFile:
    """One image of an in-memory source.

    Attributes:
        id: The image's id.
        path: Its file, None for sources without files.
        label: Class index, -1 when unknown.
    """

    id: str
    path: str | None
    label: int


class _Reader(contextlib.AbstractContextManager["_Reader"]):
    """Reads a source's images by position: decoded pixels, or only content hashes."""

    @abstractmethod
    def decoded(self, groups: Iterable[list[int]]) -> Iterator[DecodedFiles]:
        """The images at each group of positions, decoded, in order."""

    @abstractmethod
    def hashes(self, groups: Iterable[list[int]]) -> list[list[str]]:
        """The content hashes of each group's images ("" where unknown or unreadable)."""

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops any worker processes."""


class ImageSource(ABC):
    """Images to index, listed before any is read.

    Attributes:
        files: Every listed image, in order: ``id``, ``path`` (None without a file) and
            ``label``.
        source: Where the images came from, for people.
        class_names: Names of the labels.
    """

    files: Sequence[FolderFile | ArrayFile]
    source: str
    class_names: list[str]

    @abstractmethod
    def check(self, run: Run) -> None:
        """Refuses images the run cannot embed.

        Raises:
            ImageIndexError: Naming what does not match.
        """

    @abstractmethod
    def chunk_size(self, run: Run) -> int:
        """Images per chunk when the caller names none."""

    @abstractmethod
    def reader(self, workers: int, image_size: int) -> _Reader:
        """Reads the images with ``workers`` processes (0: in this one) at the run's size."""

    @abstractmethod
    def skipped(self, failed: dict[int, str]) -> list[tuple[str, str]]:
        """Every image not indexed, as ``ImageData.skipped``.

        Args:
            failed: Why each image that could not be decoded failed, by position.

        Raises:
            DataError: When a split is left without a readable image.
        """

    def job(self) -> dict[str, Any] | None:
        """What identifies the listed files, for resuming a job from its shards on disk;
        None when the source cannot be resumed (it is not on disk)."""
        return None


class FolderSource(ImageSource):
    """A folder of image files, listed as ``load_image_folder`` reads it.

    Args:
        folder: Any layout ``load_image_folder`` reads.

    Raises:
        DataError: When the folder is missing or holds no files.
    """

    def __init__(self, folder: str | Path) -> None:
        self.listing: FolderListing = list_image_folder(folder)
        self.files = self.listing.files  # every split's files, train first
        self.source = self.listing.source
        self.class_names = list(self.listing.class_names)

    def check(self, run: Run) -> None:
        s, c = run.model.image_size, run.model.in_channels
        if c != 3:
            # The words of an in-memory source's check, for a folder decoded as RGB.
            raise ImageIndexError(
                f"the images are {s}×{s}×3 but run {run.path} takes {s}×{s}×{c}: they need "
                "the run's channels"
            )

    def chunk_size(self, run: Run) -> int:
        return auto_chunk_size(run.model.image_size)

    def reader(self, workers: int, image_size: int) -> _Reader:
        return _Decoder(workers, image_size, self.listing.files)

    def _split_of(self) -> np.ndarray:
        """The split of each file, as an index into ``listing.splits``."""
        sizes = [len(s.files) for s in self.listing.splits]
        return np.repeat(np.arange(len(sizes), dtype=np.int8), sizes)

    def skipped(self, failed: dict[int, str]) -> list[tuple[str, str]]:
        split_index = self._split_of()
        counts = np.bincount(split_index, minlength=len(self.listing.splits))
        skipped: list[tuple[str, str]] = []
        for k, part in enumerate(self.listing.splits):
            # As load_image_folder: problems found while listing first, then decoding failures.
            files = self.listing.files
            mine = [(files[i].path, why) for i, why in failed.items() if split_index[i] == k]
            both = [*part.problems, *mine]
            if len(mine) == counts[k]:
                root = self.listing.root
                reasons = "; ".join(f"{Path(p).relative_to(root)}: {why}" for p, why in both[:3])
                raise DataError(f"no readable image in {part.where} (e.g. {reasons})")
            skipped.extend(both)
        return skipped

    def job(self) -> dict[str, Any]:
        # The file list (ids, labels, known problems) goes in as a digest: job.json stays small.
        h = hashlib.sha256()
        for split in self.listing.splits:
            h.update(f"[{split.name}]\n".encode())
            for rel, label in zip(split.files.ids(), split.files.labels.tolist(), strict=True):
                h.update(f"{rel}\0{label}\n".encode())
            for path, reason in split.problems:
                # A path may hold a name's undecodable bytes (as os.fsdecode's surrogates).
                h.update(f"!{path}\0{reason}\n".encode("utf-8", "surrogateescape"))
        return {"root": str(self.listing.root), "file_list_sha256": h.hexdigest()}


class ArraySource(ImageSource):
    """Images already decoded (``ImageData``): one chunk, nothing to decode.

    Args:
        data: The images, at the run's image size and channels.
    """

    def __init__(self, data: ImageData) -> None:
        self.data = data
        self.source = data.source
        self.class_names = list(data.class_names)
        labels = data.labels.tolist()
        paths = data.paths if data.paths is not None else [None] * len(data)
        self.files = [
            ArrayFile(i, p, int(y)) for i, p, y in zip(data.ids, paths, labels, strict=True)
        ]
        # The source's hashes are those of the bytes its pixels came from; hashing the files
        # again could pair a file changed since decoding with its old pixels.
        if data.sha256 is not None:
            self.sha256 = [h or "" for h in data.sha256]
        elif data.paths is not None:
            self.sha256 = hash_files(list(data.paths))  # "" for a file that cannot be read
        else:
            self.sha256 = [""] * len(data)

    def check(self, run: Run) -> None:
        s, c = run.model.image_size, run.model.in_channels
        h, w, ch = self.data.image_shape
        if (h, w, ch) != (s, s, c):
            hint = f"load them with image_size={s}" if ch == c else "they need the run's channels"
            raise ImageIndexError(
                f"the images are {h}×{w}×{ch} but run {run.path} takes {s}×{s}×{c}: {hint}"
            )
        if len(self.data) == 0:
            raise ImageIndexError(f"nothing to index: {self.source or 'the data'} holds no images")
        _file_table(self.files, self.sha256)  # duplicate ids fail before any embedding

    def chunk_size(self, run: Run) -> int:
        return max(1, len(self.files))  # one chunk: the pixels are all here already

    def reader(self, workers: int, image_size: int) -> _Reader:
        return _ArrayReader(self)

    def skipped(self, failed: dict[int, str]) -> list[tuple[str, str]]:
        return list(self.data.skipped)


class _ArrayReader(_Reader):
    def __init__(self, source: ArraySource) -> None:
        self._source = source

    def decoded(self, groups: Iterable[list[int]]) -> Iterator[DecodedFiles]:
        pixels, sha256 = self._source.data.pixels, self._source.sha256
        for group in groups:
            n = len(group)
            whole = n == len(pixels) and group == list(range(n))
            yield DecodedFiles(
                pixels=pixels if whole else pixels[group],  # no copy of a whole source
                ok=np.ones(n, dtype=bool),
                sha256=[sha256[i] for i in group],
                errors=[None] * n,
            )

    def hashes(self, groups: Iterable[list[int]]) -> list[list[str]]:
        return [[self._source.sha256[i] for i in group] for group in groups]


def as_source(images: str | Path | ImageData | ImageSource) -> ImageSource:
    """``images`` as a source: a folder's path, or images decoded in memory.

    Raises:
        DataError: For a folder that is missing or holds no files.
    """
    if isinstance(images, ImageSource):
        return images
    if isinstance(images, ImageData):
        return ArraySource(images)
    return FolderSource(images)


class _Decoder(_Reader):
    """Decodes a folder's files in worker processes (or here, with no workers), a bounded
    window of chunks ahead."""

    def __init__(self, workers: int, image_size: int, files: Sequence[FolderFile]) -> None:
        self.image_size = image_size
        self.workers = workers
        self._files = files
        self._pool: Any = None
        if workers > 0:
            # Never fork: this process runs torch's thread pools, which a fork leaves broken.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            if "forkserver" in methods:
                ctx.set_forkserver_preload(["latentsearch.data.folder"])
            # Workers are this package's own processes: refusals say "too large" themselves.
            self._pool = ctx.Pool(workers, initializer=quiet_decompression_bomb_warning)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def _paths(self, groups: Iterable[list[int]]) -> Iterator[list[str]]:
        # Each group's paths are made when it goes to a worker, not all at once.
        return ([self._files[i].path for i in group] for group in groups)

    def decoded(self, groups: Iterable[list[int]]) -> Iterator[DecodedFiles]:
        """The decoded chunks, in order; at most ``WINDOW_PER_WORKER * workers`` in flight."""
        if self._pool is None:
            for paths in self._paths(groups):
                yield decode_files(paths, self.image_size)
            return
        window: deque[Any] = deque()
        todo = self._paths(groups)
        for paths in todo:
            window.append(self._pool.apply_async(decode_files, (paths, self.image_size)))
            if len(window) >= WINDOW_PER_WORKER * self.workers:
                break
        while window:
            result = window.popleft().get()
            nxt = next(todo, None)
            if nxt is not None:
                window.append(self._pool.apply_async(decode_files, (nxt, self.image_size)))
            yield result

    def hashes(self, groups: Iterable[list[int]]) -> list[list[str]]:
        if self._pool is None:
            return [hash_files(paths) for paths in self._paths(groups)]
        return list(self._pool.imap(hash_files, self._paths(groups)))


# ---------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class _Job:
    source: ImageSource
    chunk_size: int
    description: dict[str, Any]  # what job.json records
    digest: str  # of the description

    @property
    def files(self) -> Sequence[FolderFile | ArrayFile]:
        return self.source.files

    @property
    def chunks(self) -> int:
        return -(-len(self.files) // self.chunk_size)

    def positions(self, c: int) -> list[int]:
        return list(range(c * self.chunk_size, min((c + 1) * self.chunk_size, len(self.files))))

    def chunk(self, c: int) -> Sequence[FolderFile | ArrayFile]:
        return self.files[c * self.chunk_size : (c + 1) * self.chunk_size]

    @property
    def precision(self) -> str:
        return str(self.description["precision"])


def _make_job(run: Run, source: ImageSource, chunk_size: int, precision: str) -> _Job:
    listed = source.job() or {}
    description = {
        "format": SHARDS_FORMAT,
        "fingerprint": {k: run.fingerprint[k] for k in FINGERPRINT_KEYS},
        "root": listed.get("root"),
        "image_size": int(run.model.image_size),
        "chunk_size": int(chunk_size),
        "precision": precision,
        "files": len(source.files),
        "file_list_sha256": listed.get("file_list_sha256"),
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
    return _Job(source, chunk_size, description, digest)


def _why_different(old: Any, new: dict[str, Any]) -> str | None:
    """Why the job recorded as ``old`` is not ``new``, None when it is the same job."""
    if not isinstance(old, dict) or old.get("format") != SHARDS_FORMAT:
        return "they were written by another version"
    words = {
        "fingerprint": "another run",
        "root": "another folder",
        "image_size": "another image size",
        "chunk_size": "another chunk size",
        "precision": "another precision",
        "files": "another file list",
        "file_list_sha256": "another file list",
    }
    for key, word in words.items():
        if old.get(key) != new[key]:
            return f"they were made with {word}"
    return None


@contextlib.contextmanager
def _locked(folder: Path, out: Path) -> Iterator[None]:
    """Holds ``folder/lock`` so that two jobs never write the same shards."""
    with open(folder / LOCK_FILE, "ab") as lock:
        if fcntl is not None:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ImageIndexError(
                    f"another indexing job is writing {out} (its shards are in {folder}): "
                    "wait for it to finish, or stop it"
                ) from None
        yield


def _prepare(folder: Path, job: _Job) -> str | None:
    """Makes ``folder`` hold ``job``'s description; returns why old shards were discarded."""
    job_file = folder / JOB_FILE
    restarted = None
    if job_file.exists():
        try:
            old = json.loads(job_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        restarted = _why_different(old, job.description)
        if restarted is None:
            return None
    for p in folder.glob("shard-*"):
        p.unlink()
    _write_atomic(job_file, lambda f: f.write(json.dumps(job.description, indent=1).encode()))
    return restarted


def _write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Writes ``path`` through a temporary sibling renamed into place: whole or not at all."""
    tmp = path.with_name(f"{path.name}.part-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# ---------------------------------------------------------------------------- shards
@dataclass(frozen=True)
class _Shard:
    embeddings: np.ndarray  # (n_ok, D) float32, the readable files of the chunk in order
    ok: np.ndarray  # (n,) bool
    sha256: list[str]  # (n,), "" where the file could not be read
    errors: list[str]  # (n,), "" where the file was indexed


MERGED_FILE = "merged-embeddings.npy"
"""Where the merge writes every shard's vectors, in item order, in the shards folder."""


def _shard_path(folder: Path, c: int) -> Path:
    return folder / f"shard-{c:07d}.npz"


def _write_shard(folder: Path, c: int, job: _Job, shard: _Shard) -> None:
    def write(f: IO[bytes]) -> None:
        np.savez(
            f,
            job=np.array(job.digest),
            embeddings=shard.embeddings,
            ok=shard.ok,
            sha256=np.array(shard.sha256, dtype="S64"),
            errors=np.array(shard.errors, dtype=str),
        )

    _write_atomic(_shard_path(folder, c), write)


def _read_ok(folder: Path, c: int, job: _Job) -> np.ndarray | None:
    """Which files of chunk ``c`` its shard indexed (read alone), None when unusable."""
    try:
        with np.load(_shard_path(folder, c), allow_pickle=False) as z:
            if str(z["job"]) != job.digest:
                return None
            ok: np.ndarray = z["ok"].astype(bool)
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return ok if ok.shape == (len(job.chunk(c)),) else None


def _read_shard(folder: Path, c: int, job: _Job, dim: int) -> _Shard | None:
    """Chunk ``c``'s shard, None when missing, of another job, or damaged."""
    n = len(job.chunk(c))
    try:
        with np.load(_shard_path(folder, c), allow_pickle=False) as z:
            if str(z["job"]) != job.digest:
                return None
            ok = z["ok"].astype(bool)
            shard = _Shard(
                embeddings=z["embeddings"],
                ok=ok,
                sha256=[s.decode("ascii") for s in z["sha256"].tolist()],
                errors=[str(e) for e in z["errors"].tolist()],
            )
    except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError):
        return None
    if (
        ok.shape != (n,)
        or len(shard.sha256) != n
        or len(shard.errors) != n
        or shard.embeddings.dtype != np.float32
        or shard.embeddings.shape != (int(ok.sum()), dim)
    ):
        return None
    return shard


class _MemoryShards:
    """Shards kept in this process: a build that writes no folder, or has no files to resume."""

    where = "memory"
    merged: Path | None = None

    def __init__(self) -> None:
        self._shards: dict[int, _Shard] = {}

    def write(self, c: int, shard: _Shard) -> None:
        self._shards[c] = shard

    def read(self, c: int, dim: int) -> _Shard | None:
        return self._shards.get(c)

    def read_ok(self, c: int) -> np.ndarray | None:
        shard = self._shards.get(c)
        return None if shard is None else shard.ok


class _DiskShards:
    """Shards as files of the scratch folder: what lets a killed job resume."""

    def __init__(self, folder: Path, job: _Job) -> None:
        self.where = folder
        self.merged = folder / MERGED_FILE
        self._job = job

    def write(self, c: int, shard: _Shard) -> None:
        _write_shard(self.where, c, self._job, shard)

    def read(self, c: int, dim: int) -> _Shard | None:
        return _read_shard(self.where, c, self._job, dim)

    def read_ok(self, c: int) -> np.ndarray | None:
        return _read_ok(self.where, c, self._job)


_Shards = _MemoryShards | _DiskShards


# ---------------------------------------------------------------------------- the build
def _check_sizes(workers: object, chunk_size: object) -> None:
    """Refuses bad ``workers`` / ``chunk_size`` (None: the source's own chunk size)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ImageIndexError(f"workers must be 0 or more, got {workers!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ImageIndexError(f"chunk_size must be a positive integer, got {chunk_size!r}")


def index_images(
    run: Run,
    images: str | Path | ImageData | ImageSource,
    out: str | Path | None = None,
    *,
    spec: IndexSpec | None = None,
    workers: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    data_spec: str | None = None,
    on_shard: Callable[[int], None] | None = None,
) -> IndexResult:
    """Embeds images a chunk at a time and indexes them; saves the index to ``out`` if given.

    A folder's images are streamed: only the embeddings and per-file metadata grow with it,
    and with ``out`` the job resumes from its shards when run again (see the module doc).
    Images in memory (``all_images(load_data(...))``) are one chunk. Both give the same
    index (same items in the same order, same skipped files, embeddings equal up to float
    rounding).

    Args:
        run: A trained run (``latentsearch.runs.load_run``).
        images: A folder of image files (any layout ``load_image_folder`` reads), images
            decoded at the run's image size and channels, or an :class:`ImageSource`.
        out: The index folder to write (an existing index there is replaced); None keeps the
            index in memory only.
        spec: What to build (default ``IndexSpec()``), resolved here once; its precision is
            part of a folder's job: a restart in another precision starts over.
        workers: Decoding processes for a folder; None means one per core, 0 decodes in this
            process.
        chunk_size: Images per chunk (and shard); None picks ``auto_chunk_size`` for a folder,
            every image for images in memory. Part of the job: another chunk size starts over.
        progress: Show a progress bar on a terminal.
        data_spec: How to load the images again (a ``load_data`` spec), kept in the manifest
            so tools can show images of sources that have no files.
        on_shard: Called with each chunk's number once its shard is written (a hook for
            tests and progress reports; an exception raised there stops the job, resumably).

    Returns:
        The index (rank 0 only), where it went, the skipped files and statistics.

    Raises:
        DataError: When a folder is missing, holds no files, or a split holds no readable
            image.
        ImageIndexError: For images the run cannot embed, no images, duplicate ids, a bad
            index type, backend, ``workers`` or ``chunk_size``, or another job writing the
            same ``out``.
        PrecisionError: When this machine cannot embed in ``spec.precision``.
        DiskFullError: When the shards or the index do not fit: the old index is intact,
            and the shards made so far stay for the same command to resume from.
        OSError: When the shards or the index cannot be written.
    """
    from latentsearch import distributed

    dist = distributed.context()
    if workers is None:
        workers = max(1, default_workers() // dist.local_world_size)  # ranks share the cores
    _check_sizes(workers, chunk_size)
    spec = (spec or IndexSpec()).resolve(run)  # an unknown kind fails before any work
    t0 = time.perf_counter()
    source = as_source(images)
    source.check(run)
    job = _make_job(run, source, chunk_size or source.chunk_size(run), spec.precision)
    t_list = time.perf_counter()
    if out is not None and job.description["root"] is not None:  # files on disk: resumable
        out = Path(os.path.abspath(out))
        try:
            return _index_on_disk(
                run,
                job,
                out,
                spec,
                workers=workers,
                progress=progress,
                data_spec=data_spec,
                on_shard=on_shard,
                times=(t0, t_list),
            )
        except OSError as e:
            if not is_disk_full(e):
                raise
            raise _disk_full_with_shards(e, out) from e
    shards = _MemoryShards()
    counts = _embed_chunks(run, job, shards, list(range(job.chunks)), workers, progress, on_shard)
    t_embed = time.perf_counter()
    index, skipped = _merge(run, job, shards, spec, data_spec)
    t_merge = time.perf_counter()
    if out is not None:
        out = index.save(out)
    stats = _stats(job, counts, None, workers, 1, (t0, t_list, t_embed, t_merge))
    return IndexResult(index, None if out is None else Path(out), source.source, skipped, stats)


def _index_on_disk(
    run: Run,
    job: _Job,
    out: Path,
    spec: IndexSpec,
    *,
    workers: int,
    progress: bool,
    data_spec: str | None,
    on_shard: Callable[[int], None] | None,
    times: tuple[float, float],
) -> IndexResult:
    """:func:`index_images` of a folder into ``out``: shards on disk, resumable, and shared
    by the ranks of a distributed job."""
    from latentsearch import distributed

    dist = distributed.context()
    if dist.enabled:
        distributed.setup(model_device(run))
    scratch = shards_dir(out)
    shards = _DiskShards(scratch, job)
    restarted: str | None = None
    with contextlib.ExitStack() as stack:
        failure: BaseException | None = None
        if dist.is_main:
            try:
                scratch.mkdir(parents=True, exist_ok=True)
                stack.enter_context(_locked(scratch, out))
                restarted = _prepare(scratch, job)
            except BaseException as e:  # the other ranks must hear of it, or wait forever
                failure = e
        # Also a barrier: every rank sees job.json before it reads shards.
        _agree_on_failure(failure, "preparing the shards folder")
        mine = list(range(job.chunks))[distributed.shard(job.chunks, dist)]
        counts = _Counts()
        try:
            counts = _embed_chunks(run, job, shards, mine, workers, progress, on_shard)
        except BaseException as e:
            failure = e
        _agree_on_failure(failure, "embedding its chunks")
        t_embed = time.perf_counter()
        stats = _stats(job, counts, restarted, workers, dist.world_size, (*times, t_embed))
        if not dist.is_main:
            distributed.barrier()  # rank 0 merges and saves
            return IndexResult(None, out, job.source.source, [], stats)
        try:
            index, skipped = _merge(run, job, shards, spec, data_spec)
            t_merge = time.perf_counter()
            index.save(out)
        finally:
            distributed.barrier()
    shutil.rmtree(scratch, ignore_errors=True)
    stats = _stats(job, counts, restarted, workers, dist.world_size, (*times, t_embed, t_merge))
    return IndexResult(index, out, job.source.source, skipped, stats)


def index_embeddings(
    run: Run,
    data: ImageData,
    embeddings: np.ndarray,
    *,
    spec: IndexSpec,
    data_spec: str | None = None,
) -> ImageIndex:
    """Indexes images whose embeddings were already made with ``run`` (in ``spec.precision``).

    Args:
        run: The run whose model made the embeddings.
        data: The images (see :func:`index_images`).
        embeddings: One row per image. Shape: (N, D), float32.
        spec: What to build, resolved.
        data_spec: See :func:`index_images`.

    Raises:
        ImageIndexError: For images the run cannot embed, or embeddings of another shape.
    """
    source = ArraySource(data)
    source.check(run)
    if embeddings.shape != (len(data), run.model.embedding_dim) or (embeddings.dtype != np.float32):
        raise ImageIndexError(
            f"embeddings must be float32 ({len(data)}, {run.model.embedding_dim}), one row "
            f"per image, got {embeddings.dtype} {embeddings.shape}"
        )
    items = _file_table(source.files, source.sha256)
    return ImageIndex.from_embeddings(
        run,
        embeddings,
        items,
        class_names=source.class_names,
        source=source.source,
        spec=spec,
        data_spec=data_spec,
    )


def _agree_on_failure(failure: BaseException | None, doing: str) -> None:
    """Re-raises ``failure``; in a job, every rank raises when any rank failed ``doing``."""
    from latentsearch import distributed

    if distributed.is_active():
        import torch

        failed = distributed.all_reduce_sum(torch.tensor([int(failure is not None)]))
        if failure is None and int(failed.item()):
            raise ImageIndexError(
                f"another rank failed {doing} (see its message); the shards written so far "
                "are kept: run the same command again to resume"
            )
    if failure is not None:
        raise failure


@dataclass
class _Counts:
    embedded: int = 0
    resumed: int = 0
    decode_wait: float = 0.0
    embed: float = 0.0


def _stats(
    job: _Job,
    counts: _Counts,
    restarted: str | None,
    workers: int,
    world_size: int,
    times: tuple[float, ...],
) -> StreamStats:
    """The stats at the end of a stage; ``times`` holds when the job started and when its
    listing, embedding and (once done) merge ended; the save ends now."""
    t0, t_list, t_embed, *merged = times
    t_save = time.perf_counter()
    return StreamStats(
        files=len(job.files),
        chunks=job.chunks,
        chunk_size=job.chunk_size,
        embedded_chunks=counts.embedded,
        resumed_chunks=counts.resumed,
        restarted=restarted,
        workers=workers,
        world_size=world_size,
        list_seconds=t_list - t0,
        decode_wait_seconds=counts.decode_wait,
        embed_seconds=counts.embed,
        merge_seconds=merged[0] - t_embed if merged else 0.0,
        save_seconds=t_save - merged[0] if merged else 0.0,
    )


def _embed_chunks(
    run: Run,
    job: _Job,
    shards: _Shards,
    mine: list[int],
    workers: int,
    progress: bool,
    on_shard: Callable[[int], None] | None,
) -> _Counts:
    """Decodes and embeds the chunks ``mine`` that have no valid shard yet, writing shards."""
    from tqdm.auto import tqdm

    from latentsearch.progress import show_progress

    dim = run.model.embedding_dim
    counts = _Counts()
    with job.source.reader(min(workers, len(mine)), run.model.image_size) as reader:
        # A shard is reused only while its files still hold the bytes it was made from.
        # Only the hashes of the shards found are kept, not their vectors.
        existing = {c: s.sha256 for c in mine if (s := shards.read(c, dim)) is not None}
        hashes = reader.hashes(job.positions(c) for c in existing)
        done = {c for c, h in zip(existing, hashes, strict=True) if h == existing[c]}
        del existing
        counts.resumed = len(done)
        todo = [c for c in mine if c not in done]
        with tqdm(
            total=sum(len(job.chunk(c)) for c in mine),
            initial=sum(len(job.chunk(c)) for c in done),
            desc="index",
            unit="img",
            disable=not show_progress(progress),
        ) as bar:
            stream = reader.decoded(job.positions(c) for c in todo)
            for c in todo:
                t = time.perf_counter()
                decoded = next(stream)
                t1 = time.perf_counter()
                embeddings = (
                    embed_images(run.model, decoded.pixels, precision=job.precision)
                    if len(decoded.pixels)
                    else np.empty((0, dim), dtype=np.float32)
                )
                shard = _Shard(
                    embeddings=embeddings,
                    ok=decoded.ok,
                    sha256=decoded.sha256,
                    errors=["" if e is None else e for e in decoded.errors],
                )
                shards.write(c, shard)
                counts.decode_wait += t1 - t
                counts.embed += time.perf_counter() - t1
                counts.embedded += 1
                bar.update(len(decoded.ok))
                if on_shard is not None:
                    on_shard(c)
    return counts


def _merge(
    run: Run, job: _Job, shards: _Shards, spec: IndexSpec, data_spec: str | None
) -> tuple[ImageIndex, list[tuple[str, str]]]:
    """Reads every shard back, in order, into the index and the list of skipped files."""
    dim = run.model.embedding_dim
    where = shards.where
    # Two passes, so that the embeddings are held once: count, then copy.
    n_ok = 0
    for c in range(job.chunks):
        ok = shards.read_ok(c)
        if ok is None:
            raise ImageIndexError(
                f"the shard of chunk {c} in {where} is missing or damaged (another process "
                "wrote there?): run the same command again to redo it"
            )
        n_ok += int(ok.sum())
    embeddings = _merged_buffer(shards.merged, n_ok, dim)
    items = ItemTableBuilder()  # columns, not an object per item
    failed: dict[int, str] = {}
    for c in range(job.chunks):
        shard = shards.read(c, dim)
        if shard is None or len(items) + len(shard.embeddings) > n_ok:
            raise ImageIndexError(
                f"the shard of chunk {c} in {where} changed while it was read (another "
                "process writes there?): run the same command again"
            )
        embeddings[len(items) : len(items) + len(shard.embeddings)] = shard.embeddings
        base = c * job.chunk_size
        for j, f in enumerate(job.chunk(c)):
            if shard.ok[j]:
                # No hash: an array source without files, whose items cannot be compared.
                items.add(f.id, f.path, f.label, shard.sha256[j] or None)
            else:
                failed[base + j] = shard.errors[j]
    if len(items) != n_ok:
        raise ImageIndexError(
            f"the shards in {where} changed while they were read: run the same command again"
        )
    if isinstance(embeddings, np.memmap) and shards.merged is not None:
        # Read-only from here: the save links this file into the index folder as it is.
        embeddings.flush()
        embeddings = np.load(shards.merged, mmap_mode="r", allow_pickle=False)
    skipped = job.source.skipped(failed)
    index = ImageIndex.from_embeddings(
        run,
        embeddings,
        item_table(items),
        class_names=job.source.class_names,
        source=job.source.source,
        spec=spec,
        data_spec=data_spec,
    )
    return index, skipped


def _disk_full_with_shards(error: OSError, out: Path) -> DiskFullError:
    """The full disk of a job writing ``out`` from shards on disk, as one line.

    The merged vectors (remade by the next merge) are deleted; the shards stay, so that the
    same command resumes once there is room, and the message says where they are.
    """
    scratch = shards_dir(out)
    with contextlib.suppress(OSError):
        (scratch / MERGED_FILE).unlink(missing_ok=True)
    if isinstance(error, DiskFullError):
        message = str(error)
    else:
        message = str(disk_full_error(out.parent, out.name))
    shards = list(scratch.glob("shard-*.npz"))
    if not shards:  # nothing worth keeping: only the job's description
        shutil.rmtree(scratch, ignore_errors=True)
        return DiskFullError(message)
    kept = sum(p.stat().st_size for p in shards)
    return DiskFullError(
        f"{message}; the embeddings made so far ({size_text(kept)} of shards) stay in "
        f"{scratch}: the same command resumes from them, or delete that folder"
    )


def _merged_buffer(path: Path | None, n: int, dim: int) -> np.ndarray:
    """Where the merge puts every shard's vectors, in item order. Shape: (n, dim), float32.

    With a ``path`` (shards on disk) it is a file, not this process's memory: FAISS then
    holds the only resident copy, and the pages of the file are the kernel's to drop.
    """
    if path is not None:
        # A file left by a job stopped after its save is the saved index's embeddings.npy too
        # (a hard link): unlink it, so that the new vectors go to a new file, never into it.
        path.unlink(missing_ok=True)
    if path is None or n == 0:
        return np.empty((n, dim), dtype=np.float32)
    # Allocated up front: a sparse map on a full disk dies of SIGBUS when it is written.
    return allocated_memmap(path, shape=(n, dim), dtype=np.float32)


# ---------------------------------------------------------------------------- the update
def _file_table(
    files: Sequence[FolderFile | ArrayFile],
    sha256: Sequence[str],
    keep: np.ndarray | None = None,
) -> ItemTable:
    """The item table of ``files`` (those ``keep`` marks), in columns, not an object per file.

    Args:
        files: The listed images.
        sha256: Their content hashes, "" where unknown or unreadable.
        keep: Which files to include. Shape: (len(files),), bool; None: all.
    """
    builder = ItemTableBuilder()
    flags = [True] * len(files) if keep is None else keep.tolist()
    for f, h, good in zip(files, sha256, flags, strict=True):
        if good:
            builder.add(f.id, f.path, f.label, h or None)
    return item_table(builder)


@dataclass(frozen=True)
class UpdateResult:
    """What :func:`update_images` did.

    Attributes:
        report: Ids added, changed, removed and unchanged.
        source: Where the images came from, as ``all_images(load_data(...)).source``.
        skipped: ``(path, reason)`` for every file not indexed, as ``ImageData.skipped``.
        hashed: Images hashed to compare with the index (every listed one).
        decoded: Images decoded and embedded (the new and changed ones).
    """

    report: UpdateReport
    source: str
    skipped: list[tuple[str, str]]
    hashed: int
    decoded: int


def update_images(
    index: ImageIndex,
    run: Run,
    images: str | Path | ImageData | ImageSource,
    *,
    workers: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    data_spec: str | None = None,
) -> UpdateResult:
    """Brings ``index`` in line with its images, embedding only the new and changed ones.

    Items are matched by id; an image whose content (SHA-256) is unchanged keeps its stored
    embedding and, in a folder, is only hashed, never decoded; new ones are decoded a chunk
    at a time in worker processes. Images are embedded in the index's own precision. The
    vector store is then brought in line (same requested kind), in place: FAISS rebuilds its
    index, Milvus rewrites only the rows that changed. Save the index to keep the result.

    Args:
        index: The index to update, built by ``run``.
        run: The run that built it.
        images: As for :func:`index_images`.
        workers: Hashing and decoding processes for a folder; None: one per core, 0: in this
            process.
        chunk_size: Images per decoded chunk; None: as for :func:`index_images`.
        progress: Show a progress bar on a terminal.
        data_spec: New value for the manifest's ``data`` (None keeps the old one).

    Returns:
        The report, the skipped files and how many images were hashed and decoded.

    Raises:
        FingerprintMismatch: When ``run`` did not build ``index``.
        DataError: When a folder is missing or a split holds no readable image.
        ImageIndexError: For images the run cannot embed, no images, duplicate ids, or bad
            ``workers`` or ``chunk_size``.
    """
    index.check_compatible(run)
    if workers is None:
        workers = default_workers()
    _check_sizes(workers, chunk_size)
    source = as_source(images)
    source.check(run)
    files = source.files
    size = chunk_size or source.chunk_size(run)
    groups = [list(range(i, min(i + size, len(files)))) for i in range(0, len(files), size)]
    with source.reader(min(workers, len(groups)), run.model.image_size) as reader:
        hashes = [h for chunk in reader.hashes(groups) for h in chunk]
        # A file that cannot be read has no hash: it goes to the decoder, which says why.
        _, plan = index.plan_update(_file_table(files, hashes))
        todo = np.flatnonzero(plan < 0).tolist()
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        new, ok, failed = _embed_new(index, run, reader, batches, hashes, progress)
    # One table for the second plan and the update (each would otherwise build its own).
    items = _file_table(files, hashes, ok)
    report, _ = index.plan_update(items)  # unreadable files drop out: removed, or never added
    skipped = source.skipped(failed)
    index.apply_update(
        items,
        plan[ok],  # -1 exactly where ``new`` has a row, in order
        new,
        source=source.source,
        class_names=source.class_names,
        data_spec=data_spec,
    )
    return UpdateResult(report, source.source, skipped, len(files), len(todo))


def _embed_new(
    index: ImageIndex,
    run: Run,
    reader: _Reader,
    batches: list[list[int]],
    hashes: list[str],
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Decodes and embeds the images of ``batches`` for an update.

    ``hashes`` is updated in place with the hashes of the bytes decoded.

    Returns:
        The embeddings of the readable ones, in order (shape: (M, D), float32); which of
        all ``len(hashes)`` images are readable (shape: (len(hashes),), bool); and why each
        unreadable one failed, by position.
    """
    from tqdm.auto import tqdm

    from latentsearch.progress import show_progress

    ok = np.ones(len(hashes), dtype=bool)
    failed: dict[int, str] = {}
    total = sum(len(b) for b in batches)
    new = np.empty((total, index.embedding_dim), dtype=np.float32)
    n_new = 0
    precision = index.precision_for(run)
    with tqdm(total=total, desc="update", unit="img", disable=not show_progress(progress)) as bar:
        for batch, decoded in zip(batches, reader.decoded(batches), strict=True):
            for j, i in enumerate(batch):
                if decoded.ok[j]:
                    # The bytes decoded are the ones to record (the file may have changed
                    # between hashing and decoding).
                    hashes[i] = decoded.sha256[j]
                else:
                    ok[i] = False
                    failed[i] = decoded.errors[j] or "unreadable"
            if len(decoded.pixels):
                vectors = embed_images(run.model, decoded.pixels, precision=precision)
                new[n_new : n_new + len(vectors)] = vectors
                n_new += len(vectors)
            bar.update(len(batch))
    return new[:n_new], ok, failed
