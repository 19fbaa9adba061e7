"""The ``export`` command: a run's encoder to ONNX, an index to Parquet, NumPy or clusters."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from latentsearch.cli.common import CLIError
from latentsearch.cli.options import add_json, add_run


@contextmanager
def _flags() -> Iterator[None]:
    """Words the library's ``force=True`` as this command's ``--force``."""
    from latentsearch.export import OutputExists

    try:
        yield
    except OutputExists as e:
        raise CLIError(f"{e.path} already exists: pass --force to replace it") from None


def _print(args: argparse.Namespace, result: dict[str, Any], line: str) -> int:
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(line)
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from latentsearch.export import VERIFY_TOLERANCE, export_onnx

    with _flags():
        result = export_onnx(args.run, args.out, force=args.force, verify=not args.no_verify)
    verified = result["verified"]
    if verified:
        sizes = ", ".join(map(str, verified["batch_sizes"]))
        check = (
            f"; onnxruntime matches PyTorch (largest difference {verified['max_abs_diff']:.2g}, "
            f"tolerance {VERIFY_TOLERANCE:g}, batches of {sizes})"
        )
    else:
        check = "; not checked against onnxruntime (--no-verify)"
    s, c = result["image_size"], result["channels"]
    line = (
        f"wrote {result['onnx']} ({result['model']}: images (batch, {c}, {s}, {s}) float32 in "
        f"[0, 1] -> embedding (batch, {result['embedding_dim']})) and {result['sidecar']}{check}"
    )
    return _print(args, result, line)


def cmd_export_parquet(args: argparse.Namespace) -> int:
    from latentsearch.export import export_parquet

    with _flags():
        result = export_parquet(args.index, args.out, force=args.force)
    line = (
        f"wrote {result['out']}: {result['count']} rows (position, id, path, label, sha256, "
        f"vector[{result['embedding_dim']}])"
    )
    return _print(args, result, line)


def cmd_export_numpy(args: argparse.Namespace) -> int:
    from latentsearch.export import export_numpy

    with _flags():
        result = export_numpy(args.index, args.out, force=args.force)
    line = (
        f"wrote {result['out']}: vectors ({result['count']}, {result['embedding_dim']}) float32 "
        "with positions, ids, paths, labels, sha256, class_names, metadata"
    )
    return _print(args, result, line)


def cmd_export_clusters(args: argparse.Namespace) -> int:
    from latentsearch.export import CLUSTER_COLUMNS, export_clusters

    with _flags():
        result = export_clusters(args.index, args.out, force=args.force)
    sizes = ", ".join(f"{k}: {n}" for k, n in enumerate(result["sizes"]))
    line = (
        f"wrote {result['out']}: {result['count']} rows ({', '.join(CLUSTER_COLUMNS)}) from "
        f"{result['head']}; images per cluster: {sizes}"
    )
    return _print(args, result, line)


def _common(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--out", required=True, metavar="FILE", help=out_help)
    p.add_argument("--force", action="store_true", help="replace FILE when it exists")
    add_json(p, "what was written")


def _index_format(
    formats: Any,
    name: str,
    func: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str,
    out_help: str,
) -> None:
    """Adds ``export NAME INDEX --out FILE``: a format written from an index folder."""
    q = formats.add_parser(name, help=help, description=description)
    q.add_argument("index", help="index folder from `latentsearch index`")
    _common(q, out_help)
    q.set_defaults(func=func)


COMMANDS = {
    "export": "write a run's encoder as ONNX, an index as Parquet / NumPy, or its clusters as CSV",
}
"""This module's commands and their one-line help, known without importing anything heavy."""


def register(sub: Any) -> None:
    """Adds this module's commands to the ``latentsearch`` sub-parsers."""
    p = sub.add_parser(
        "export",
        help=COMMANDS["export"],
        description="Export for other tools. Needs the optional dependencies: "
        "pip install 'latentsearch[export]' (NumPy export needs none). An existing file is "
        "replaced only with --force; files are written whole or not at all.",
    )
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")

    q = formats.add_parser(
        "onnx",
        help="the run's encoder as an ONNX model (images -> embedding, any batch size)",
        description="Write the run's encoder (model.embed) as ONNX, opset 17: input `images` "
        "float32 (batch, C, S, S) in [0, 1], output `embedding` float32 (batch, D). A JSON "
        "sidecar FILE.json says how to feed it; onnxruntime's output is checked against "
        "PyTorch's before anything is written.",
    )
    add_run(q)
    _common(q, "the .onnx file to write (its sidecar goes to FILE.json)")
    q.add_argument(
        "--no-verify", action="store_true", help="skip the onnxruntime check (no onnxruntime)"
    )
    q.set_defaults(func=cmd_export_onnx)

    _index_format(
        formats,
        "parquet",
        cmd_export_parquet,
        help="the index's items and vectors as a Parquet table",
        description="One row per indexed image: position (int64), id, path, label (class "
        "name or null), sha256, vector (fixed-size list of float32). The schema metadata "
        "holds the run fingerprint and class names. pandas, FiftyOne and "
        "clip-retrieval-style tools read it.",
        out_help="the .parquet file to write",
    )
    _index_format(
        formats,
        "numpy",
        cmd_export_numpy,
        help="the index's vectors and items as one .npz file",
        description="One .npz (np.load, no pickle): vectors (N, D) float32, positions, ids, "
        "paths, labels (int, -1 unknown), sha256, class_names, metadata (JSON).",
        out_help="the .npz file to write (written under exactly this name)",
    )
    _index_format(
        formats,
        "clusters",
        cmd_export_clusters,
        help="the cluster of every indexed image, from the run's SCAN head, as CSV",
        description="One CSV row per indexed image, in index order: position, id, path, "
        "label, cluster (0 to K-1) and probability, from the head `latentsearch cluster RUN` "
        "saved in the run that built the index (it must be trained on the same weights). A "
        "head fine-tuned with its own copy of the encoder reads the image files again.",
        out_help="the .csv file to write",
    )
