"""Export for other tools: a run's encoder to ONNX, an index's items to Parquet, NumPy, CSV.

>>> export_onnx("runs/photos", "photos-encoder.onnx")   # + photos-encoder.onnx.json
>>> export_parquet("photos.index", "photos.parquet")
>>> export_numpy("photos.index", "photos.npz")
>>> export_clusters("photos.index", "photos-clusters.csv")  # after `latentsearch cluster RUN`

**ONNX.** The graph computes ``model.embed``: input ``images`` (float32, ``(batch, C, S, S)``,
NCHW, pixels scaled to [0, 1] with no mean/std normalisation), output ``embedding`` (float32,
``(batch, D)``), the batch axis dynamic, opset :data:`ONNX_OPSET`. The same description, with
the run's fingerprint, is stored in the model's ``metadata_props`` (key ``latentsearch``) and
in a JSON sidecar ``FILE.onnx.json``. Every export is checked: onnxruntime's output must equal
PyTorch's (to :data:`VERIFY_TOLERANCE`) on random batches of several sizes.

**Parquet.** One row per indexed image, in index order: ``position`` (int64, the row number
FAISS returns), ``id`` (string, the index's stable id), ``path`` (string, null for array
sources), ``label`` (the class name, null when unknown), ``sha256`` (string, null for array
sources) and ``vector`` (``fixed_size_list<float32>[D]``). The schema metadata (key
``latentsearch``) holds the run fingerprint, class names and metric. pandas
(``pd.read_parquet``), FiftyOne and clip-retrieval-style tools read it as is.

**NumPy.** One ``.npz`` that ``np.load(path)`` opens without pickle: ``vectors`` (float32,
``(N, D)``), ``positions`` (int64), ``ids``, ``paths`` and ``sha256`` (unicode, ``""`` where
there is none), ``labels`` (int64, -1 when unknown), ``class_names`` (unicode, indexed by
``labels``) and ``metadata`` (a 0-d unicode array holding the same JSON as the Parquet file's).

**Clusters (CSV).** The group of every indexed image, from the SCAN head that
``latentsearch cluster`` saved in the run that built the index: one row per image, in index
order, with the columns of :data:`CLUSTER_COLUMNS`: ``position``, ``id``, ``path`` (empty for
array sources), ``label`` (the class name, empty when unknown), ``cluster`` (0 to K-1) and
``probability`` (the head's probability of that cluster). A head that reads the run's own
encoder assigns from the stored vectors; a fine-tuned head (``cluster --finetune-epochs``)
reads its own copy of the encoder, so the images are read from their files again.

Each file is written to a hidden temporary file in the destination folder and renamed into
place, so a crash never leaves a half-written export; an existing file is replaced only with
``force=True``. onnx, onnxruntime and pyarrow are optional: ``pip install 'latentsearch[export]'``.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import tempfile
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from latentsearch.data.files import printable
from latentsearch.errors import LatentsearchError
from latentsearch.index.storage import fsync_dir

if TYPE_CHECKING:
    from latentsearch.clusters import ClusterHead
    from latentsearch.index import ImageIndex
    from latentsearch.models.base import EmbeddingModel
    from latentsearch.runs import Run

EXPORT_EXTRA = "pip install 'latentsearch[export]'"
"""How to install the optional export dependencies; every missing-dependency error says it."""

ONNX_FORMAT = "latentsearch-onnx/1"
"""Written to the ONNX metadata and sidecar."""

TABLE_FORMAT = "latentsearch-items/1"
"""Written to the metadata of Parquet and NumPy exports of an index."""

ONNX_OPSET = 17
ONNX_INPUT = "images"
ONNX_OUTPUT = "embedding"
METADATA_KEY = "latentsearch"
"""Key of the JSON description in ONNX ``metadata_props`` and Parquet schema metadata."""

VERIFY_BATCH_SIZES = (1, 3)
VERIFY_TOLERANCE = 1e-4
"""Largest accepted ``|onnxruntime - PyTorch|``, absolute and relative (``np.allclose``)."""

PARQUET_COLUMNS = ("position", "id", "path", "label", "sha256", "vector")
CLUSTER_COLUMNS = ("position", "id", "path", "label", "cluster", "probability")


class ExportError(LatentsearchError):
    """An export cannot be written: the output exists, or the input cannot be exported."""


class MissingDependency(ExportError):
    """An optional export dependency is not installed."""


class OutputExists(ExportError):
    """The file to write exists and replacing it was not asked for.

    Attributes:
        path: The existing file.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} already exists: pass `force=True` to replace it")
        self.path = path


def require(module: str, purpose: str) -> ModuleType:
    """Imports an optional dependency.

    Args:
        module: The module to import (``onnx``, ``onnxruntime``, ``pyarrow.parquet``).
        purpose: What needs it, for the message (``"exporting to ONNX"``).

    Raises:
        MissingDependency: When it is not installed, saying how to install it.
    """
    import importlib

    package = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        # A broken install (say, a wheel built for another NumPy) also raises ImportError.
        why = "is not installed" if e.name in (package, module) else f"does not import ({e})"
        raise MissingDependency(
            f"{purpose} needs the {package} package, which {why}: {EXPORT_EXTRA}"
        ) from None


# ---------------------------------------------------------------------------- writing files
def _check_destination(out: Path, *, force: bool) -> None:
    if out.is_dir():
        raise ExportError(f"{out} is a folder: give a file name to write")
    if out.exists() and not force:
        raise OutputExists(out)


def _publish(tmp: Path, out: Path, *, force: bool) -> None:
    """Moves a finished temporary file to ``out``; without ``force`` never over another file."""
    if force:
        os.replace(tmp, out)
        return
    try:
        # A hard link is an atomic create-if-absent: a file that appeared at ``out`` while we
        # were writing is not clobbered.
        os.link(tmp, out)
    except FileExistsError:
        raise OutputExists(out) from None
    except OSError:  # no hard links on this file system: check, then rename
        if out.exists():
            raise OutputExists(out) from None
        os.replace(tmp, out)


def write_atomic(out: str | Path, write: Callable[[IO[bytes]], object], *, force: bool) -> Path:
    """Writes a file all at once or not at all.

    ``write`` fills a hidden temporary file in the destination folder, which is flushed to
    disk and only then renamed to ``out``; on any error the temporary file is removed and
    ``out`` is left as it was.

    Args:
        out: The file to create.
        write: Writes the content into the binary file object it is given.
        force: Replace ``out`` when it exists.

    Returns:
        ``out`` as a Path.

    Raises:
        OutputExists: When ``out`` exists and ``force`` is false.
        ExportError: When ``out`` is a folder.
    """
    out = Path(out)
    _check_destination(out, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, out, force=force)
        fsync_dir(out.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- ONNX
class EmbeddingGraph(nn.Module):
    """A model reduced to its ``embed``: what the ONNX graph computes.

    Args:
        model: Any ``EmbeddingModel``.
    """

    def __init__(self, model: EmbeddingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Shape: (B, C, H, W) in [0, 1] -> (B, D)."""
        return self.model.embed(images)


def onnx_sidecar_path(out: str | Path) -> Path:
    """Where :func:`export_onnx` writes the JSON description of ``out``: ``out`` + ``.json``."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def _random_images(model: EmbeddingModel, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s, c = model.image_size, model.in_channels
    return torch.rand((batch, c, s, s), generator=g, dtype=torch.float32)


def _describe_run(run: Run, model: EmbeddingModel, unit_length: bool) -> dict[str, Any]:
    s, c = model.image_size, model.in_channels
    return {
        "format": ONNX_FORMAT,
        "model": run.fingerprint["model"],
        "run": str(run.path),
        "epoch": run.epoch,
        "fingerprint": dict(run.fingerprint),
        "image_size": s,
        "channels": c,
        "embedding_dim": model.embedding_dim,
        "opset": ONNX_OPSET,
        "input": {
            "name": ONNX_INPUT,
            "shape": ["batch", c, s, s],
            "dtype": "float32",
            "layout": "NCHW",
            "color": "RGB" if c == 3 else "grey" if c == 1 else f"{c} channels",
            "range": [0.0, 1.0],
            "scaling": "uint8 pixels / 255",
            "normalization": None,
            "resize": f"short side to {s} px (bilinear, area-averaged when shrinking), "
            f"then the centred {s}x{s} square; transparent areas white",
        },
        "output": {
            "name": ONNX_OUTPUT,
            "shape": ["batch", model.embedding_dim],
            "dtype": "float32",
            "metric": "l2 (squared Euclidean, as latentsearch indexes search)",
            "unit_length": unit_length,
        },
        "class_names": list(run.class_names),
        "torch": torch.__version__,
        "exported_at": _now(),
    }


def _trace_to_onnx(graph: EmbeddingGraph, example: torch.Tensor) -> bytes:
    """The graph as ONNX bytes, batch axis dynamic.

    The TorchScript-based exporter is used (``dynamo=False``): it needs no package beyond
    torch, while the torch.export-based one also needs onnxscript.
    """
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        raw = Path(scratch) / "graph.onnx"  # a path, which every torch version accepts
        # torch announces the TorchScript exporter's retirement on every call.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            graph,
            (example,),
            raw,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        return raw.read_bytes()


def onnx_embed(path_or_bytes: str | Path | bytes, images: np.ndarray) -> np.ndarray:
    """Runs an exported encoder with onnxruntime (one CPU thread).

    Args:
        path_or_bytes: The ``.onnx`` file, or its bytes.
        images: Float32 images in [0, 1]. Shape: (B, C, H, W).

    Returns:
        Embeddings. Shape: (B, D), float32.

    Raises:
        MissingDependency: Without onnxruntime.
    """
    ort = require("onnxruntime", "running an ONNX model")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    model = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    (out,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: np.ascontiguousarray(images, np.float32)})
    return np.asarray(out)


def _verify(data: bytes, graph: EmbeddingGraph, batch_sizes: Sequence[int]) -> dict[str, Any]:
    worst = 0.0
    for i, b in enumerate(batch_sizes):
        x = _random_images(graph.model, b, seed=1 + i)
        with torch.no_grad():
            expected = graph(x).numpy()
        got = onnx_embed(data, x.numpy())
        if got.shape != expected.shape:
            raise ExportError(
                f"the exported graph returns shape {got.shape} for a batch of {b}, "
                f"PyTorch {expected.shape}"
            )
        worst = max(worst, float(np.max(np.abs(got - expected), initial=0.0)))
        if not np.allclose(got, expected, rtol=VERIFY_TOLERANCE, atol=VERIFY_TOLERANCE):
            raise ExportError(
                f"onnxruntime's embeddings differ from PyTorch's by up to {worst:.3g} on a "
                f"batch of {b} (tolerance {VERIFY_TOLERANCE:g}): the export is not faithful"
            )
    return {"batch_sizes": list(batch_sizes), "max_abs_diff": worst}


def export_onnx(
    run: Run | str | Path,
    out: str | Path,
    *,
    force: bool = False,
    verify: bool = True,
) -> dict[str, Any]:
    """Writes a run's encoder as an ONNX model, plus its JSON sidecar ``out.json``.

    Args:
        run: A loaded run, or its folder or checkpoint file.
        out: The ``.onnx`` file to write.
        force: Replace ``out`` and its sidecar when they exist.
        verify: Compare onnxruntime's output with PyTorch's on random batches of sizes
            :data:`VERIFY_BATCH_SIZES` before writing anything (needs onnxruntime).

    Returns:
        The description written to the sidecar, with ``verified`` (batch sizes and the
        largest absolute difference, or None) and ``onnx`` / ``sidecar`` (the paths).

    Raises:
        ExportError: When an output exists without ``force``, or verification fails.
        MissingDependency: Without onnx (or onnxruntime when ``verify``).
        RunError: When ``run`` is not a loadable run.
    """
    out = Path(out)
    sidecar = onnx_sidecar_path(out)
    for path in (out, sidecar):
        _check_destination(path, force=force)
    onnx = require("onnx", "exporting to ONNX")
    if verify:
        require("onnxruntime", "checking an ONNX export")
    if not isinstance(run, (str, Path)):
        loaded = run
    else:
        from latentsearch.runs import load_run

        loaded = load_run(run, device="cpu")
    # A copy on the CPU in float32 and eval mode: the caller's model is left as it was.
    model = copy.deepcopy(loaded.model).to("cpu", torch.float32).eval()
    graph = EmbeddingGraph(model).eval()

    example = _random_images(model, 2, seed=0)
    with torch.no_grad():
        norms = torch.linalg.vector_norm(graph(example), dim=1)
    unit_length = bool(torch.allclose(norms, torch.ones_like(norms), atol=1e-4))
    description = _describe_run(loaded, model, unit_length)

    proto = onnx.load_from_string(_trace_to_onnx(graph, example))
    proto.doc_string = (
        f"latentsearch {description['model']} encoder from {loaded.path}: "
        f"images (batch, {model.in_channels}, {model.image_size}, {model.image_size}) "
        f"in [0, 1] -> embedding (batch, {model.embedding_dim})"
    )
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(description)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    description["verified"] = _verify(data, graph, VERIFY_BATCH_SIZES) if verify else None

    write_atomic(out, lambda f: f.write(data), force=force)
    text = json.dumps({**description, "onnx": out.name}, indent=2) + "\n"
    write_atomic(sidecar, lambda f: f.write(text.encode("utf-8")), force=force)
    return {**description, "onnx": str(out), "sidecar": str(sidecar)}


# ---------------------------------------------------------------------------- index tables
def _as_index(index: ImageIndex | str | Path) -> tuple[ImageIndex, str | None]:
    if isinstance(index, (str, Path)):
        from latentsearch.index import ImageIndex

        return ImageIndex.load(index), str(index)
    return index, None


def index_metadata(index: ImageIndex, source: str | None = None) -> dict[str, Any]:
    """What travels with an exported index: run fingerprint, class names, metric.

    Args:
        index: The index.
        source: The index folder, when known.
    """
    return {
        "format": TABLE_FORMAT,
        "index": source,
        "count": len(index),
        "embedding_dim": index.embedding_dim,
        "metric": "l2",
        "fingerprint": index.fingerprint,
        "class_names": index.class_names,
        "run": str(index.run_path),
        "data": index.data_spec,
        "exported_at": _now(),
    }


def _text_path(path: str | None) -> str | None:
    """A path as UTF-8 text: bytes of a name that are not UTF-8 written as ``\\xNN``."""
    return None if path is None else printable(path)


def index_table(index: ImageIndex, source: str | None = None) -> Any:
    """An index's items and vectors as a ``pyarrow.Table``, one row per item in index order.

    Columns: :data:`PARQUET_COLUMNS` (see the module docstring); the schema metadata holds
    :func:`index_metadata` as JSON under ``latentsearch``.

    Raises:
        MissingDependency: Without pyarrow.
    """
    pa = require("pyarrow", "exporting to Parquet")
    items = index.items
    dim = index.embedding_dim
    vectors = np.ascontiguousarray(index.embeddings, dtype=np.float32).reshape(len(items), dim)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    columns = {
        "position": pa.array(np.arange(len(items), dtype=np.int64)),
        "id": pa.array([it.id for it in items], type=pa.string()),
        # Parquet strings are UTF-8: a name that is not is written as its id is (\xNN).
        "path": pa.array([_text_path(it.path) for it in items], type=pa.string()),
        "label": pa.array([index.class_name(it.label) for it in items], type=pa.string()),
        "sha256": pa.array([it.sha256 for it in items], type=pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
    }
    meta = {METADATA_KEY: json.dumps(index_metadata(index, source))}
    return pa.table(columns, metadata=meta)


def export_parquet(
    index: ImageIndex | str | Path, out: str | Path, *, force: bool = False
) -> dict[str, Any]:
    """Writes an index's items and vectors to a Parquet file.

    Args:
        index: A loaded index, or its folder.
        out: The ``.parquet`` file to write.
        force: Replace ``out`` when it exists.

    Returns:
        The metadata written (see :func:`index_metadata`) and ``out``.

    Raises:
        ExportError: When ``out`` exists without ``force``.
        MissingDependency: Without pyarrow.
        IndexFormatError: When ``index`` is not a readable index folder.
    """
    _check_destination(Path(out), force=force)
    pq = require("pyarrow.parquet", "exporting to Parquet")
    loaded, source = _as_index(index)
    table = index_table(loaded, source)
    path = write_atomic(out, lambda f: pq.write_table(table, f), force=force)
    return {**json.loads(table.schema.metadata[METADATA_KEY.encode()]), "out": str(path)}


def index_arrays(index: ImageIndex, source: str | None = None) -> dict[str, np.ndarray]:
    """An index as the arrays of a NumPy export (see the module docstring).

    Returns:
        ``vectors`` (N, D) float32, ``positions`` / ``labels`` (N,) int64, ``ids`` /
        ``paths`` / ``sha256`` (N,) unicode, ``class_names`` (K,) unicode, ``metadata`` 0-d
        unicode JSON.
    """
    items = index.items
    n, dim = len(items), index.embedding_dim

    def text(values: list[str]) -> np.ndarray:
        # Fixed-width unicode, never object arrays: np.load reads them without pickle.
        return np.array(values, dtype=np.str_)

    return {
        "vectors": np.ascontiguousarray(index.embeddings, dtype=np.float32).reshape(n, dim),
        "positions": np.arange(n, dtype=np.int64),
        "ids": text([it.id for it in items]),
        "paths": text([it.path or "" for it in items]),
        "labels": np.array([it.label for it in items], dtype=np.int64),
        "sha256": text([it.sha256 or "" for it in items]),
        "class_names": text(index.class_names),
        "metadata": np.array(json.dumps(index_metadata(index, source)), dtype=np.str_),
    }


def export_numpy(
    index: ImageIndex | str | Path, out: str | Path, *, force: bool = False
) -> dict[str, Any]:
    """Writes an index's items and vectors to one uncompressed ``.npz`` file.

    Args:
        index: A loaded index, or its folder.
        out: The file to write (written under exactly this name; ``.npz`` is not added).
        force: Replace ``out`` when it exists.

    Returns:
        The metadata written (see :func:`index_metadata`) and ``out``.

    Raises:
        ExportError: When ``out`` exists without ``force``.
        IndexFormatError: When ``index`` is not a readable index folder.
    """
    _check_destination(Path(out), force=force)
    loaded, source = _as_index(index)
    arrays = index_arrays(loaded, source)
    savez: Any = np.savez  # its stubs take any ``**kwds`` for ``allow_pickle: bool``
    path = write_atomic(out, lambda f: savez(f, **arrays), force=force)
    return {**json.loads(str(arrays["metadata"])), "out": str(path)}


# ---------------------------------------------------------------------------- clusters
def load_index_head(index: ImageIndex, run: Run | None = None) -> ClusterHead:
    """The SCAN head of the run that built ``index``, checked against the index's weights.

    Args:
        index: The index.
        run: That run, when already loaded (it may have moved since indexing); default: the
            run at the path the index records.

    Raises:
        ExportError: The run has no head.
        ClusterHeadError: The head is unreadable or belongs to other weights.
        RunError: The run that built the index is not there.
    """
    from latentsearch.clusters import head_path, load_cluster_head
    from latentsearch.runs import load_run

    run_path = index.run_path if run is None else run.path
    path = head_path(run_path)
    if not path.is_file():
        raise ExportError(
            f"the run that built this index ({run_path}) has no cluster head: train one "
            f"with `latentsearch cluster {run_path}`"
        )
    if run is None:
        run = load_run(run_path)
    return load_cluster_head(path, index.fingerprint["weights_sha256"], run_model=run.model)


def index_cluster_probabilities(
    index: ImageIndex, *, head: ClusterHead | None = None, batch_size: int = 256
) -> np.ndarray:
    """Each indexed image's cluster probabilities, from the SCAN head of the run that built it.

    Args:
        index: The index; its run folder must hold a head trained on the index's weights.
        head: That head, when already loaded (:func:`load_index_head`).
        batch_size: Images decoded and embedded at a time, for a fine-tuned head.

    Returns:
        One row per item, in index order. Shape: (N, K), float32.

    Raises:
        ExportError: The run has no head, or the head needs images that the index has no
            files for.
        ClusterHeadError: The head is unreadable or belongs to other weights.
        RunError: The run that built the index is not there.
        DataError: An image file of the index can no longer be read.
    """
    from latentsearch.data import DataError
    from latentsearch.data.folder import decode_files
    from latentsearch.embedding import embed_images

    if head is None:
        head = load_index_head(index)
    if head.encoder is None:
        return head.probabilities(index.embeddings)
    # A fine-tuned head reads its own copy of the encoder, not the index's vectors.
    paths = [it.path for it in index.items]
    if any(p is None for p in paths):
        raise ExportError(
            "the cluster head reads a fine-tuned copy of the encoder, so the images must be "
            "embedded again, but this index holds an array source with no image files: train "
            f"a head without --finetune-epochs (`latentsearch cluster {index.run_path}`)"
        )
    parts = [np.zeros((0, head.config.n_clusters), dtype=np.float32)]
    for start in range(0, len(paths), batch_size):
        batch = [str(p) for p in paths[start : start + batch_size]]
        decoded = decode_files(batch, index.image_size)  # as the index decoded them
        for file, error in zip(batch, decoded.errors, strict=True):
            if error is not None and not Path(file).is_file():
                raise DataError(f"{file}: no such file (it was indexed, then moved or deleted)")
            if error is not None:
                raise DataError(f"{file}: {error}")
        parts.append(head.probabilities(embed_images(head.encoder, decoded.pixels)))
    return np.concatenate(parts)


def export_clusters(
    index: ImageIndex | str | Path, out: str | Path, *, force: bool = False
) -> dict[str, Any]:
    """Writes the cluster of every indexed image to a CSV file (see the module docstring).

    Args:
        index: A loaded index, or its folder.
        out: The ``.csv`` file to write.
        force: Replace ``out`` when it exists.

    Returns:
        ``out``, ``count``, ``index``, ``run``, ``head`` (the head file), ``n_clusters`` and
        ``sizes`` (images per cluster, a list of K counts).

    Raises:
        ExportError: When ``out`` exists without ``force``, or as
            :func:`index_cluster_probabilities`.
        IndexFormatError: When ``index`` is not a readable index folder.
    """
    import csv
    import io

    from latentsearch.clusters import head_path

    _check_destination(Path(out), force=force)
    loaded, source = _as_index(index)
    prob = index_cluster_probabilities(loaded)
    clusters = prob.argmax(axis=1)
    items = loaded.items

    def write(f: IO[bytes]) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        rows = csv.writer(text)
        rows.writerow(CLUSTER_COLUMNS)
        for i, (item, cluster) in enumerate(zip(items, clusters, strict=True)):
            label = loaded.class_name(item.label) or ""
            p = prob[i, cluster]
            path = _text_path(item.path) or ""
            rows.writerow([i, item.id, path, label, int(cluster), f"{p:.4f}"])
        text.flush()
        text.detach()  # leave ``f`` open for write_atomic to sync and close

    path = write_atomic(out, write, force=force)
    n_clusters = prob.shape[1]
    return {
        "out": str(path),
        "count": len(items),
        "index": source,
        "run": str(loaded.run_path),
        "head": str(head_path(loaded.run_path)),
        "n_clusters": n_clusters,
        "sizes": np.bincount(clusters, minlength=n_clusters).tolist(),
    }
