"""The report's pictures: valid PNGs, frames in the right colours, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentsearch.report import figures
from latentsearch.report.figures import retrieval_grid


def _rgb(color: str) -> np.ndarray:
    return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])


def _mask(image: np.ndarray, color: str, tol: int = 12) -> np.ndarray:
    """Pixels within ``tol`` of ``color`` in every channel. Shape: (H, W)."""
    return (np.abs(image[..., :3].astype(int) - _rgb(color)) <= tol).all(axis=-1)


def _columns(mask: np.ndarray) -> tuple[int, int]:
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols.min()), int(cols.max())


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


@pytest.fixture
def grey_grid() -> tuple[np.ndarray, np.ndarray]:
    """One grey 8×8 query and two grey neighbours: only frames and text carry colour."""
    queries = np.full((1, 8, 8, 1), 128, dtype=np.uint8)
    neighbors = np.full((1, 2, 8, 8, 1), 128, dtype=np.uint8)
    return queries, neighbors


def test_retrieval_grid_frames_right_neighbours_green_and_wrong_ones_red(
    tmp_path: Path, grey_grid: tuple[np.ndarray, np.ndarray]
) -> None:
    queries, neighbors = grey_grid
    out = retrieval_grid(
        queries,
        neighbors,
        tmp_path / "grid.png",
        query_titles=["cat"],
        neighbor_titles=[["cat\nd²=0.1", "dog\nd²=0.2"]],
        correct=np.array([[True, False]]),
    )
    assert out == tmp_path / "grid.png"
    image = _load(out)
    query = _mask(image, figures.QUERY_COLOR)
    green = _mask(image, figures.CORRECT_COLOR)
    red = _mask(image, figures.WRONG_COLOR)
    assert query.sum() > 200 and green.sum() > 200 and red.sum() > 200
    # Query first, then the right neighbour, then the wrong one, each frame about one
    # thumbnail (135 px) wide.
    (q0, q1), (g0, g1), (r0, r1) = _columns(query), _columns(green), _columns(red)
    assert q1 < g0 and g1 < r0
    for lo, hi in ((q0, q1), (g0, g1), (r0, r1)):
        assert 120 <= hi - lo <= 160
    # Inside the green frame the image is the grey thumbnail, upscaled.
    rows = np.flatnonzero(green.any(axis=1))
    centre = image[(rows.min() + rows.max()) // 2, (g0 + g1) // 2]
    assert np.all(np.abs(centre.astype(int) - 128) <= 2)


def test_retrieval_grid_without_correct_draws_no_green_or_red_frames(
    tmp_path: Path, grey_grid: tuple[np.ndarray, np.ndarray]
) -> None:
    queries, neighbors = grey_grid
    image = _load(retrieval_grid(queries, neighbors, tmp_path / "grid.png"))
    assert not _mask(image, figures.CORRECT_COLOR).any()
    assert not _mask(image, figures.WRONG_COLOR).any()
    assert _mask(image, figures.QUERY_COLOR).sum() > 200


def test_retrieval_grid_draws_colour_images_and_keeps_small_ones_legible(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    queries = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    neighbors = rng.integers(0, 256, (3, 5, 4, 4, 3), dtype=np.uint8)
    out = retrieval_grid(
        queries,
        neighbors,
        tmp_path / "sub" / "grid.png",
        query_titles=["a rather long class name indeed"] * 3,
        neighbor_titles=[["automobile, distance 12.3456"] * 5] * 3,
        correct=np.zeros((3, 5), dtype=bool),
    )
    image = _load(out)
    h, w, _ = image.shape
    # Six 4-pixel-wide images per row, each drawn at about 135 px.
    assert 6 * 120 < w < 6 * 200 and 3 * 135 < h < 3 * 300
    assert image.std() > 20


@pytest.mark.parametrize(
    ("queries", "neighbors", "kwargs", "message"),
    [
        (np.zeros((1, 8, 8, 1)), np.zeros((1, 2, 8, 8, 1), np.uint8), {}, "uint8"),
        (np.zeros((1, 8, 8), np.uint8), np.zeros((1, 2, 8, 8, 1), np.uint8), {}, "(Q, H, W, C)"),
        (np.zeros((1, 8, 8, 1), np.uint8), np.zeros((2, 2, 8, 8, 1), np.uint8), {}, "match"),
        (np.zeros((1, 8, 8, 1), np.uint8), np.zeros((1, 2, 8, 8, 1), np.uint8),
         {"correct": np.ones((1, 3), bool)}, "correct must have shape (1, 2)"),
        (np.zeros((1, 8, 8, 1), np.uint8), np.zeros((1, 2, 8, 8, 1), np.uint8),
         {"query_titles": ["a", "b"]}, "query_titles must have 1"),
        (np.zeros((1, 8, 8, 1), np.uint8), np.zeros((1, 2, 8, 8, 1), np.uint8),
         {"neighbor_titles": [["a"]]}, "neighbor_titles[0] must have 2"),
    ],
)  # fmt: skip
def test_retrieval_grid_rejects_bad_input_clearly(
    tmp_path: Path,
    queries: np.ndarray,
    neighbors: np.ndarray,
    kwargs: dict[str, object],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        retrieval_grid(queries, neighbors, tmp_path / "x.png", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "x.png").exists()


def test_training_curves_draw_one_panel_per_loss_component(tmp_path: Path) -> None:
    history = [
        {"epoch": e, "train": {"loss": 1 / e, "mse": 0.5 / e, "hint": 0.5 / e},
         "val": {"loss": 1.2 / e, "mse": 0.6 / e, "hint": 0.6 / e}}
        for e in (1, 2, 3)
    ]  # fmt: skip
    image = _load(figures.training_curves(history, tmp_path / "curves.png"))
    h, w, _ = image.shape
    assert w > 2.5 * h  # three panels side by side
    assert image.std() > 5
    with pytest.raises(ValueError, match="no losses"):
        figures.training_curves([], tmp_path / "empty.png")


def test_embedding_map_colours_each_class_as_its_legend_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    points = rng.normal(size=(90, 2)) + labels[:, None] * 10
    image = _load(figures.embedding_map(points, labels, ["a", "b", "c"], tmp_path / "m.png"))
    for color in figures.class_colors(3):
        hex_color = "#" + "".join(f"{round(v * 255):02x}" for v in color[:3])
        assert _mask(image, hex_color, tol=25).sum() > 20


def test_contingency_heatmap_and_bars_are_valid_pictures(tmp_path: Path) -> None:
    counts = np.array([[5, 1], [0, 4]])
    for path in (
        figures.contingency_heatmap(counts, ["a", "b"], [1, 0], tmp_path / "c.png"),
        figures.per_class_bars(["a", "b"], np.array([0.5, np.nan]), 0.5, tmp_path / "b.png"),
        figures.reconstruction_pairs(
            np.zeros((3, 8, 8, 3), np.uint8),
            np.full((3, 8, 8, 3), 255, np.uint8),
            tmp_path / "r.png",
            titles=["x", "y", "z"],
        ),
    ):
        assert _load(path).std() > 5
    with pytest.raises(ValueError, match="counts must have shape"):
        figures.contingency_heatmap(counts, ["a"], [0, 1], tmp_path / "bad.png")


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        ("Dragonfly__grey.jpg", ["Dragonfly__grey.jpg"]),
        ("Picture_0B__jpeg15.jpg", ["Picture_0B__jpeg15.", "jpg"]),
        ("IMG_20230412_153000_HDR.jpg", ["IMG_20230412_153000_", "HDR.jpg"]),
        ("a" * 30 + ".png", ["a" * 21, "a" * 9 + ".png"]),
    ],
)
def test_file_names_under_thumbnails_break_at_separators(name: str, lines: list[str]) -> None:
    assert figures._wrap(name) == lines
    assert "".join(figures._wrap(name)) == name


def test_a_gallery_names_its_rows_and_refuses_ragged_tiles(tmp_path: Path) -> None:
    tiles = np.zeros((2, 16, 16, 3), np.uint8)
    out = figures.gallery([("group 1\n2 images", tiles, ["a.jpg", "b.jpg"])], tmp_path / "g.png")
    with Image.open(out) as im:
        assert im.format == "PNG"
    with pytest.raises(ValueError, match="captions must have 2 entries"):
        figures.gallery([("g", tiles, ["a.jpg"])], tmp_path / "h.png")
    with pytest.raises(ValueError, match="unlike row 0"):
        figures.gallery(
            [("g", tiles, ["a", "b"]), ("h", np.zeros((1, 8, 8, 3), np.uint8), ["c"])],
            tmp_path / "i.png",
        )
    with pytest.raises(ValueError, match="at least one row"):
        figures.gallery([], tmp_path / "j.png")


def test_white_pictures_without_verdicts_still_show_their_edges(tmp_path: Path) -> None:
    white = np.full((1, 16, 16, 3), 255, np.uint8)
    out = retrieval_grid(white, white[:, None].repeat(3, axis=1), tmp_path / "g.png")
    image = _load(out)
    edge = _mask(image, figures.PLAIN_COLOR, tol=20)
    assert _mask(image, figures.CORRECT_COLOR).sum() == 0  # no verdict frames
    # Three thin frames, one per neighbour, each about a 144-px square's outline.
    assert edge.sum() > 3 * 4 * 130
