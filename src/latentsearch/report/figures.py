"""Figures of a run: retrieval grids and the report's plots.

Every function builds its own :class:`matplotlib.figure.Figure` (never pyplot, so no global
state leaks between calls or threads) and writes a PNG with the Agg renderer.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

CORRECT_COLOR = "#1a9850"  # green frame: the neighbour has the query's class
WRONG_COLOR = "#d73027"  # red frame: it does not
QUERY_COLOR = "#2c4d9e"  # blue frame and bold title that set the query apart
FRAME_WIDTH = 4.0  # frame line width, points
PLAIN_COLOR = "#999999"  # the thin edge of a thumbnail that carries no verdict
PLAIN_WIDTH = 1.0
DPI = 100

_CELL = 1.44  # thumbnail width, inches (144 px at DPI, thumbnails.THUMB): small images are upscaled
_COL_GAP = 0.1  # between neighbours, inches
_QUERY_GAP = 0.45  # between the query and its first neighbour, inches
_MARGIN = 0.2  # around the figure, inches
_HEADER = 0.35  # the header line above the first row, inches
_FONT = 9  # points
_LINE = _FONT * 1.3 / 72  # height of one line of text, inches
_TITLE_CHARS = 21  # wrap titles at this many characters so neighbours' texts never touch


def _check_images(name: str, array: np.ndarray, ndim: int) -> np.ndarray:
    shape = "(Q, H, W, C)" if ndim == 4 else "(Q, K, H, W, C)"
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 pixels of shape {shape}, got dtype {array.dtype}")
    if array.ndim != ndim or array.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must have shape {shape} with C 1 or 3, got {array.shape}")
    return array


def _wrap_name(name: str) -> list[str]:
    """A file name in lines of the thumbnail's width, broken after ``_``, ``-`` or ``.``
    where it can be (``Picture_0B__`` / ``colour.jpg``), inside a word only where it must."""
    lines: list[str] = []
    line = ""
    for piece in re.split(r"(?<=[_.\-])(?=[^_.\-])", name):
        if len(line) + len(piece) > _TITLE_CHARS and line:
            lines.append(line)
            line = ""
        while len(piece) > _TITLE_CHARS:
            lines.append(piece[:_TITLE_CHARS])
            piece = piece[_TITLE_CHARS:]
        line += piece
    return [*lines, line]


def _wrap(text: str) -> list[str]:
    """Lines of a title, wrapped to the width of a thumbnail."""
    lines: list[str] = []
    for line in str(text).splitlines():
        if len(line) > _TITLE_CHARS and not any(c.isspace() for c in line):
            lines.extend(_wrap_name(line))  # one long word: a file name
        else:
            lines.extend(textwrap.wrap(line, _TITLE_CHARS, break_long_words=True) or [""])
    return lines


def _titles(name: str, titles: Sequence[object] | None, count: int) -> list[str]:
    if titles is None:
        return [""] * count
    titles = list(titles)
    if len(titles) != count:
        raise ValueError(f"{name} must have {count} entries, got {len(titles)}")
    return [str(t) for t in titles]


def show_image(ax: Axes, image: np.ndarray) -> None:
    """Draws one image without ticks; nearest-neighbour, so small images stay crisp.

    Args:
        ax: The axes to draw into.
        image: Pixels. Shape: (H, W, C), C 1 or 3, uint8.
    """
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _frame(ax: Axes, color: str | None, width: float = FRAME_WIDTH) -> None:
    for spine in ax.spines.values():
        spine.set_visible(color is not None)
        if color is not None:
            spine.set_edgecolor(color)
            spine.set_linewidth(width)


def _neighbor_titles(
    neighbor_titles: Sequence[Sequence[object]] | None, n_q: int, k: int
) -> list[list[str]]:
    """``n_q`` rows of ``k`` checked titles, empty ones when none are given."""
    if neighbor_titles is None:
        return [[""] * k for _ in range(n_q)]
    rows = list(neighbor_titles)
    if len(rows) != n_q:
        raise ValueError(f"neighbor_titles must have {n_q} rows, got {len(rows)}")
    return [_titles(f"neighbor_titles[{i}]", row, k) for i, row in enumerate(rows)]


def _marks(correct: np.ndarray, n_q: int, k: int) -> np.ndarray:
    """``correct`` checked and as booleans. Shape: (n_q, k)."""
    marks = np.asarray(correct)
    if marks.shape != (n_q, k):
        raise ValueError(f"correct must have shape ({n_q}, {k}), got {marks.shape}")
    return marks.astype(bool)


def retrieval_grid(
    queries: np.ndarray,
    neighbors: np.ndarray,
    out: str | Path,
    *,
    query_titles: Sequence[object] | None = None,
    neighbor_titles: Sequence[Sequence[object]] | None = None,
    correct: np.ndarray | None = None,
) -> Path:
    """Draws each query followed by its nearest neighbours, one row per query.

    The query sits in its own column, framed in blue and titled in bold; its neighbours follow
    nearest first, each with its title (e.g. label and distance) underneath. When ``correct``
    is given, a neighbour of the query's class gets a green frame and one of another class a
    red one (with a ✓ / ✗ before its title, for readers who do not tell red from green).

    Args:
        queries: Query images. Shape: (Q, H, W, C), uint8, C 1 or 3.
        neighbors: Their neighbours, nearest first. Shape: (Q, K, H, W, C), uint8.
        out: Path of the PNG to write (parent folders are created).
        query_titles: Q titles, e.g. the queries' class names.
        neighbor_titles: Q rows of K titles.
        correct: Whether each neighbour has its query's class. Shape: (Q, K), bool; None
            draws no frames.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: If shapes, dtypes or title counts do not match.
    """
    queries = _check_images("queries", queries, 4)
    neighbors = _check_images("neighbors", neighbors, 5)
    n_q, height, width, channels = queries.shape
    if n_q == 0:
        raise ValueError("retrieval_grid needs at least one query")
    if neighbors.shape[0] != n_q or neighbors.shape[2:] != (height, width, channels):
        raise ValueError(
            f"neighbors must have shape ({n_q}, K, {height}, {width}, {channels}) to match "
            f"queries {queries.shape}, got {neighbors.shape}"
        )
    k = neighbors.shape[1]
    q_titles = _titles("query_titles", query_titles, n_q)
    n_titles = _neighbor_titles(neighbor_titles, n_q, k)
    marks = None if correct is None else _marks(correct, n_q, k)

    labels = [["query", *_wrap(t)] for t in q_titles]
    neighbour_labels = [
        [
            _wrap(("✓ " if marks[i, j] else "✗ ") + t if marks is not None else t)
            for j, t in enumerate(row)
        ]
        for i, row in enumerate(n_titles)
    ]
    n_lines = max(
        max(len(lines) for lines in labels),
        max((len(lines) for row in neighbour_labels for lines in row), default=0),
    )
    cell_w, cell_h = _CELL, _CELL * height / width
    row_h = cell_h + n_lines * _LINE + 0.25
    fig_w = 2 * _MARGIN + (k + 1) * cell_w + _QUERY_GAP + max(k - 1, 0) * _COL_GAP
    fig_h = _MARGIN + _HEADER + n_q * row_h
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI, facecolor="white")

    def axes_at(x: float, row: int) -> Axes:
        top = _HEADER + row * row_h
        return fig.add_axes((x / fig_w, 1 - (top + cell_h) / fig_h, cell_w / fig_w, cell_h / fig_h))

    first_x = _MARGIN + cell_w + _QUERY_GAP
    fig.text(
        (_MARGIN + cell_w / 2) / fig_w, 1 - _HEADER / 2 / fig_h, "query",
        ha="center", va="center", fontsize=_FONT + 1, fontweight="bold", color=QUERY_COLOR,
    )  # fmt: skip
    if k:
        fig.text(
            first_x / fig_w, 1 - _HEADER / 2 / fig_h,
            f"its {k} nearest neighbours, nearest first  →",
            ha="left", va="center", fontsize=_FONT + 1,
        )  # fmt: skip
    for i in range(n_q):
        ax = axes_at(_MARGIN, i)
        show_image(ax, queries[i])
        _frame(ax, QUERY_COLOR)
        ax.set_xlabel(
            "\n".join(_wrap(q_titles[i])),
            fontsize=_FONT, fontweight="bold", color=QUERY_COLOR, linespacing=1.1,
        )  # fmt: skip
        for j in range(k):
            ax = axes_at(first_x + j * (cell_w + _COL_GAP), i)
            show_image(ax, neighbors[i, j])
            if marks is None:  # a thin edge, so a near-white picture still shows its extent
                _frame(ax, PLAIN_COLOR, PLAIN_WIDTH)
            else:
                _frame(ax, CORRECT_COLOR if marks[i, j] else WRONG_COLOR)
            ax.set_xlabel("\n".join(neighbour_labels[i][j]), fontsize=_FONT, linespacing=1.1)
    return _save(fig, out)


# ------------------------------------------------------------------------------ gallery


def gallery(
    rows: Sequence[tuple[str, np.ndarray, Sequence[str]]],
    out: str | Path,
    *,
    header: str = "",
) -> Path:
    """Rows of thumbnails, each row named on its left (a cluster, a near-duplicate group).

    Args:
        rows: ``(name, tiles, captions)`` per row: the row's name (may hold line breaks),
            its tiles (Shape: (M, H, W, C), uint8, M >= 1; every row the same H, W, C) and M
            captions written under them (e.g. file names).
        out: Path of the PNG to write.
        header: A line above the first row.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: For no rows, or mismatched shapes or caption counts.
    """
    if not rows:
        raise ValueError("gallery needs at least one row")
    checked: list[tuple[str, np.ndarray, list[list[str]]]] = []
    for i, (name, tiles, captions) in enumerate(rows):
        tiles = _check_images(f"rows[{i}] tiles", tiles, 4)
        if len(tiles) == 0:
            raise ValueError(f"rows[{i}] has no tiles")
        if checked and tiles.shape[1:] != checked[0][1].shape[1:]:
            raise ValueError(f"rows[{i}] tiles have shape {tiles.shape[1:]}, unlike row 0's")
        caps = [_wrap(c) for c in _titles(f"rows[{i}] captions", captions, len(tiles))]
        checked.append((str(name), tiles, caps))
    height, width = checked[0][1].shape[1:3]
    n_cols = max(len(t) for _, t, _ in checked)
    label_w = 1.5
    cell_w, cell_h = _CELL, _CELL * height / width
    n_lines = max(max((len(c) for c in caps), default=1) for _, _, caps in checked)
    row_h = cell_h + n_lines * _LINE + 0.3
    top_h = _HEADER if header else 0.1
    fig_w = _MARGIN + label_w + n_cols * cell_w + max(n_cols - 1, 0) * _COL_GAP + _MARGIN
    fig_h = top_h + len(checked) * row_h + _MARGIN
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI, facecolor="white")
    if header:
        fig.text(_MARGIN / fig_w, 1 - _HEADER / 2 / fig_h, header,
                 ha="left", va="center", fontsize=_FONT + 1)  # fmt: skip
    for r, (name, tiles, caps) in enumerate(checked):
        top = top_h + r * row_h
        y = 1 - (top + cell_h) / fig_h
        fig.text(
            (_MARGIN + label_w - 0.15) / fig_w, y + cell_h / 2 / fig_h, name,
            ha="right", va="center", fontsize=_FONT + 1, fontweight="bold", linespacing=1.3,
        )  # fmt: skip
        for j, tile in enumerate(tiles):
            x = _MARGIN + label_w + j * (cell_w + _COL_GAP)
            ax = fig.add_axes((x / fig_w, y, cell_w / fig_w, cell_h / fig_h))
            show_image(ax, tile)
            _frame(ax, PLAIN_COLOR, PLAIN_WIDTH)
            ax.set_xlabel("\n".join(caps[j]), fontsize=_FONT, linespacing=1.1)
    return _save(fig, out)


# -------------------------------------------------------------- nearest-neighbour distances


def distance_histogram(
    distances: np.ndarray,
    out: str | Path,
    *,
    threshold: float | None = None,
    title: str = "",
) -> Path:
    """A histogram of each image's distance to its nearest other image.

    Args:
        distances: Squared distances, one per image. Shape: (N,), N >= 1.
        out: Path of the PNG to write.
        threshold: The near-duplicate threshold, drawn as a dashed line when given.
        title: Title above the plot.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: For no distances, or distances that are not finite.
    """
    d = np.asarray(distances, dtype=np.float64).ravel()
    if not len(d) or not np.isfinite(d).all():
        raise ValueError("distance_histogram needs at least one finite distance")
    fig = Figure(figsize=(8.5, 4.2), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    top = float(max(d.max(), threshold or 0.0))
    bins = np.linspace(0.0, top if top > 0 else 1.0, 41).tolist()
    ax.hist(d, bins=bins, color="#4c72b0", edgecolor="white", linewidth=0.5)
    if threshold is not None:
        below = int((d < threshold).sum())
        ax.axvline(
            threshold, color="#d73027", linestyle="--", linewidth=1.3,
            label=f"near-duplicate threshold {threshold:.3g}: {below} of {len(d)} images closer",
        )  # fmt: skip
        ax.legend(loc="upper right", frameon=False, fontsize=9)
    ax.set_xlabel("squared distance to the nearest other image (d²)")
    ax.set_ylabel("images")
    ax.set_title(title, fontsize=12, loc="left")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out)


# ------------------------------------------------------------------------------ colours


def class_colors(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct colours, the same for a class in every picture (tab10, tab20, turbo)."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](v) for v in np.linspace(0.05, 0.95, n)]


def _save(fig: Figure, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, facecolor="white")
    return out


# ------------------------------------------------------------------------ training curves


def training_curves(history: Sequence[Mapping[str, Any]], out: str | Path) -> Path:
    """One panel per loss component, train and validation per epoch.

    Args:
        history: Per-epoch records as in ``metrics.jsonl``: ``{"epoch": int, "train":
            {part: value}, "val": {part: value} or None, ...}``.
        out: Path of the PNG to write.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: If the history holds no losses.
    """
    from matplotlib.ticker import MaxNLocator

    parts: list[str] = []
    for record in history:
        for side in ("train", "val"):
            for name in record.get(side) or {}:
                if name not in parts:
                    parts.append(name)
    if not parts:
        raise ValueError("the run's history holds no losses to plot (is metrics.jsonl empty?)")
    # The total first, then its parts in the order training logged them.
    parts.sort(key=lambda p: p != "loss")
    ncols = min(3, len(parts))
    nrows = -(-len(parts) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    epochs = sorted({int(r["epoch"]) for r in history})
    for ax, part in zip(axes.flat, parts, strict=False):
        for side, label, color, marker in (
            ("train", "train", "#1f77b4", "o"),
            ("val", "validation", "#ff7f0e", "s"),
        ):
            points = [
                (int(r["epoch"]), float(r[side][part]))
                for r in history
                if part in (r.get(side) or {})
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, color=color, marker=marker, markersize=4, label=label)
        ax.set_title(part, fontsize=11)
        ax.set_xlabel("epoch")
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
            ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, frameon=False)
    for ax in list(axes.flat)[len(parts) :]:
        ax.set_visible(False)
    return _save(fig, out)


# ------------------------------------------------------------------------------ 2-D map


def embedding_map(
    points: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    out: str | Path,
    *,
    title: str = "",
) -> Path:
    """A scatter plot of 2-D map coordinates, one colour per class, with a legend.

    Args:
        points: Map coordinates. Shape: (N, 2).
        labels: Class per point, -1 for unknown (drawn grey). Shape: (N,).
        class_names: Name of each class index.
        out: Path of the PNG to write.
        title: Title above the map.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: On mismatched shapes.
    """
    points = np.asarray(points, dtype=np.float64)
    labels = np.asarray(labels)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(labels):
        raise ValueError(
            f"points must have shape (N, 2) and labels (N,), got {points.shape} and {labels.shape}"
        )
    colors = class_colors(len(class_names))
    fig = Figure(figsize=(8.5, 6.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    # Small dots for big samples, so dense regions stay readable.
    size = float(np.clip(6000 / max(len(points), 1), 6, 30))
    if (labels < 0).any():
        sel = labels < 0
        ax.scatter(
            points[sel, 0],
            points[sel, 1],
            s=size,
            color="#bbbbbb",
            label="unlabelled",
            linewidths=0,
        )
    # A seeded shuffle draws the classes interleaved: no class hides under the one drawn last.
    order = np.random.default_rng(0).permutation(len(points))
    order = order[labels[order] >= 0]
    if len(order):
        ax.scatter(
            points[order, 0],
            points[order, 1],
            s=size,
            c=[colors[int(c)] for c in labels[order]],
            linewidths=0,
            alpha=0.85,
        )
    present = sorted({int(c) for c in labels if c >= 0})
    handles = [
        Line2D(
            [], [], marker="o", linestyle="", markersize=8, color=colors[c], label=class_names[c]
        )
        for c in present
    ]
    if (labels < 0).any() and handles:
        handles.append(
            Line2D(
                [], [], marker="o", linestyle="", markersize=8, color="#bbbbbb", label="unlabelled"
            )
        )
    if handles:
        ax.legend(
            handles=handles,
            title="class",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
            fontsize=10,
            ncols=1 if len(handles) <= 25 else 2,
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=12)
    return _save(fig, out)


# ------------------------------------------------------------------------ reconstructions


def reconstruction_pairs(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    out: str | Path,
    *,
    titles: Sequence[str] | None = None,
) -> Path:
    """Originals on the top row, the model's reconstructions of them underneath.

    Args:
        originals: Images. Shape: (N, H, W, C), uint8.
        reconstructions: The same images decoded. Shape: (N, H, W, C), uint8.
        out: Path of the PNG to write.
        titles: N titles drawn above the originals, e.g. class names.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: On mismatched shapes.
    """
    originals = _check_images("originals", originals, 4)
    reconstructions = _check_images("reconstructions", reconstructions, 4)
    if originals.shape != reconstructions.shape or len(originals) == 0:
        raise ValueError(
            f"originals and reconstructions must have one non-empty shape, got "
            f"{originals.shape} and {reconstructions.shape}"
        )
    n, height, width, _ = originals.shape
    names = _titles("titles", titles, n)
    label_w = 1.65
    cell_w, cell_h = 1.1, 1.1 * height / width
    fig_w = label_w + n * (cell_w + _COL_GAP) + _MARGIN
    fig_h = 2 * (cell_h + 0.15) + 0.45 + _MARGIN
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI, facecolor="white")
    for row, (images, name) in enumerate(
        ((originals, "original"), (reconstructions, "reconstruction"))
    ):
        top = 0.4 + row * (cell_h + 0.15)
        y = 1 - (top + cell_h) / fig_h
        fig.text(
            (label_w - 0.12) / fig_w, y + cell_h / 2 / fig_h, name,
            ha="right", va="center", fontsize=_FONT + 1, fontweight="bold",
        )  # fmt: skip
        for i in range(n):
            x = label_w + i * (cell_w + _COL_GAP)
            ax = fig.add_axes((x / fig_w, y, cell_w / fig_w, cell_h / fig_h))
            show_image(ax, images[i])
            _frame(ax, "#888888")
            if row == 0 and names[i]:
                ax.set_title(_wrap(names[i])[0], fontsize=_FONT)
    return _save(fig, out)


# ---------------------------------------------------------------------------- contingency


def contingency_heatmap(
    counts: np.ndarray,
    class_names: Sequence[str],
    cluster_ids: Sequence[int],
    out: str | Path,
    *,
    title: str = "",
) -> Path:
    """Classes against (matched) clusters: cells coloured by share of the class, counts written.

    Args:
        counts: ``counts[i, j]`` items of class i in the j-th cluster shown, clusters already
            in matched order (see :func:`~latentsearch.report.analysis.matched_contingency`).
            Shape: (n_classes, n_clusters).
        class_names: Row labels.
        cluster_ids: The original id of each column's cluster.
        out: Path of the PNG to write.
        title: Title above the map.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: On mismatched shapes.
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape != (len(class_names), len(cluster_ids)):
        raise ValueError(
            f"counts must have shape ({len(class_names)}, {len(cluster_ids)}), got {counts.shape}"
        )
    n_rows, n_cols = counts.shape
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = float(np.clip(0.6 * max(n_rows, n_cols), 4.5, 14))
    fig = Figure(figsize=(side + 2.2, side + 0.8), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    if n_rows * n_cols <= 900:
        font = 9 if max(n_rows, n_cols) <= 12 else 7
        for i in range(n_rows):
            for j in range(n_cols):
                # Zeros are faint, so the counts that matter stand out.
                color = "#b0b0b0" if counts[i, j] == 0 else "#222222"
                if share[i, j] > 0.55:
                    color = "white"
                ax.text(
                    j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=font,
                    color=color,
                )  # fmt: skip
    ax.set_yticks(range(n_rows), [str(c) for c in class_names])
    ax.set_xticks(range(n_cols), [str(c) for c in cluster_ids])
    ax.set_ylabel("true class")
    ax.set_xlabel("KMeans cluster id (columns ordered to match the classes)")
    ax.set_title(title, fontsize=12)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the class's images")
    return _save(fig, out)


# ------------------------------------------------------------------- per-class precision


def per_class_bars(
    class_names: Sequence[str],
    values: np.ndarray,
    overall: float,
    out: str | Path,
    *,
    metric: str = "precision@10",
) -> Path:
    """One bar per class, a dashed line for the value over all queries.

    Args:
        class_names: Bar labels.
        values: Value per class, NaN where it is undefined (no bar). Shape: (C,).
        overall: The value over all queries.
        out: Path of the PNG to write.
        metric: Name on the y axis.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: On mismatched shapes.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(class_names),):
        raise ValueError(f"values must have shape ({len(class_names)},), got {values.shape}")
    n = len(values)
    fig = Figure(figsize=(float(np.clip(0.7 * n + 2, 6, 18)), 4.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    shown = np.nan_to_num(values, nan=0.0)
    ax.bar(range(n), shown, color=class_colors(n), edgecolor="#333333", linewidth=0.5)
    ax.axhline(
        overall, color="#333333", linestyle="--", linewidth=1.2, label=f"all queries: {overall:.3f}"
    )
    # Above the axes, so it never covers a bar or its value.
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)
    if n <= 30:
        for i, v in enumerate(values):
            ax.text(i, shown[i] + 0.01, "n/a" if np.isnan(v) else f"{v:.2f}",
                    ha="center", va="bottom", fontsize=8,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})  # fmt: skip
    long_names = max((len(str(c)) for c in class_names), default=0) > 6 or n > 12
    ax.set_xticks(
        range(n),
        [str(c) for c in class_names],
        rotation=35 if long_names else 0,
        ha="right" if long_names else "center",
    )
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(metric)
    ax.set_xlabel("query class")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out)
