"""Search results as a picture: query files and their nearest indexed images, as thumbnails.

The drawing is :func:`latentsearch.report.figures.retrieval_grid`'s; this module turns what a
search returns (files, drawn from the files themselves, and items without a file whose pixels
the index reloads) into its tiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latentsearch.data import DataError
from latentsearch.errors import LatentsearchError
from latentsearch.index import ImageIndex, Neighbor, StoredPixelsUnavailable
from latentsearch.report.figures import retrieval_grid
from latentsearch.report.thumbnails import (
    MISSING,
    THUMB,
    Tile,
    original_tile,
    pixel_tile,
    placeholder,
)

GRID_TILE = THUMB
"""Side, in pixels, of each picture in a search grid."""


def file_thumbnail(path: str, size: int = GRID_TILE) -> np.ndarray:
    """An image file as a tile, aspect kept. Shape: (size, size, 3).

    Raises:
        DataError: The file is not a readable image.
    """
    tile = original_tile(path, size=size)
    if tile.status is not None:
        raise DataError(f"{path}: not a readable image ({tile.status})")
    return tile.pixels


def _neighbor_tile(index: ImageIndex, n: Neighbor) -> Tile:
    """The tile of a result: from its file (a placeholder when gone or changed since
    indexing), else from the pixels the index keeps."""
    if n.path is not None:
        return original_tile(n.path, index.items.sha256(n.position))
    try:
        return Tile(pixel_tile(index.stored_pixels(n.id, download=True)))
    except (DataError, StoredPixelsUnavailable):
        return Tile(placeholder(MISSING), n.id, MISSING)


def search_grid(
    out: str | Path,
    index: ImageIndex,
    queries: list[str],
    results: list[list[Neighbor]],
) -> Path:
    """Draws query files beside their results, as ``ImageIndex.search_images`` returns them.

    Every picture is a thumbnail of its file (aspect kept) with the file's name and distance
    under it; a result whose file is gone or changed since indexing is a placeholder that says
    so. When the index was built with labels (``ImageIndex.labelled``) and every query is
    itself an indexed file, its class frames each neighbour green (same class) or red;
    without labels no neighbour is marked right or wrong.

    Args:
        out: The PNG to write.
        index: The index searched.
        queries: The query files.
        results: One list of neighbours per query, nearest first.

    Returns:
        The PNG's path.

    Raises:
        LatentsearchError: No query has a neighbour.
        DataError: A query file is not a readable image.
    """
    k = max((len(r) for r in results), default=0)
    if k == 0:
        raise LatentsearchError("no neighbours to draw")
    labelled = index.labelled
    blank = np.full((GRID_TILE, GRID_TILE, 3), 255, dtype=np.uint8)
    q_tiles = np.stack([file_thumbnail(q) for q in queries])
    n_tiles = np.stack([np.stack([blank] * k)] * len(queries))
    titles = [[""] * k for _ in queries]
    for qi, row in enumerate(results):
        for n in row:
            tile = _neighbor_tile(index, n)
            n_tiles[qi, n.rank - 1] = tile.pixels
            name = (n.class_name if n.class_name is not None else "?") if labelled else ""
            caption = tile.caption or (Path(n.path).name if n.path else n.id)
            titles[qi][n.rank - 1] = "\n".join(
                t for t in (name, f"d²={n.distance:.3g}", caption) if t
            )
    correct = None
    if labelled:
        # A query that is itself an indexed file has a known class: mark neighbours.
        by_path = {it.path: it.label for it in index.items if it.path is not None}
        query_labels = [by_path.get(str(Path(q).resolve()), -1) for q in queries]
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
