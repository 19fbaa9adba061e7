"""Commands of the retrieval index: index, search, duplicates."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentsearch.cli.common import CLIError, print_table

if TYPE_CHECKING:
    from latentsearch.index import ImageIndex, Neighbor
    from latentsearch.training import Run

GRID_TILE = 96
"""Side, in pixels, of each picture in a ``--grid`` figure."""


def _data_spec(spec: str) -> str:
    """A ``load_data`` spec that still works from another folder: paths become absolute."""
    from latentsearch.data import SOURCES

    return spec if spec in SOURCES else str(Path(spec).expanduser().resolve())


def _describe_type(index: ImageIndex) -> str:
    params = ", ".join(f"{k}={v}" for k, v in index.index_params.items())
    kind = "exact" if index.index_type == "flat" else "approximate"
    return f"{index.index_type} ({kind}{', ' + params if params else ''})"


# ---------------------------------------------------------------------------- index
def cmd_index(args: argparse.Namespace) -> int:
    from latentsearch.data import load_data
    from latentsearch.index import ImageIndex, all_images
    from latentsearch.training import load_run

    t0 = time.perf_counter()
    run = load_run(args.run)
    existing = ImageIndex.load(args.update) if args.update else None
    if existing is not None:
        existing.check_compatible(run)  # refuse before spending time on decoding
    t_decode = time.perf_counter()
    splits = load_data(args.images, image_size=run.model.image_size, progress=not args.json)
    data = all_images(splits)
    t_index = time.perf_counter()
    spec = _data_spec(args.images)
    update = None
    if existing is not None:
        index = existing
        update = index.update(run, data, progress=not args.json, data_spec=spec)
        out = Path(args.update)
    else:
        index = ImageIndex.build(
            run, data, index_type=args.index_type, progress=not args.json, data_spec=spec
        )
        out = Path(args.out)
    t_save = time.perf_counter()
    index.save(out)
    t_end = time.perf_counter()

    work = t_save - t_decode
    result: dict[str, Any] = {
        "index": str(out),
        "run": str(run.path),
        "source": data.source,
        "count": len(index),
        "index_type": index.index_type,
        "index_params": index.index_params,
        "recall_at_10": index.recall_at_10,
        "skipped": [{"path": p, "reason": r} for p, r in data.skipped],
        "seconds": t_end - t0,
        "decode_seconds": t_index - t_decode,
        "index_seconds": t_save - t_index,
        "save_seconds": t_end - t_save,
        "images_per_second": len(data) / work if work > 0 else None,
    }
    if update is not None:
        result["update"] = {
            "added": len(update.added),
            "changed": len(update.changed),
            "removed": len(update.removed),
            "unchanged": len(update.unchanged),
            "embedded": update.embedded,
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if update is not None:
        print(
            f"updated {out}: {len(update.added)} added, {len(update.changed)} changed, "
            f"{len(update.removed)} removed, {len(update.unchanged)} unchanged "
            f"({update.embedded} embedded)"
        )
    else:
        print(f"indexed {len(index)} images of {data.source} with run {run.path}")
    print(f"index: {_describe_type(index)}, {len(index)} items")
    if data.skipped:
        print(f"skipped {len(data.skipped)} file{'s' if len(data.skipped) != 1 else ''}:")
        for path, reason in data.skipped:
            print(f"  {path}: {reason}")
    rate = result["images_per_second"]
    print(
        f"time: {result['seconds']:.1f} s ({rate:.0f} images/s; decode "
        f"{result['decode_seconds']:.1f} s, embed + index {result['index_seconds']:.1f} s, "
        f"save {result['save_seconds']:.1f} s)"
    )
    if index.recall_at_10 is not None:
        print(f"recall@10: {index.recall_at_10:.3f} (sample of indexed images vs exact search)")
    print(f"saved to {out}")
    return 0


# ---------------------------------------------------------------------------- search
def _read_query(path: str, run: Run, size: int, channels: int) -> np.ndarray:
    from latentsearch.data import DataError, read_image

    if not Path(path).is_file():
        raise DataError(f"query {path}: no such file")
    try:
        return read_image(path, size, channels=channels)
    except DataError as e:
        raise DataError(f"query {path}: {e}") from None


def _tile(pixels: np.ndarray, size: int = GRID_TILE) -> np.ndarray:
    """Any uint8 image as an RGB square for the grid. Shape: (H, W, C) -> (size, size, 3)."""
    from PIL import Image

    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)
    if img.size != (size, size):
        # Nearest keeps tiny images (8x8 digits) crisp instead of blurring them.
        img = img.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _file_tile(path: str) -> np.ndarray:
    """A file as a grid tile: decoded at most at tile size, small images upscaled crisply."""
    from PIL import Image

    from latentsearch.data import DataError, read_image

    try:
        with Image.open(path) as img:
            side = max(1, min(*img.size, GRID_TILE))
    except Exception as e:  # Pillow raises many types on bad files; read_image words them
        raise DataError(f"{path}: not a readable image ({e})") from None
    return _tile(read_image(path, side, channels=3))


def _stored_pixels(index: ImageIndex, ids: set[str]) -> dict[str, np.ndarray]:
    """Pixels of array-source items, reloaded from the manifest's ``data`` spec."""
    from latentsearch.data import load_data
    from latentsearch.index import all_images

    spec = index.data_spec
    if not ids or not spec:
        return {}
    data = all_images(load_data(spec, image_size=int(index.fingerprint["image_size"])))
    where = {id_: i for i, id_ in enumerate(data.ids)}
    return {i: np.asarray(data.pixels[where[i]]) for i in ids if i in where}


def _write_grid(
    out: str,
    index: ImageIndex,
    queries: list[str],
    results: list[list[Neighbor]],
) -> Path:
    from latentsearch.data import DataError
    from latentsearch.report.figures import retrieval_grid

    k = max((len(r) for r in results), default=0)
    if k == 0:
        raise CLIError("--grid: no neighbours to draw")
    blank = np.full((GRID_TILE, GRID_TILE, 3), 255, dtype=np.uint8)
    stored = _stored_pixels(index, {n.id for r in results for n in r if n.path is None})
    q_tiles = np.stack([_file_tile(q) for q in queries])
    n_tiles = np.stack([np.stack([blank] * k)] * len(queries))
    titles = [[""] * k for _ in queries]
    for qi, row in enumerate(results):
        for n in row:
            try:
                if n.path is not None:
                    n_tiles[qi, n.rank - 1] = _file_tile(n.path)
                elif n.id in stored:
                    n_tiles[qi, n.rank - 1] = _tile(stored[n.id])
            except DataError:
                pass  # the file changed or went away since indexing: leave the tile blank
            name = n.class_name if n.class_name is not None else "?"
            titles[qi][n.rank - 1] = f"{name}\n{n.distance:.3g}"
    # A query that is itself an indexed file has a known class: mark neighbours right/wrong.
    by_path = {it.path: it.label for it in index.items if it.path is not None}
    query_labels = [by_path.get(str(Path(q).resolve()), -1) for q in queries]
    correct = None
    if all(label >= 0 for label in query_labels):
        correct = np.zeros((len(queries), k), dtype=bool)
        for qi, row in enumerate(results):
            for n in row:
                correct[qi, n.rank - 1] = n.label == query_labels[qi]
    return retrieval_grid(
        q_tiles,
        n_tiles,
        out,
        query_titles=[Path(q).name for q in queries],
        neighbor_titles=titles,
        correct=correct,
    )


def cmd_search(args: argparse.Namespace) -> int:
    from latentsearch.index import ImageIndex
    from latentsearch.training import load_run

    if args.k < 1:
        raise CLIError(f"-k must be at least 1, got {args.k}")
    index = ImageIndex.load(args.index)
    run_path = Path(args.run) if args.run else index.run_path
    if args.run is None and not run_path.exists():
        raise CLIError(
            f"the run that built {args.index} is no longer at {run_path}: pass --run RUN"
        )
    run = load_run(run_path)
    index.check_compatible(run)
    size, channels = run.model.image_size, run.model.in_channels
    pixels = np.stack([_read_query(q, run, size, channels) for q in args.images])
    results = index.search_images(run, pixels, args.k)
    grid = None
    if args.grid:
        out = Path(args.grid)
        if out.suffix.lower() != ".png":  # matplotlib would add ".png" itself: say so
            out = out.with_name(out.name + ".png")
        grid = _write_grid(str(out), index, args.images, results)

    if args.json:
        payload = {
            "index": str(args.index),
            "run": str(run.path),
            "k": args.k,
            "queries": [
                {"query": q, "neighbors": [asdict(n) for n in row]}
                for q, row in zip(args.images, results, strict=True)
            ],
            "grid": str(grid) if grid else None,
        }
        print(json.dumps(payload, indent=2))
        return 0
    for qi, (q, row) in enumerate(zip(args.images, results, strict=True)):
        if qi:
            print()
        print(f"query {q}")
        rows = [
            {
                "rank": n.rank,
                "distance": n.distance,
                "label": n.class_name if n.class_name is not None else n.label,
                "path": n.path or n.id,
            }
            for n in row
        ]
        print_table(rows, ["rank", "distance", "label", "path"])
    if grid:
        print(f"\ngrid written to {grid}")
    return 0


# ---------------------------------------------------------------------------- duplicates
def cmd_duplicates(args: argparse.Namespace) -> int:
    from latentsearch.index import DEFAULT_DUPLICATE_FRACTION, ImageIndex, default_threshold

    index = ImageIndex.load(args.index)
    if args.threshold is not None:
        threshold = args.threshold
    elif len(index) >= 2:
        threshold = default_threshold(index.embeddings)
    else:
        threshold = 0.0
    groups = index.duplicates(threshold) if len(index) >= 2 else []
    if args.json:
        payload = {
            "index": str(args.index),
            "threshold": threshold,
            "default_threshold": args.threshold is None,
            "groups": [[asdict(it) for it in g] for g in groups],
        }
        print(json.dumps(payload, indent=2))
        return 0
    how = (
        f" (default: {DEFAULT_DUPLICATE_FRACTION:g} x the median squared distance between "
        "two random indexed images)"
        if args.threshold is None
        else ""
    )
    n_images = sum(len(g) for g in groups)
    print(
        f"{len(groups)} group{'s' if len(groups) != 1 else ''} of near-duplicates, {n_images} "
        f"images, closer than {threshold:.4g} (squared L2){how}"
    )
    for gi, group in enumerate(groups, 1):
        print(f"\ngroup {gi} ({len(group)} images)")
        for it in group:
            print(f"  {it.path or it.id}")
    return 0


def register(sub: Any) -> None:
    """Adds this module's commands to the ``latentsearch`` sub-parsers."""
    from latentsearch.index import DEFAULT_DUPLICATE_FRACTION, EXACT_MAX_ITEMS, INDEX_TYPES

    p = sub.add_parser(
        "index",
        help="embed a folder of images with a run and write a searchable index",
        description="Embed every image of a data source (train and test) with a trained run "
        "and write an index folder; --update re-embeds only new and changed files.",
    )
    p.add_argument("run", help="run folder (or checkpoint file)")
    p.add_argument(
        "images", help="a folder of images, or anything `train --data` accepts (digits, ...)"
    )
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", help="index folder to write (an existing index is replaced)")
    dest.add_argument("--update", metavar="INDEX", help="bring this index up to date in place")
    p.add_argument(
        "--index-type",
        default="auto",
        choices=list(INDEX_TYPES),
        help=f"auto: exact (flat) up to {EXACT_MAX_ITEMS:,} images, approximate above; "
        "hnsw / ivf: approximate, recall@10 measured at build time (default: auto; "
        "--update keeps the index's own)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser(
        "search",
        help="find the indexed images nearest to query images",
        description="Embed query images with the index's run and print their nearest "
        "indexed images (squared Euclidean distance between embeddings).",
    )
    p.add_argument("index", help="index folder from `latentsearch index`")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="query image files")
    p.add_argument("--run", default=None, help="run folder (default: the one that built INDEX)")
    p.add_argument("-k", type=int, default=10, help="neighbours per query (default: 10)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--grid",
        default=None,
        metavar="PNG",
        help="also draw the results into this PNG file (.png is added when missing)",
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "duplicates",
        help="list groups of near-duplicate images in an index",
        description="Group indexed images whose embeddings are closer than a threshold "
        "(connected components: A~B and B~C put A, B, C in one group).",
    )
    p.add_argument("index", help="index folder from `latentsearch index`")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="squared L2 distance between embeddings below which two images count as "
        f"duplicates (default: {DEFAULT_DUPLICATE_FRACTION:g} x the median squared distance "
        "between two random indexed images, which catches exact copies and re-encodings "
        "of the same picture; raise it for looser matches)",
    )
    p.add_argument("--json", action="store_true", help="print the groups as JSON")
    p.set_defaults(func=cmd_duplicates)
