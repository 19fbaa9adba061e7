"""Real photographs: the no-label default beside the training-free rivals, in one run.

Two collections (see ``../shared/data/README.md``):

- **tiles** (``train/<picture>/*``, ``test/<picture>/*``): find the other tiles of a scene.
  KMeans (k = pictures) on the test tiles → NMI; test tiles queried against the training
  tiles → P@1, P@10.
- **copies** (``originals/*.jpg``, ``queries/<picture>__<edit>.jpg``): find the original of an
  edited photo. Every image queries all the others: top-1 is the same picture, the original
  is in the top 10 (edited copies only); ``duplicates`` at its default setting: pair
  precision and recall over same-picture pairs, and recall per edit (copy–original pairs).

The learned row is ``latentsearch up FOLDER --no-labels --no-serve`` exactly as a user runs it
(a subprocess: wall time and peak RSS of that process), scored from the index it wrote. The
rivals (raw pixels at 32 px, PCA of them, an HSV colour histogram, PHash) are computed in the
same run, each with its time. Needs ``imagehash`` (``pip install -e '.[bench]'``).

    python benchmarks/bench_photos.py --tiles /tmp/data/photo-tiles-dev \\
        --copies /tmp/data/photo-copies-dev --work /tmp/bench-photos

``--sweep 32 64 96 128`` trains ``auto`` on the tiles at each image size instead (``train``
then ``evaluate``), at the recipe's epochs or, with ``--equal-time``, at epochs scaled by
(32/size)^2 so each size gets the time budget of 32 px.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latentsearch.data.folder import decode_files
from latentsearch.metrics import kmeans_scores, retrieval_scores
from latentsearch.runs import machine_description

RESULTS = Path(__file__).parent / "results" / "photos.json"
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png"}


# --------------------------------------------------------------------------- files


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def tile_labels(paths: list[Path], root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Split (0 train, 1 test) and picture label of each tile, from ``split/picture/file``."""
    rel = [p.relative_to(root).parts for p in paths]
    names = sorted({r[1] for r in rel})
    split = np.array([0 if r[0] == "train" else 1 for r in rel])
    label = np.array([names.index(r[1]) for r in rel])
    return split, label, names


def copy_labels(paths: list[Path]) -> tuple[np.ndarray, list[str]]:
    """Picture label of each image and its edit (``original`` for the originals)."""
    pictures, edits = [], []
    for p in paths:
        stem = p.stem
        if "__" in stem:
            picture, edit = stem.split("__", 1)
        else:
            picture, edit = stem, "original"
        pictures.append(picture)
        edits.append(edit)
    names = sorted(set(pictures))
    return np.array([names.index(x) for x in pictures]), edits


# --------------------------------------------------------------------------- rivals


def raw_pixels(paths: list[Path], size: int = 32) -> np.ndarray:
    """Decoded as the index decodes (short side to ``size``, centre crop), flattened."""
    decoded = decode_files([str(p) for p in paths], size)
    return decoded.pixels.reshape(len(paths), -1).astype(np.float32) / 255


def pca(x: np.ndarray, fit_rows: np.ndarray, components: int = 64) -> np.ndarray:
    from sklearn.decomposition import PCA

    n = min(components, int(fit_rows.sum()) - 1, x.shape[1])
    return PCA(n_components=n, random_state=0).fit(x[fit_rows]).transform(x).astype(np.float32)


def hsv_histogram(paths: list[Path], bins: int = 8, size: int = 128) -> np.ndarray:
    """HSV 8×8×8 histogram of the whole picture (long side reduced to ``size``), Hellinger form
    (square root of the frequencies), so L2 between vectors is the Hellinger distance."""
    from PIL import Image

    out = np.empty((len(paths), bins**3), np.float32)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im.draft("RGB", (size, size))
            im = im.convert("RGB")
            im.thumbnail((size, size))
            hsv = np.asarray(im.convert("HSV")).reshape(-1, 3).astype(np.int64) * bins // 256
        idx = (hsv[:, 0] * bins + hsv[:, 1]) * bins + hsv[:, 2]
        h = np.bincount(idx, minlength=bins**3).astype(np.float32)
        out[i] = np.sqrt(h / h.sum())
    return out


def phash_bits(paths: list[Path]) -> np.ndarray:
    """imagehash's 64-bit PHash as 0/1 floats: squared L2 between them is the Hamming distance."""
    import imagehash
    from PIL import Image

    out = np.empty((len(paths), 64), np.float32)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            out[i] = imagehash.phash(im).hash.reshape(-1)
    return out


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    x = fn()
    return x, time.perf_counter() - t


# --------------------------------------------------------------------------- scores


def score_tiles(x: np.ndarray, split: np.ndarray, label: np.ndarray) -> dict[str, float]:
    train, test = split == 0, split == 1
    clusters, _ = kmeans_scores(x[test], label[test])
    retrieval = retrieval_scores(x[test], label[test], x[train], label[train], k=10)
    return {
        "nmi": round(clusters["nmi"], 4),
        "precision_at_10": round(retrieval["precision_at_10"], 4),
        "precision_at_1": round(retrieval["precision_at_1"], 4),
    }


def _squared_distances(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    sq = (x * x).sum(1)
    d = sq[:, None] + sq[None, :] - 2 * x @ x.T
    np.fill_diagonal(d, np.inf)
    return d


def grouped(groups: list[list[int]], n: int) -> np.ndarray:
    """(N, N) bool: both images in one duplicate group."""
    group_of = np.full(n, -1)
    for g, members in enumerate(groups):
        group_of[members] = g
    return (group_of[:, None] == group_of[None, :]) & (group_of[:, None] >= 0)


def pair_scores(same_group: np.ndarray, picture: np.ndarray, edits: list[str]) -> dict[str, Any]:
    """Pair precision / recall of reported duplicate pairs (``same_group``, (N, N) bool) against
    same-picture pairs, and recall of each copy–original pair by edit."""
    same_picture = picture[:, None] == picture[None, :]
    upper = np.triu(np.ones_like(same_picture, dtype=bool), 1)
    found = int((same_group & upper).sum())
    true = int((same_picture & upper).sum())
    hit = int((same_group & same_picture & upper).sum())
    original = {int(picture[i]): i for i, e in enumerate(edits) if e == "original"}
    by_edit: dict[str, list[bool]] = {}
    for i, e in enumerate(edits):
        if e != "original":
            by_edit.setdefault(e, []).append(bool(same_group[i, original[int(picture[i])]]))
    return {
        "pair_precision": round(hit / found, 4) if found else None,
        "pair_recall": round(hit / true, 4),
        "pairs_found": found,
        "recall_by_edit": {e: round(float(np.mean(v)), 4) for e, v in sorted(by_edit.items())},
    }


def score_copies(
    x: np.ndarray, picture: np.ndarray, edits: list[str], order: np.ndarray | None = None
) -> dict[str, Any]:
    """Top-1 same picture and original in the top 10 for every edited copy, by edit too.

    ``order``: each image's neighbours, nearest first (default: exact L2 over ``x``).
    """
    if order is None:
        order = np.argsort(_squared_distances(x), axis=1)[:, :10]
    copies = np.array([e != "original" for e in edits])
    is_original = ~copies
    top1 = picture[order[:, 0]] == picture
    orig10 = np.array(
        [bool((is_original[o] & (picture[o] == picture[i])).any()) for i, o in enumerate(order)]
    )
    by_edit = {
        e: round(float(top1[[k for k, f in enumerate(edits) if f == e]].mean()), 4)
        for e in sorted(set(edits) - {"original"})
    }
    return {
        "top1_same_picture": round(float(top1[copies].mean()), 4),
        "original_in_top10": round(float(orig10[copies].mean()), 4),
        "top1_by_edit": by_edit,
    }


def hamming_pairs(bits: np.ndarray, max_bits: int) -> np.ndarray:
    """imagededup's way: every pair within ``max_bits`` (no chaining). (N, N) bool."""
    return _squared_distances(bits) <= max_bits


# --------------------------------------------------------------------------- learned


def run_up(folder: Path, work: Path, extra: list[str]) -> dict[str, Any]:
    """``latentsearch up FOLDER --no-labels --no-serve`` in a subprocess: wall time, peak RSS."""
    cmd = [sys.executable, "-m", "latentsearch", "up", str(folder), "--work", str(work),
           "--no-labels", "--no-serve", "--no-report", *extra]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with status {status}")
    return {
        "command": " ".join(["latentsearch", *cmd[3:]]),
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def index_vectors(work: Path, root: Path, paths: list[Path]) -> tuple[np.ndarray, np.ndarray, Any]:
    """The index's vectors in the order of ``paths`` (ids are paths relative to the folder),
    each path's position in the index, and the index."""
    from latentsearch.index import ImageIndex

    index = ImageIndex.load(work / "index")
    position = {str(Path(item.id)): i for i, item in enumerate(index.items)}
    rows = np.array([position[str(p.relative_to(root))] for p in paths])
    return index.embeddings[rows], rows, index


# --------------------------------------------------------------------------- collections


def rival_rows(
    paths: list[Path], score: Callable[[np.ndarray], dict[str, Any]], fit_rows: np.ndarray
) -> tuple[dict[str, Any], np.ndarray]:
    """The training-free rivals, each scored by ``score`` with its time; and the PHash bits."""
    pixels, t_pix = timed(lambda: raw_pixels(paths))
    reduced, t_pca = timed(lambda: pca(pixels, fit_rows))
    hist, t_hist = timed(lambda: hsv_histogram(paths))
    bits, t_hash = timed(lambda: phash_bits(paths))
    rows = {
        "raw pixels (32 px)": (pixels, t_pix),
        "PCA of raw pixels, 64 components": (reduced, t_pix + t_pca),
        "HSV colour histogram 8×8×8": (hist, t_hist),
        "PHash (64 bits)": (bits, t_hash),
    }
    scored = {name: {**score(x), "seconds": round(t, 1)} for name, (x, t) in rows.items()}
    return scored, bits


def bench_tiles(root: Path, work: Path, extra: list[str]) -> dict[str, Any]:
    paths = _files(root)
    split, label, names = tile_labels(paths, root)
    rows, _ = rival_rows(paths, lambda x: score_tiles(x, split, label), split == 0)
    up = run_up(root, work, extra)
    learned, _, _ = index_vectors(work, root, paths)
    rows["latentsearch up --no-labels"] = {**score_tiles(learned, split, label), **up}
    return {"images": len(paths), "pictures": len(names), "rows": rows}


def bench_copies(root: Path, work: Path, extra: list[str]) -> dict[str, Any]:
    from latentsearch.index.duplicates import find_duplicates

    paths = _files(root)
    picture, edits = copy_labels(paths)
    rows, bits = rival_rows(
        paths, lambda x: score_copies(x, picture, edits), np.ones(len(paths), bool)
    )
    rows["PHash (64 bits)"]["duplicates (Hamming ≤ 10, imagededup's default)"] = pair_scores(
        hamming_pairs(bits, 10), picture, edits
    )
    up = run_up(root, work, extra)
    learned, rows_of, index = index_vectors(work, root, paths)
    # The index's own search; an exact copy may come before the query itself, so drop the
    # query by position, not by rank.
    found = index.search(learned, 11)[1]
    neighbours = np.array(
        [[j for j in row if j != r][:10] for row, r in zip(found, rows_of, strict=True)]
    )
    back = np.empty(len(index), int)
    back[rows_of] = np.arange(len(paths))
    order = back[neighbours]
    # As `latentsearch duplicates INDEX` does at its default setting.
    search = find_duplicates(index.embeddings, index.default_duplicate_threshold())
    groups = [[int(back[i]) for i in g] for g in search.groups]
    rows["latentsearch up --no-labels"] = {
        **score_copies(learned, picture, edits, order=order),
        **up,
        "duplicates (default threshold)": {
            **pair_scores(grouped(groups, len(paths)), picture, edits),
            "groups": len(groups),
            "largest_group": max((len(g) for g in groups), default=0),
        },
    }
    return {"images": len(paths), "pictures": int(picture.max() + 1), "rows": rows}


def sweep(root: Path, work: Path, sizes: list[int], equal_time: bool) -> dict[str, Any]:
    """``train`` (auto recipe) then ``evaluate`` on the tiles at each image size."""
    out: dict[str, Any] = {}
    for size in sizes:
        run = work / f"size-{size}{'-equal' if equal_time else ''}"
        cmd = [sys.executable, "-m", "latentsearch", "train", "--data", str(root),
               "--out", str(run), "--image-size", str(size)]  # fmt: skip
        if equal_time:
            from latentsearch.presets import AUTO_EPOCHS

            cmd += ["--epochs", str(max(1, round(AUTO_EPOCHS[1] * (32 / size) ** 2)))]
        load = os.getloadavg()[0]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - t
        scores = json.loads(
            subprocess.run(
                [sys.executable, "-m", "latentsearch", "evaluate", str(run), "--json"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        config = json.loads((run / "config.json").read_text())
        out[str(size)] = {
            "epochs": config["epochs"],
            "nmi": round(scores["nmi"], 4),
            "precision_at_10": round(scores["precision_at_10"], 4),
            "precision_at_1": round(scores["precision_at_1"], 4),
            "train_seconds": round(seconds, 1),
            "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2),
        }
        print(size, out[str(size)], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=Path)
    parser.add_argument("--copies", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--label", default="dev", help="name of this pair of collections")
    parser.add_argument("--sweep", type=int, nargs="*", help="image sizes to train the tiles at")
    parser.add_argument("--equal-time", action="store_true")
    parser.add_argument("--up-arg", action="append", default=[], help="extra argument to `up`")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    entry: dict[str, Any] = {
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": round(os.getloadavg()[0], 2),
    }
    if args.sweep:
        entry["sweep"] = sweep(args.tiles, args.work, args.sweep, args.equal_time)
        key = f"{args.label}: tile size sweep{' (equal time)' if args.equal_time else ''}"
    else:
        if args.tiles:
            entry["tiles"] = bench_tiles(args.tiles, args.work / "tiles", args.up_arg)
        if args.copies:
            entry["copies"] = bench_copies(args.copies, args.work / "copies", args.up_arg)
        key = args.label
    entry["load_after"] = round(os.getloadavg()[0], 2)
    entry["peak_rss_mb_benchmark"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    results[key] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(entry, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
