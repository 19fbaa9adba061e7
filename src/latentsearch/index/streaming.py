"""Indexing a folder of images as a stream: parallel decoding, chunked shards, resumable.

``ImageIndex.build`` needs every image decoded in one array. :func:`index_folder` never holds
more than a few chunks of pixels: the sorted file list (``list_image_folder``, the same ids and
order as ``load_image_folder``) is cut into chunks; worker processes decode chunks
(``decode_files``) while this process embeds the previous ones; each chunk's embeddings and
per-file results (content hash, or why the file was skipped) go to a shard file in a scratch
folder beside the output, ``.<out name>.shards/``. At the end the shards are merged into the
same index ``ImageIndex.build`` makes from the same folder, which is saved; then the scratch
folder is removed.

Resuming: the scratch folder records the job (run fingerprint, image size, chunk size and a
digest of the file list). A killed job restarted with the same arguments reuses every shard
whose files still have the content hashed in it, and embeds only the rest. Another run or
another file list discards the old shards (``StreamStats.restarted`` says why).

Under ``torchrun`` (``latentsearch.distributed``) each rank embeds its contiguous share of
the chunks (``shard``) into the same scratch folder (the ranks share a file system); rank 0
merges and saves, so the index is the one a single process builds. A file a rank cannot read
is recorded in its shard and reported by rank 0 like any other skipped file.

Updating: :func:`update_folder` brings an index in line with its folder the same way: every
file is hashed (in the workers), and only new and changed files are decoded and embedded, a
chunk at a time; the result equals ``ImageIndex.update`` on the fully decoded folder.

Pixels are not kept: every item of a folder has its file, which is what the page and
``search --grid`` show; ``ImageIndex.stored_pixels`` serves only sources without files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from latentsearch.data import SOURCES, DataError
from latentsearch.data.folder import (
    DecodedFiles,
    FolderFile,
    FolderFiles,
    FolderListing,
    decode_files,
    hash_files,
    list_image_folder,
)
from latentsearch.data.idx import is_idx_folder
from latentsearch.embedding import embed_images
from latentsearch.index import backends, vector_store
from latentsearch.index.errors import ImageIndexError
from latentsearch.index.image_index import (
    FINGERPRINT_KEYS,
    ImageIndex,
    UpdateReport,
    item_table,
)
from latentsearch.index.items import ItemTable, ItemTableBuilder
from latentsearch.precision import resolve_precision

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
class FolderIndexResult:
    """What :func:`index_folder` made.

    Attributes:
        index: The saved index; None on ranks other than 0 of a distributed job.
        path: Where it was saved.
        source: Where the images came from, as ``all_images(load_data(folder)).source``.
        skipped: ``(path, reason)`` for every file not indexed, as ``ImageData.skipped``.
        stats: Counts and timings.
    """

    index: ImageIndex | None
    path: Path
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


# ---------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class _Job:
    listing: FolderListing
    files: FolderFiles  # every split's files, train first
    chunk_size: int
    description: dict[str, Any]  # what job.json records
    digest: str  # of the description

    @property
    def chunks(self) -> int:
        return -(-len(self.files) // self.chunk_size)

    def chunk(self, c: int) -> list[FolderFile]:
        return self.files[c * self.chunk_size : (c + 1) * self.chunk_size]

    @property
    def precision(self) -> str:
        return str(self.description["precision"])


def _split_of(listing: FolderListing) -> np.ndarray:
    """The split of each of ``listing.files``, as an index into ``listing.splits``."""
    sizes = [len(s.files) for s in listing.splits]
    return np.repeat(np.arange(len(sizes), dtype=np.int8), sizes)


def _make_job(run: Run, listing: FolderListing, chunk_size: int, precision: str) -> _Job:
    files = listing.files
    # The file list (ids, labels, known problems) goes in as a digest: job.json stays small.
    h = hashlib.sha256()
    for split in listing.splits:
        h.update(f"[{split.name}]\n".encode())
        for rel, label in zip(split.files.ids(), split.files.labels.tolist(), strict=True):
            h.update(f"{rel}\0{label}\n".encode())
        for path, reason in split.problems:
            h.update(f"!{path}\0{reason}\n".encode())
    description = {
        "format": SHARDS_FORMAT,
        "fingerprint": {k: run.fingerprint[k] for k in FINGERPRINT_KEYS},
        "root": str(listing.root),
        "image_size": int(run.model.image_size),
        "chunk_size": int(chunk_size),
        "precision": precision,
        "files": len(files),
        "file_list_sha256": h.hexdigest(),
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
    return _Job(listing, files, chunk_size, description, digest)


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


# ---------------------------------------------------------------------------- decoding
class _Decoder:
    """Decodes chunks in worker processes (or here, with no workers), a bounded window ahead."""

    def __init__(self, workers: int, image_size: int) -> None:
        self.image_size = image_size
        self.workers = workers
        self._pool: Any = None
        if workers > 0:
            # Never fork: this process runs torch's thread pools, which a fork leaves broken.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            if "forkserver" in methods:
                ctx.set_forkserver_preload(["latentsearch.data.folder"])
            self._pool = ctx.Pool(workers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def decoded(self, chunks: Iterable[list[str]]) -> Iterator[DecodedFiles]:
        """The decoded chunks, in order; at most ``WINDOW_PER_WORKER * workers`` in flight."""
        if self._pool is None:
            for paths in chunks:
                yield decode_files(paths, self.image_size)
            return
        window: deque[Any] = deque()
        todo = iter(chunks)
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

    def hashes(self, chunks: Iterable[list[str]]) -> list[list[str]]:
        """The content hashes of each chunk's files, in order."""
        if self._pool is None:
            return [hash_files(paths) for paths in chunks]
        return list(self._pool.imap(hash_files, chunks))


# ---------------------------------------------------------------------------- the build
def _checked_sizes(run: Run, workers: object, chunk_size: int | None) -> int:
    """Refuses bad ``workers`` / ``chunk_size``; returns the chunk size (None: automatic)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ImageIndexError(f"workers must be 0 or more, got {workers!r}")
    if chunk_size is None:
        chunk_size = auto_chunk_size(run.model.image_size)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ImageIndexError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return chunk_size


def _check_run(run: Run) -> None:
    s, c = run.model.image_size, run.model.in_channels
    if c != 3:
        # The words of ImageIndex.build for a folder decoded as RGB.
        raise ImageIndexError(
            f"the images are {s}×{s}×3 but run {run.path} takes {s}×{s}×{c}: they need "
            "the run's channels"
        )


def index_folder(
    run: Run,
    folder: str | Path,
    out: str | Path,
    *,
    index_type: str = "auto",
    workers: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    data_spec: str | None = None,
    backend: str | vector_store.MilvusOptions = vector_store.DEFAULT_BACKEND,
    on_shard: Callable[[int], None] | None = None,
    precision: str = "fp32",
) -> FolderIndexResult:
    """Embeds a folder of images as a stream and saves its index to ``out``.

    The index equals ``ImageIndex.build(run, all_images(load_data(folder, image_size=...)))``
    (same items in the same order, same skipped files, embeddings equal up to float rounding),
    but only the embeddings and per-file metadata grow with the folder.

    Args:
        run: A trained run taking RGB images.
        folder: A folder of image files (any layout ``load_image_folder`` reads).
        out: The index folder to write (an existing index there is replaced).
        index_type: See ``ImageIndex.build``.
        workers: Decoding processes; None means one per core, 0 decodes in this process.
        chunk_size: Files per chunk (and shard); None picks ``auto_chunk_size``. Part of the
            job: a restart with another chunk size starts over.
        progress: Show a progress bar on a terminal.
        data_spec: Kept in the manifest, see ``ImageIndex.build``.
        backend: Where the vectors live, see ``ImageIndex.build``.
        on_shard: Called with each chunk's number once its shard is written (a hook for
            tests and progress reports; an exception raised there stops the job, resumably).
        precision: How to embed, see ``ImageIndex.build``. Part of the job: a restart in
            another precision starts over.

    Returns:
        The index (rank 0 only), where it went, the skipped files and statistics.

    Raises:
        DataError: When the folder is missing, holds no files, or a split holds no readable
            image.
        ImageIndexError: For a run that does not take RGB images, a bad ``index_type``,
            ``workers`` or ``chunk_size``, or another job writing the same ``out``.
        PrecisionError: When this machine cannot embed in ``precision``.
        OSError: When the shards or the index cannot be written.
    """
    from latentsearch import distributed

    dist = distributed.context()
    if workers is None:
        workers = max(1, default_workers() // dist.local_world_size)  # ranks share the cores
    chunk_size = _checked_sizes(run, workers, chunk_size)
    _check_run(run)
    backends.resolve_index_type(index_type, 1)  # an unknown kind fails before any work
    precision = resolve_precision(precision, next(run.model.parameters()).device)
    if dist.enabled:
        distributed.setup(next(run.model.parameters()).device)

    t0 = time.perf_counter()
    listing = list_image_folder(folder)
    job = _make_job(run, listing, chunk_size, precision)
    out = Path(os.path.abspath(out))
    scratch = shards_dir(out)
    t_list = time.perf_counter()

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
            counts = _embed_chunks(run, job, scratch, mine, workers, progress, on_shard)
        except BaseException as e:
            failure = e
        _agree_on_failure(failure, "embedding its chunks")
        t_embed = time.perf_counter()
        stats = _stats(job, counts, restarted, workers, dist.world_size, t0, t_list, t_embed)
        if not dist.is_main:
            distributed.barrier()  # rank 0 merges and saves
            return FolderIndexResult(None, out, listing.source, [], stats)
        try:
            index, skipped = _merge(run, job, scratch, index_type, data_spec, backend)
            t_merge = time.perf_counter()
            index.save(out)
        finally:
            distributed.barrier()
    shutil.rmtree(scratch, ignore_errors=True)
    t_save = time.perf_counter()
    stats = dataclasses.replace(
        stats, merge_seconds=t_merge - t_embed, save_seconds=t_save - t_merge
    )
    return FolderIndexResult(index, out, listing.source, skipped, stats)


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
    t0: float,
    t_list: float,
    t_embed: float,
) -> StreamStats:
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
        merge_seconds=0.0,
        save_seconds=0.0,
    )


def _embed_chunks(
    run: Run,
    job: _Job,
    scratch: Path,
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
    decoder = _Decoder(min(workers, len(mine)), run.model.image_size)
    try:
        # A shard is reused only while its files still hold the bytes it was made from.
        # Only the hashes of the shards found are kept, not their vectors.
        existing = {
            c: s.sha256 for c in mine if (s := _read_shard(scratch, c, job, dim)) is not None
        }
        hashes = decoder.hashes([f.path for f in job.chunk(c)] for c in existing)
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
            # Each chunk's paths are made when it goes to a worker, not all at once.
            stream = decoder.decoded([f.path for f in job.chunk(c)] for c in todo)
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
                _write_shard(scratch, c, job, shard)
                counts.decode_wait += t1 - t
                counts.embed += time.perf_counter() - t1
                counts.embedded += 1
                bar.update(len(decoded.ok))
                if on_shard is not None:
                    on_shard(c)
    finally:
        decoder.close()
    return counts


def _merge(
    run: Run,
    job: _Job,
    scratch: Path,
    index_type: str,
    data_spec: str | None,
    backend: str | vector_store.MilvusOptions,
) -> tuple[ImageIndex, list[tuple[str, str]]]:
    """Reads every shard back, in order, into the index and the list of skipped files."""
    dim = run.model.embedding_dim
    # Two passes, so that the embeddings are held once: count, then copy.
    n_ok = 0
    for c in range(job.chunks):
        ok = _read_ok(scratch, c, job)
        if ok is None:
            raise ImageIndexError(
                f"the shard of chunk {c} in {scratch} is missing or damaged (another process "
                "wrote there?): run the same command again to redo it"
            )
        n_ok += int(ok.sum())
    # The vectors go to a file beside the shards, not to this process's memory: FAISS then
    # holds the only resident copy, and the pages of the file are the kernel's to drop.
    # A file left by a job stopped after its save is the saved index's embeddings.npy too (a
    # hard link): unlink it, so that the new vectors go to a new file, never into that one.
    (scratch / MERGED_FILE).unlink(missing_ok=True)
    embeddings = (
        np.lib.format.open_memmap(
            scratch / MERGED_FILE, mode="w+", dtype=np.float32, shape=(n_ok, dim)
        )
        if n_ok
        else np.empty((0, dim), dtype=np.float32)
    )
    items = ItemTableBuilder()  # columns, not an object per item
    split_index = _split_of(job.listing)
    names = [split.name for split in job.listing.splits]
    failures: dict[str, list[tuple[str, str]]] = {s.name: [] for s in job.listing.splits}
    indexed = dict.fromkeys(failures, 0)
    for c in range(job.chunks):
        shard = _read_shard(scratch, c, job, dim)
        if shard is None or len(items) + len(shard.embeddings) > n_ok:
            raise ImageIndexError(
                f"the shard of chunk {c} in {scratch} changed while it was read (another "
                "process writes there?): run the same command again"
            )
        embeddings[len(items) : len(items) + len(shard.embeddings)] = shard.embeddings
        base = c * job.chunk_size
        for j, f in enumerate(job.chunk(c)):
            split = names[split_index[base + j]]
            if shard.ok[j]:
                items.add(f.id, f.path, f.label, shard.sha256[j])
                indexed[split] += 1
            else:
                failures[split].append((f.path, shard.errors[j]))
    if len(items) != n_ok:
        raise ImageIndexError(
            f"the shards in {scratch} changed while they were read: run the same command again"
        )
    if isinstance(embeddings, np.memmap):
        # Read-only from here: the save links this file into the index folder as it is.
        embeddings.flush()
        embeddings = np.load(scratch / MERGED_FILE, mmap_mode="r", allow_pickle=False)
    skipped: list[tuple[str, str]] = []
    for part in job.listing.splits:
        # As load_image_folder: problems found while listing first, then decoding failures.
        both = [*part.problems, *failures[part.name]]
        if not indexed[part.name]:
            root = job.listing.root
            reasons = "; ".join(f"{Path(p).relative_to(root)}: {why}" for p, why in both[:3])
            raise DataError(f"no readable image in {part.where} (e.g. {reasons})")
        skipped.extend(both)
    index = ImageIndex.from_embeddings(
        run,
        embeddings,
        item_table(items),
        class_names=job.listing.class_names,
        source=job.listing.source,
        index_type=index_type,
        data_spec=data_spec,
        backend=backend,
        precision=job.precision,
    )
    return index, skipped


# ---------------------------------------------------------------------------- the update
def _file_table(
    files: Sequence[FolderFile], sha256: Sequence[str], keep: np.ndarray | None = None
) -> ItemTable:
    """The item table of ``files`` (those ``keep`` marks), in columns, not an object per file.

    Args:
        files: The listed files.
        sha256: Their content hashes, "" where a file could not be read.
        keep: Which files to include. Shape: (len(files),), bool; None: all.
    """
    builder = ItemTableBuilder()
    flags = [True] * len(files) if keep is None else keep.tolist()
    for f, h, good in zip(files, sha256, flags, strict=True):
        if good:
            builder.add(f.id, f.path, f.label, h or None)
    return item_table(builder)


@dataclass(frozen=True)
class FolderUpdateResult:
    """What :func:`update_folder` did.

    Attributes:
        report: Ids added, changed, removed and unchanged.
        source: Where the images came from, as ``all_images(load_data(folder)).source``.
        skipped: ``(path, reason)`` for every file not indexed, as ``ImageData.skipped``.
        hashed: Files hashed to compare with the index (every listed file).
        decoded: Files decoded and embedded (the new and changed ones).
    """

    report: UpdateReport
    source: str
    skipped: list[tuple[str, str]]
    hashed: int
    decoded: int


def update_folder(
    index: ImageIndex,
    run: Run,
    folder: str | Path,
    *,
    workers: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    data_spec: str | None = None,
) -> FolderUpdateResult:
    """Brings ``index`` in line with a folder, decoding only its new and changed files.

    The result equals ``index.update(run, all_images(load_data(folder, image_size=...)))``
    (same items and order, same report, same skipped files), but unchanged files are only
    hashed, never decoded, and new ones are decoded a chunk at a time in worker processes.
    The index is changed in memory; save it to keep the result.

    Args:
        index: The index to update, built by ``run``.
        run: The run that built it.
        folder: A folder of image files (see ``index_folder``).
        workers: Hashing and decoding processes; None: one per core, 0: in this process.
        chunk_size: Files per decoded chunk; None picks ``auto_chunk_size``.
        progress: Show a progress bar on a terminal.
        data_spec: New value for the manifest's ``data`` (None keeps the old one).

    Returns:
        The report, the skipped files and how many files were hashed and decoded.

    Raises:
        FingerprintMismatch: When ``run`` did not build ``index``.
        DataError: When the folder is missing or a split holds no readable image.
        ImageIndexError: For a run that does not take RGB images, or bad ``workers`` or
            ``chunk_size``.
    """
    from tqdm.auto import tqdm

    from latentsearch.progress import show_progress

    index.check_compatible(run)
    _check_run(run)
    if workers is None:
        workers = default_workers()
    chunk_size = _checked_sizes(run, workers, chunk_size)
    listing = list_image_folder(folder)
    files = listing.files
    split_index = _split_of(listing)
    starts = range(0, len(files), chunk_size)
    decoder = _Decoder(min(workers, len(starts)), run.model.image_size)
    try:
        # Each chunk's paths are made as the workers take it, not all at once.
        paths = ([f.path for f in files[i : i + chunk_size]] for i in starts)
        hashes = [h for chunk in decoder.hashes(paths) for h in chunk]
        # A file that cannot be read has no hash: it goes to the decoder, which says why.
        _, plan = index.plan_update(_file_table(files, hashes))
        todo = [i for i in range(len(files)) if plan[i] < 0]
        ok = np.ones(len(files), dtype=bool)
        errors: dict[int, str] = {}
        new = np.empty((len(todo), index.embedding_dim), dtype=np.float32)
        n_new = 0
        precision = index.precision_for(run)
        batches = [todo[i : i + chunk_size] for i in range(0, len(todo), chunk_size)]
        with tqdm(
            total=len(todo), desc="update", unit="img", disable=not show_progress(progress)
        ) as bar:
            stream = decoder.decoded([[files[i].path for i in b] for b in batches])
            for batch in batches:
                decoded = next(stream)
                for j, i in enumerate(batch):
                    if decoded.ok[j]:
                        # The bytes decoded are the ones to record (the file may have changed
                        # between hashing and decoding).
                        hashes[i] = decoded.sha256[j]
                    else:
                        ok[i] = False
                        errors[i] = decoded.errors[j] or "unreadable"
                if len(decoded.pixels):
                    vectors = embed_images(run.model, decoded.pixels, precision=precision)
                    new[n_new : n_new + len(vectors)] = vectors
                    n_new += len(vectors)
                bar.update(len(batch))
    finally:
        decoder.close()
    # One table for the second plan and the update (each would otherwise build its own).
    items = _file_table(files, hashes, ok)
    report, _ = index.plan_update(items)  # unreadable files drop out: removed, or never added
    reuse = plan[ok]  # -1 exactly where ``new`` has a row, in order
    skipped: list[tuple[str, str]] = []
    for k, part in enumerate(listing.splits):
        failed = [(files[i].path, why) for i, why in errors.items() if split_index[i] == k]
        if not ok[split_index == k].any():
            root = listing.root
            both = [*part.problems, *failed]
            reasons = "; ".join(f"{Path(p).relative_to(root)}: {why}" for p, why in both[:3])
            raise DataError(f"no readable image in {part.where} (e.g. {reasons})")
        skipped.extend([*part.problems, *failed])
    index.apply_update(
        items,
        reuse,
        new[:n_new],
        source=listing.source,
        class_names=listing.class_names,
        data_spec=data_spec,
    )
    return FolderUpdateResult(report, listing.source, skipped, len(files), len(todo))
