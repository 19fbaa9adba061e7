"""Search results as a picture: query files and their nearest indexed images, as thumbnails.

The drawing is :func:`latentsearch.report.figures.retrieval_grid`'s; this module turns what a
search returns (files, and items without a file whose pixels the index reloads) into its
tiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from latentsearch.data import DataError, read_image
from latentsearch.errors import LatentsearchError
from latentsearch.index import ImageIndex, Neighbor, StoredPixelsUnavailable
from latentsearch.report.figures import retrieval_grid

GRID_TILE = 96
"""Side, in pixels, of each picture in a search grid."""


def thumbnail(pixels: np.ndarray, size: int = GRID_TILE) -> np.ndarray:
    """Any uint8 image as an RGB square tile. Shape: (H, W, C) -> (size, size, 3)."""
    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)
    if img.size != (size, size):
        # Nearest keeps tiny images (8x8 digits) crisp instead of blurring them.
        img = img.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def file_thumbnail(path: str, size: int = GRID_TILE) -> np.ndarray:
    """An image file as a tile: decoded at most at tile size, small images upscaled crisply.

    Shape: (size, size, 3).

    Raises:
        DataError: The file is not a readable image.
    """
    try:
        with Image.open(path) as img:
            side = max(1, min(*img.size, size))
    except Exception as e:  # Pillow raises many types on bad files; read_image words them
        raise DataError(f"{path}: not a readable image ({e})") from None
    return thumbnail(read_image(path, side, channels=3), size)


def _neighbor_tile(index: ImageIndex, n: Neighbor) -> np.ndarray | None:
    """The tile of a result, None when its image is gone or cannot be reloaded."""
    try:
        if n.path is not None:
            return file_thumbnail(n.path)
        return thumbnail(index.stored_pixels(n.id, download=True))
    except (DataError, StoredPixelsUnavailable):
        return None  # changed or gone since indexing: the tile stays blank


def search_grid(
    out: str | Path,
    index: ImageIndex,
    queries: list[str],
    results: list[list[Neighbor]],
) -> Path:
    """Draws query files beside their results, as ``ImageIndex.search_images`` returns them.

    Results whose image is gone since indexing are left blank. When every query is itself an
    indexed file, its known class frames each neighbour green (same class) or red.

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
    blank = np.full((GRID_TILE, GRID_TILE, 3), 255, dtype=np.uint8)
    q_tiles = np.stack([file_thumbnail(q) for q in queries])
    n_tiles = np.stack([np.stack([blank] * k)] * len(queries))
    titles = [[""] * k for _ in queries]
    for qi, row in enumerate(results):
        for n in row:
            tile = _neighbor_tile(index, n)
            if tile is not None:
                n_tiles[qi, n.rank - 1] = tile
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
