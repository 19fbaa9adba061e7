"""``build_report``: a trained run as a folder holding ``index.html``, its PNGs and ``report.json``.

The HTML is a view of ``report.json``: every number it shows is read from the same dict, and the
metrics are ``evaluate_run``'s, computed once.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import latentsearch
from latentsearch.data import DataSplits, ImageData, load_data
from latentsearch.embedding import to_tensor
from latentsearch.errors import ConfigError, LatentsearchError
from latentsearch.evaluation import (
    PUBLISHED,
    Evaluation,
    Neighbours,
    SplitEmbeddings,
    embed_splits,
    evaluate_run,
    query_neighbours,
    score_pixels,
)
from latentsearch.index.duplicates import (
    default_threshold,
    duplicate_fraction,
    find_duplicates,
)
from latentsearch.metrics import nearest_neighbors
from latentsearch.progress import show_progress
from latentsearch.protocols import ProtocolSplits, make_splits
from latentsearch.report import figures
from latentsearch.report.analysis import (
    matched_contingency,
    per_class_precision,
    stratified_sample,
)
from latentsearch.report.html import render_html
from latentsearch.report.projection import (
    MIN_POINTS,
    tsne_2d,
    tsne_backend,
    umap_2d,
    umap_available,
)
from latentsearch.report.thumbnails import Tile, image_tiles
from latentsearch.runs import Run, checkpoints, machine_description

Positions = Sequence[int] | np.ndarray  # positions of images in a set

REPORT_FORMAT = "latentsearch-report/1"
N_RECONSTRUCTIONS = 12  # images in the originals-versus-reconstructions strip
PRECISION_K = 10  # the per-class bars show precision at this cut-off, as evaluate_run does
# Every picture a report may hold: those a new report does not draw are removed, so neither the
# folder nor a tracker that uploads its PNGs shows a stale one.
PICTURES = (
    "training_curves.png",
    "map_tsne.png",
    "map_umap.png",
    "reconstructions.png",
    "retrieval.png",
    "precision_per_class.png",
    "contingency.png",
    "neighbour_distances.png",
    "duplicates.png",
    "clusters.png",
)
MAX_DISTANCE_QUERIES = 5000  # images whose nearest-neighbour distance the histogram shows
MAX_GROUPS = 8  # near-duplicate groups drawn (the largest)
MAX_CLUSTERS = 12  # cluster-head clusters drawn (the largest)
MEMBERS = 6  # thumbnails per drawn group or cluster


def published_scores(run: Run) -> dict[str, Any] | None:
    """The study's numbers for a run of its protocol (vanilla without labels, else hint).

    Returns:
        ``{"variant": "vanilla" | "hint", "nmi": float, "ri": float}``, or None when the run's
        protocol is not ``seed`` (the study published nothing comparable).
    """
    if run.config.protocol != "seed":
        return None
    variant = "vanilla" if run.config.label_fraction == 0 else "hint"
    return {"variant": variant, **PUBLISHED[variant]}


def _reconstruct(run: Run, pixels: np.ndarray) -> np.ndarray | None:
    """The model's reconstructions as uint8 images, or None for an encoder-only model.

    Shape: (N, H, W, C) -> (N, H, W, C).
    """
    model = run.model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(to_tensor(pixels, device)).reconstruction
    finally:
        model.train(was_training)
    if out is None:
        return None
    images = out.detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1)
    return np.ascontiguousarray(images.cpu().numpy())


def _class_name(names: list[str], label: int) -> str:
    return names[label] if 0 <= label < len(names) else "unlabelled"


def _dates(run: Run) -> dict[str, str | None]:
    now = dt.datetime.now().astimezone()
    ckpts = checkpoints(run.path)
    trained = None
    if ckpts:
        stamp = max(p.stat().st_mtime for p in ckpts)
        trained = dt.datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")
    return {"report": now.isoformat(timespec="seconds"), "trained": trained}


def _data_summary(data: DataSplits, splits: ProtocolSplits) -> dict[str, Any]:
    h, w, c = splits.cluster.image_shape
    sets = {"fit": splits.fit, "val": splits.val, "cluster": splits.cluster}
    sets.update({"query": splits.query, "database": splits.database})
    return {
        "name": data.name,
        "source": splits.cluster.source,
        "image_shape": [h, w, c],
        "class_names": list(splits.cluster.class_names),
        "counts": {k: (0 if v is None else len(v)) for k, v in sets.items()},
        "same_set": splits.same_set,
    }


def build_report(
    run: Run,
    out_dir: str | Path,
    *,
    data: DataSplits | None = None,
    evaluation: Evaluation | None = None,
    max_points: int = 2000,
    n_queries: int = 8,
    k: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Writes a self-contained report of a trained run: ``index.html``, PNGs, ``report.json``.

    The report opens from disk in any browser (no external CSS, scripts or fonts). It shows
    training curves, a 2-D map of the cluster-set embeddings, reconstructions (autoencoders),
    retrieval grids with each neighbour's distance, and the run's config, data, machine, time
    and date. With labels (see :meth:`Run.labels_as_trained`) it adds the run's clustering and
    retrieval metrics beside raw pixels on the same images (and the study's published NMI / RI
    for the ``seed`` protocol), right/wrong frames in the retrieval grid, a cluster-versus-class
    contingency map and precision@10 per class. Without labels it shows what is true without
    them instead: the distribution of nearest-neighbour distances, near-duplicate groups, and
    the clusters of the run's cluster head when it has one.

    Images with files are drawn from those files (thumbnails, aspect kept, file name
    underneath); a file gone or changed since the images were loaded is drawn as a placeholder
    that says so. Only reconstructions show the model's input pixels.

    Args:
        run: A trained run (see ``latentsearch.runs.load_run``).
        out_dir: Folder to write into (created; an earlier report's files are replaced).
        data: The run's data if already loaded (else loaded from its config).
        evaluation: ``evaluate_run(run, data=data, baseline=True)`` of this very run and data
            if already computed (e.g. by ``train``): its scores, embeddings, KMeans clusters
            and neighbours are drawn, not computed again; the pixel baseline is added when it
            lacks one.
        max_points: Most cluster-set images on the 2-D map (a seeded stratified sample).
        n_queries: Query rows of the retrieval grid.
        k: Neighbours per query in the retrieval grid.
        seed: Seeds every sample and the 2-D map.
        progress: Progress bars on a terminal.

    Returns:
        The path of ``index.html``.

    Raises:
        ConfigError: For non-positive sizes.
        LatentsearchError: For a run whose data cannot be loaded or embedded.
    """
    settings = {"max_points": max_points, "n_queries": n_queries, "k": k, "seed": seed}
    for name in ("max_points", "n_queries", "k"):
        if settings[name] < 1:
            raise ConfigError(name, f"must be at least 1, got {settings[name]}")
    out = _clean_folder(out_dir)
    cfg = run.config
    bar = tqdm(total=6, desc="report", unit="step", disable=not show_progress(progress))
    try:
        bar.set_postfix_str("data")
        data = data if data is not None else _load(run, progress=progress)
        data, labelled = run.labels_as_trained(data)
        splits = make_splits(data, cfg.protocol)
        labelled = labelled and splits.cluster.has_labels and splits.query.has_labels
        given = evaluation if isinstance(evaluation, Evaluation) and labelled else None
        bar.update()

        bar.set_postfix_str("embed")
        emb = (
            given.embeddings if given is not None else embed_splits(run, splits, progress=progress)
        )
        bar.update()

        bar.set_postfix_str("evaluate")
        scored, metrics, neighbours = _evaluate(
            run, data, splits, emb, given, labelled=labelled, k=k, progress=progress
        )
        bar.update()

        figs: list[dict[str, str]] = []
        extras: dict[str, Any] = {"labelled": labelled}
        drawn: list[Tile] = []
        _curves(run, out, figs)
        bar.set_postfix_str("2-D map")
        extras["map"] = _maps(splits.cluster, emb.cluster, out, figs, max_points, seed)
        bar.update()

        bar.set_postfix_str("figures")
        _reconstructions(run, splits.cluster, out, figs, seed)
        if neighbours is not None:
            _retrieval(
                splits, neighbours, out, figs, extras, drawn, metrics=metrics,
                n_queries=n_queries, k=k, seed=seed,
            )  # fmt: skip
        if scored is not None and metrics is not None:
            _contingency(splits.cluster, scored.assignments, metrics, out, figs, extras)
        if not labelled:
            _without_labels_views(run, splits, emb, out, figs, extras, drawn, seed=seed)
        extras["unavailable"] = sorted({(t.name, t.status) for t in drawn if t.status is not None})
        bar.update()

        bar.set_postfix_str("html")
        report = _report(run, data, splits, metrics, settings, figs, extras)
        index = _write_pages(report, out)
        bar.update()
    finally:
        bar.close()
    return index


def _write_pages(report: dict[str, Any], out: Path) -> Path:
    """Writes ``report.json`` and the ``index.html`` that shows it; returns the latter."""
    (out / "report.json").write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    index = out / "index.html"
    index.write_text(render_html(report), encoding="utf-8")
    return index


def _load(run: Run, *, progress: bool) -> DataSplits:
    """The run's data, at its model's image size."""
    cfg = run.config
    return load_data(
        cfg.data, image_size=run.model.image_size, data_dir=cfg.data_dir, progress=progress
    )


def _clean_folder(out_dir: str | Path) -> Path:
    """The report folder, created, without the pictures of an earlier report."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LatentsearchError(f"{out} is a file, not a folder: choose a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    for name in PICTURES:
        (out / name).unlink(missing_ok=True)
    return out


def _evaluate(
    run: Run,
    data: DataSplits,
    splits: ProtocolSplits,
    emb: SplitEmbeddings,
    given: Evaluation | None,
    *,
    labelled: bool,
    k: int,
    progress: bool,
) -> tuple[Evaluation | None, dict[str, Any] | None, Neighbours | None]:
    """What the report shows of the run's quality.

    Returns:
        When the data is labelled, the run's evaluation (``given``, else computed) and its
        metrics with the pixel baseline (else None and None); then the queries' neighbours
        for the grid and the per-class precision (None when there are none).
    """
    # One search serves both the per-class precision (every query) and the grid (a sample).
    depth = min(max(k, PRECISION_K), len(splits.database) - int(splits.same_set))
    scored: Evaluation | None = None
    metrics: dict[str, Any] | None = None
    if labelled:
        scored = given or evaluate_run(
            run, data=data, baseline=True, progress=progress, embeddings=emb, neighbours=depth
        )
        metrics = dict(scored)
        if "baseline" not in metrics:  # the same scoring, on the same images
            metrics["baseline"] = score_pixels(splits)
    return scored, metrics, _grid_neighbours(splits, emb, scored, depth)


def _grid_neighbours(
    splits: ProtocolSplits, emb: SplitEmbeddings, scored: Evaluation | None, depth: int
) -> Neighbours | None:
    """Each query's first ``depth`` neighbours: the evaluation's when it kept enough."""
    if depth < 1:
        return None
    if scored is not None and scored.neighbours.depth >= depth:
        return scored.neighbours
    # No labels to evaluate, or a deeper grid than the evaluation kept.
    return query_neighbours(splits, emb, depth)


def _report(
    run: Run,
    data: DataSplits,
    splits: ProtocolSplits,
    metrics: dict[str, Any] | None,
    settings: dict[str, int],
    figs: list[dict[str, str]],
    extras: dict[str, Any],
) -> dict[str, Any]:
    """What ``report.json`` holds and ``index.html`` shows."""
    cfg = run.config
    return {
        "format": REPORT_FORMAT,
        "title": f"{run.path.name}: {cfg.model} on {data.name} ({cfg.protocol})",
        "run": str(run.path),
        "latentsearch_version": latentsearch.__version__,
        "dates": _dates(run),
        "metrics": metrics,
        "published": published_scores(run),
        "config": cfg.to_dict(),
        "epochs": run.epoch,
        "train_seconds": float(sum(float(r.get("seconds", 0.0)) for r in run.history)),
        "machine": machine_description(),
        "data": _data_summary(data, splits),
        "settings": settings,
        "figures": figs,
        **extras,
    }


def _jsonable(value: Any) -> Any:
    """NaN and infinities become null, so report.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _figure(figs: list[dict[str, str]], path: Path, title: str, caption: str) -> None:
    figs.append({"file": path.name, "title": title, "caption": caption})


def _curves(run: Run, out: Path, figs: list[dict[str, str]]) -> None:
    if not run.history:
        return
    path = figures.training_curves(run.history, out / "training_curves.png")
    _figure(
        figs,
        path,
        "Training curves",
        "Each loss component per epoch, on the fit set (train) and on the held-back "
        "validation images. Train values are averaged over each epoch's steps.",
    )


def _maps(
    cluster: ImageData,
    embeddings: np.ndarray,
    out: Path,
    figs: list[dict[str, str]],
    max_points: int,
    seed: int,
) -> dict[str, Any] | None:
    sample = stratified_sample(cluster.labels, max_points, seed=seed)
    if len(sample) < MIN_POINTS:
        return None
    x, labels = embeddings[sample], cluster.labels[sample]
    backend = tsne_backend()
    methods: list[tuple[str, str, Callable[[], np.ndarray]]] = [
        ("tsne", f"t-SNE ({backend})", lambda: tsne_2d(x, seed=seed, backend=backend))
    ]
    if umap_available():
        methods.append(("umap", "UMAP (umap-learn)", lambda: umap_2d(x, seed=seed)))
    for key, name, project in methods:
        path = figures.embedding_map(
            project(),
            labels,
            cluster.class_names,
            out / f"map_{key}.png",
            title=f"{name} of {len(sample)} cluster-set embeddings",
        )
        _figure(
            figs,
            path,
            f"2-D map: {name}",
            (
                f"The embeddings of all {len(cluster)} cluster-set images"
                if len(sample) == len(cluster)
                else f"The embeddings of {len(sample)} of the {len(cluster)} cluster-set images "
                f"(a stratified sample, seed {seed})"
            )
            + (
                ", coloured by their true class. Classes that form separate islands are easy "
                "to cluster and retrieve; distances between islands mean little."
                if cluster.has_labels
                else ". Without labels, look for islands: groups the model keeps apart."
            ),
        )
    return {"points": len(sample), "tsne_backend": backend, "umap": umap_available()}


def _reconstructions(
    run: Run, cluster: ImageData, out: Path, figs: list[dict[str, str]], seed: int
) -> None:
    sample = stratified_sample(cluster.labels, N_RECONSTRUCTIONS, seed=seed)
    originals = np.asarray(cluster.pixels[sample])
    decoded = _reconstruct(run, originals)
    if decoded is None:
        return
    names = [
        cluster.class_names[c]
        if c >= 0
        else Path(cluster.paths[i]).name
        if cluster.paths is not None
        else ""
        for i, c in zip(sample, cluster.labels[sample], strict=True)
    ]
    path = figures.reconstruction_pairs(
        originals, decoded, out / "reconstructions.png", titles=names
    )
    _figure(
        figs,
        path,
        "Reconstructions",
        f"{len(sample)} cluster-set images (top) and the autoencoder's reconstructions of "
        "them (bottom).",
    )


def _tiles(images: ImageData, positions: Positions, drawn: list[Tile]) -> list[Tile]:
    """Thumbnails of some images (see ``image_tiles``), also kept in ``drawn``."""
    tiles = image_tiles(images, positions)
    drawn.extend(tiles)
    return tiles


def _stack(tiles: Sequence[Tile]) -> np.ndarray:
    """Shape: (M, THUMB, THUMB, 3)."""
    return np.stack([t.pixels for t in tiles])


def _rows(tiles: list[Tile], width: int) -> list[list[Tile]]:
    return [tiles[i : i + width] for i in range(0, len(tiles), width)]


def _lines(*parts: str) -> str:
    return "\n".join(p for p in parts if p)


def _retrieval(
    splits: ProtocolSplits,
    neighbours: Neighbours,
    out: Path,
    figs: list[dict[str, str]],
    extras: dict[str, Any],
    drawn: list[Tile],
    *,
    metrics: dict[str, Any] | None,
    n_queries: int,
    k: int,
    seed: int,
) -> None:
    query, database = splits.query, splits.database
    labelled = metrics is not None
    dist, idx = neighbours.distances, neighbours.indices
    depth = neighbours.depth
    names = query.class_names or database.class_names
    rows = stratified_sample(query.labels, n_queries, seed=seed)
    rows = rows[np.argsort(query.labels[rows], kind="stable")]  # rows in class order
    shown = min(k, depth)
    grid_idx, grid_dist = idx[rows, :shown], dist[rows, :shown]
    q_labels = query.labels[rows]
    nb_labels = database.labels[grid_idx]
    q_tiles = _tiles(query, rows, drawn)
    nb_tiles = _tiles(database, grid_idx.ravel(), drawn)
    path = figures.retrieval_grid(
        _stack(q_tiles),
        _stack(nb_tiles).reshape(len(rows), shown, *nb_tiles[0].pixels.shape),
        out / "retrieval.png",
        query_titles=[
            _lines(_class_name(names, int(c)) if labelled else "", t.caption)
            for c, t in zip(q_labels, q_tiles, strict=True)
        ],
        neighbor_titles=[
            [
                _lines(_class_name(names, int(c)) if labelled else "", f"d²={d:.3g}", t.caption)
                for c, d, t in zip(lab_row, d_row, tile_row, strict=True)
            ]
            for lab_row, d_row, tile_row in zip(
                nb_labels, grid_dist, _rows(nb_tiles, shown), strict=True
            )
        ],
        correct=(nb_labels == q_labels[:, None]) if labelled else None,
    )
    _figure(
        figs,
        path,
        "Retrieval examples",
        f"{len(rows)} query images ("
        + ("a seeded sample across classes" if labelled else "a seeded sample")
        + f", framed in blue) and their {shown} nearest database images by squared Euclidean "
        "distance d², nearest first, each with its file name"
        + (
            ": green frame, same class as the query; red, another class."
            if labelled
            else ". The run has no labels, so no neighbour is marked right or wrong."
        ),
    )
    if metrics is None:
        return
    precision, counts = per_class_precision(
        query.labels,
        database.labels[idx[:, :PRECISION_K]],
        database.labels,
        k=PRECISION_K,
        same_set=splits.same_set,
        n_classes=len(names),
    )
    overall = float(metrics["precision_at_10"])
    path = figures.per_class_bars(
        names, precision, overall, out / "precision_per_class.png", metric="precision@10"
    )
    _figure(
        figs,
        path,
        "Precision@10 per class",
        "Share of each query's 10 nearest database images that have its class, averaged "
        "over the queries of each class; the dashed line is the value over all queries "
        "(the table's precision@10).",
    )
    extras["precision_at_10_per_class"] = {
        name: {"precision": float(p), "queries": int(c)}
        for name, p, c in zip(names, precision, counts, strict=True)
    }


def _contingency(
    cluster: ImageData,
    assignments: np.ndarray,
    metrics: dict[str, Any],
    out: Path,
    figs: list[dict[str, str]],
    extras: dict[str, Any],
) -> None:
    """The cluster-versus-class map of the very clustering the evaluation scored."""
    known = cluster.labels >= 0
    counts, order = matched_contingency(
        cluster.labels[known], assignments, n_classes=len(cluster.class_names)
    )
    path = figures.contingency_heatmap(
        counts,
        cluster.class_names,
        [int(c) for c in order],
        out / "contingency.png",
        title=f"KMeans clusters against classes (NMI {metrics['nmi']:.3f}, "
        f"accuracy {metrics['acc']:.3f})",
    )
    _figure(
        figs,
        path,
        "Clusters against classes",
        f"How the {int(known.sum())} cluster-set images fall into KMeans clusters. Each cluster "
        "is matched to one class (Hungarian matching, as the accuracy metric does) and the "
        "columns are ordered so matched pairs lie on the diagonal; cells give image counts, "
        "shaded by the share of the class. Off-diagonal mass shows which classes are merged.",
    )
    extras["contingency"] = {"counts": counts.tolist(), "cluster_order": order.tolist()}


def _all_images(splits: ProtocolSplits, emb: SplitEmbeddings) -> tuple[ImageData, np.ndarray]:
    """Every image the report searched (database and queries, each once) and its embeddings.

    Shape: embeddings (N, D).
    """
    if splits.same_set or splits.query is splits.database:
        return splits.database, emb.database
    both = ImageData.concatenate([splits.database, splits.query])
    return both, np.concatenate([emb.database, emb.query])


def duplicate_threshold(run: Run, embeddings: np.ndarray) -> float:
    """The index's default near-duplicate threshold for this run's embeddings.

    As ``ImageIndex.default_duplicate_threshold``: a share of the median squared distance
    between random images, ``PHOTO_DUPLICATE_FRACTION`` when the model embeds a texture part.
    Shape: (N, D), N >= 2 -> scalar.
    """
    return default_threshold(embeddings, duplicate_fraction(run.config.model_kwargs))


def _without_labels_views(
    run: Run,
    splits: ProtocolSplits,
    emb: SplitEmbeddings,
    out: Path,
    figs: list[dict[str, str]],
    extras: dict[str, Any],
    drawn: list[Tile],
    *,
    seed: int,
) -> None:
    """What is true without labels: nearest-neighbour distances, near-duplicates, clusters."""
    images, vectors = _all_images(splits, emb)
    if len(images) < 2:
        return
    threshold = duplicate_threshold(run, vectors)
    _distances(images, vectors, threshold, out, figs, extras, seed=seed)
    _duplicates(images, vectors, threshold, out, figs, extras, drawn)
    _clusters(run, images, vectors, out, figs, extras, drawn)


def _distances(
    images: ImageData,
    vectors: np.ndarray,
    threshold: float,
    out: Path,
    figs: list[dict[str, str]],
    extras: dict[str, Any],
    *,
    seed: int,
) -> None:
    n = len(images)
    picked = np.arange(n)
    if n > MAX_DISTANCE_QUERIES:  # a seeded sample shows the same distribution for less
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(n, MAX_DISTANCE_QUERIES, replace=False))
    # Each picked image against all: the first hit that is not the image itself (an exact
    # copy ties with it at distance 0 and may come first).
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    dist, idx = nearest_neighbors(x[picked], x, 2)
    nearest = np.where(idx[:, 0] == picked, dist[:, 1], dist[:, 0]).astype(np.float64)
    path = figures.distance_histogram(
        nearest,
        out / "neighbour_distances.png",
        threshold=threshold,
        title=f"Nearest-neighbour distances of {len(picked)} of {n} images"
        if len(picked) < n
        else f"Nearest-neighbour distances of all {n} images",
    )
    _figure(
        figs,
        path,
        "Distances to the nearest image",
        "For each image, the squared distance d² between its embedding and the nearest other "
        "image's. A peak near zero holds copies and near-copies (the dashed line is the "
        "near-duplicate threshold the index uses); the rest shows how far apart the "
        "collection's images typically are, the scale of the distances in the retrieval grid.",
    )
    extras["neighbour_distances"] = {
        "images": len(picked),
        "threshold": float(threshold),
        "below_threshold": int((nearest < threshold).sum()),
        "quantiles": {
            str(q): float(v)
            for q, v in zip((0.1, 0.5, 0.9), np.quantile(nearest, [0.1, 0.5, 0.9]), strict=True)
        },
    }


def _names(images: ImageData, positions: Positions) -> list[str]:
    if images.paths is None:
        return [images.ids[int(p)] for p in positions]
    return [Path(images.paths[int(p)]).name for p in positions]


def _duplicates(
    images: ImageData,
    vectors: np.ndarray,
    threshold: float,
    out: Path,
    figs: list[dict[str, str]],
    extras: dict[str, Any],
    drawn: list[Tile],
) -> None:
    found = find_duplicates(vectors, threshold)
    groups = sorted(found.groups, key=lambda g: (-len(g), g[0]))
    extras["duplicates"] = {
        "threshold": float(threshold),
        "groups": len(groups),
        "images": int(sum(len(g) for g in groups)),
        "shown": [_names(images, g) for g in groups[:MAX_GROUPS]],
    }
    if not groups:
        return
    rows = []
    x = np.asarray(vectors, dtype=np.float64)
    for i, group in enumerate(groups[:MAX_GROUPS]):
        shown = group[:MEMBERS]
        tiles = _tiles(images, shown, drawn)
        first = x[shown[0]]
        caps = [
            _lines(t.caption, "" if j == 0 else f"d²={float(((x[p] - first) ** 2).sum()):.3g}")
            for j, (p, t) in enumerate(zip(shown, tiles, strict=True))
        ]
        more = f"\n(+{len(group) - len(shown)} more)" if len(group) > len(shown) else ""
        rows.append((f"group {i + 1}\n{len(group)} images{more}", _stack(tiles), caps))
    path = figures.gallery(
        rows,
        out / "duplicates.png",
        header=f"{len(groups)} near-duplicate groups, {extras['duplicates']['images']} images "
        f"(d² < {threshold:.3g})",
    )
    _figure(
        figs,
        path,
        "Near-duplicate groups",
        f"Images whose embeddings lie closer than the index's near-duplicate threshold "
        f"(d² < {threshold:.3g}), grouped as `latentsearch duplicates` groups them; the "
        f"{min(len(groups), MAX_GROUPS)} largest groups, at most {MEMBERS} images each, with "
        "each image's d² to the group's first.",
    )


def _clusters(
    run: Run,
    images: ImageData,
    vectors: np.ndarray,
    out: Path,
    figs: list[dict[str, str]],
    extras: dict[str, Any],
    drawn: list[Tile],
) -> None:
    """The clusters of the run's cluster head (``latentsearch cluster``), when it has one."""
    from latentsearch.clusters import ClusterHeadError, head_path, load_cluster_head

    path = head_path(run.path)
    if not path.is_file():
        return
    try:
        head = load_cluster_head(
            path, encoder_sha256=run.fingerprint["weights_sha256"], run_model=run.model
        )
    except ClusterHeadError as e:
        extras["clusters"] = {"error": str(e)}
        return
    probs = head.image_probabilities(np.asarray(images.pixels), run.model, vectors)
    assigned, confidence = probs.argmax(axis=1), probs.max(axis=1)
    sizes = np.bincount(assigned, minlength=probs.shape[1])
    order = [int(c) for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]
    rows, members = [], {}
    for c in order[:MAX_CLUSTERS]:
        inside = np.flatnonzero(assigned == c)
        shown = inside[np.argsort(-confidence[inside], kind="stable")][:MEMBERS]
        tiles = _tiles(images, shown, drawn)
        members[str(c)] = _names(images, shown)
        rows.append((f"cluster {c}\n{int(sizes[c])} images", _stack(tiles),
                     [t.caption for t in tiles]))  # fmt: skip
    extras["clusters"] = {
        "n_clusters": int(probs.shape[1]),
        "sizes": {str(c): int(sizes[c]) for c in order},
        "members": members,
    }
    picture = figures.gallery(
        rows,
        out / "clusters.png",
        header=f"{len(order)} clusters of the run's cluster head, {len(images)} images",
    )
    _figure(
        figs,
        picture,
        "Clusters",
        f"The clusters the run's cluster head ({path.name}, trained by `latentsearch cluster`) "
        f"assigns the images to, largest first ({min(len(order), MAX_CLUSTERS)} of "
        f"{len(order)} shown), each with its size and its {MEMBERS} most confident members.",
    )
