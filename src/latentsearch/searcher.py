"""Search an index by image from Python: a file path, an array or a PIL image.

A notebook session, on scikit-learn's digits (a tiny run, so it takes seconds):

>>> import tempfile
>>> from pathlib import Path
>>> from latentsearch import open_index
>>> from latentsearch.data import load_data
>>> from latentsearch.index import ImageIndex, all_images
>>> from latentsearch.runs import TrainConfig
>>> from latentsearch.training import train
>>> work = Path(tempfile.mkdtemp())
>>> run = train(TrainConfig(data="digits", epochs=1), work / "run", progress=False)
>>> digits = load_data("digits")
>>> _ = ImageIndex.build(run, all_images(digits), progress=False).save(work / "index")

Open the index (its run is found from the index) and query it with an array:

>>> searcher = open_index(work / "index")
>>> len(searcher)
1797
>>> query = digits.test.pixels[0]               # (8, 8, 1) uint8
>>> hits = searcher.search(query, k=3)
>>> [h.rank for h in hits]
[1, 2, 3]
>>> hits[0].id == digits.test.ids[0]           # the image itself is indexed: distance 0
True
>>> hits[0].distance < 1e-6
True
>>> hits[0].class_name == digits.test.class_names[digits.test.labels[0]]
True

A PIL image or a file path works the same way:

>>> from PIL import Image
>>> Image.fromarray(query[:, :, 0]).save(work / "query.png")
>>> searcher.search(work / "query.png", k=1)[0].id == hits[0].id
True
>>> searcher.search(Image.open(work / "query.png"), k=1)[0].id == hits[0].id
True

Several queries at once give one list per query:

>>> [len(r) for r in searcher.search_many([query, work / "query.png"], k=5)]
[5, 5]

Part of an image: a box ``(x, y, width, height)`` in the original image's pixels is cut out
before the usual resize to the model's input:

>>> len(searcher.search(work / "query.png", k=2, box=(0, 0, 4, 4)))
2
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from latentsearch.data import DataError
from latentsearch.data.images import DEFAULT_MAX_PIXELS, read_image
from latentsearch.errors import LatentsearchError
from latentsearch.runs import RunError

if TYPE_CHECKING:
    from latentsearch.index import ImageIndex, Neighbor
    from latentsearch.runs import Run

Query = str | os.PathLike[str] | bytes | np.ndarray | Image.Image
"""A query image: a file path, a file's bytes (an upload), pixels (H, W, C) or (H, W) as
uint8, or a PIL image."""


Box = tuple[int, int, int, int]
"""Part of a query image: ``(x, y, width, height)`` in the original image's pixels, as it is
shown (after its EXIF orientation), from the top-left corner."""

_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")
"""Modes a cut-out keeps on its way to the decoder; any other (CMYK, YCbCr, ...) becomes RGB."""


class BadBox(LatentsearchError):
    """A box that is not a part of its image: outside it, or of no size."""


def parse_box(text: str) -> Box:
    """A box from its text form ``"x,y,w,h"`` (integers, as the CLI and the server take it).

    Raises:
        BadBox: For anything but four integers, or a width or height below 1.
    """
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 4:
            raise ValueError
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise BadBox(
            f"box: expected x,y,width,height as four integers (pixels), got {text!r}"
        ) from None
    return check_box((x, y, w, h))


def check_box(box: Sequence[int], size: tuple[int, int] | None = None) -> Box:
    """A box checked to have a positive size and, with ``size``, to lie inside the image.

    Args:
        box: ``(x, y, width, height)``.
        size: The image's ``(width, height)``, as shown.

    Raises:
        BadBox: For a box of another form, no size, or reaching outside the image.
    """
    if len(box) != 4 or not all(isinstance(v, int | np.integer) for v in box):
        raise BadBox(f"box: expected four integers x, y, width, height; got {tuple(box)!r}")
    x, y, w, h = (int(v) for v in box)
    if w < 1 or h < 1:
        raise BadBox(f"box: width and height must be at least 1 pixel, got {w}x{h}")
    if x < 0 or y < 0:
        raise BadBox(f"box: x and y must be 0 or more (the top-left corner), got {x},{y}")
    if size is not None:
        width, height = size
        if x + w > width or y + h > height:
            raise BadBox(
                f"box {x},{y},{w},{h} reaches outside the {width}x{height} image "
                f"(x + width at most {width}, y + height at most {height})"
            )
    return x, y, w, h


def _query_array(query: np.ndarray) -> np.ndarray:
    """A query array as (H, W, C), checked. Shape: (H, W), (H, W, 1) or (H, W, 3), uint8.

    Raises:
        DataError: For another shape or type.
    """
    arr = query[:, :, None] if query.ndim == 2 else query
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise DataError(f"a query array must be (H, W), (H, W, 1) or (H, W, 3); got {query.shape}")
    if arr.dtype != np.uint8:
        raise DataError(f"a query array must be uint8 (0-255), got {arr.dtype}")
    return arr


class RunMoved(RunError):
    """The run an index records is no longer where it was when the index was built.

    Attributes:
        index: The index folder.
        location: Where the index says its run is.
    """

    def __init__(self, index: Path, location: Path, parameter: str = "run") -> None:
        self.index = index
        self.location = location
        super().__init__(
            f"the run that built {index} is no longer at {location}: pass its new location "
            f"(`{parameter}`)"
        )

    def naming(self, parameter: str) -> RunMoved:
        """The same error for a caller whose run argument has another name (``run_path``)."""
        return RunMoved(self.index, self.location, parameter)


class Searcher:
    """An index and the run that built it, ready to answer queries by image.

    The one query side: ``latentsearch search`` and the server's service wrap it.

    Args:
        index: A loaded index.
        run: The run that built it (checked against the index's fingerprint).
    """

    def __init__(self, index: ImageIndex, run: Run) -> None:
        index.check_compatible(run)
        self.index = index
        self.run = run

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"Searcher({len(self):,} images, run {self.run.path})"

    def pixels(
        self, query: Query, *, max_pixels: int = DEFAULT_MAX_PIXELS, box: Box | None = None
    ) -> np.ndarray:
        """A query decoded as the index's images were.

        Args:
            query: The query image.
            max_pixels: Largest width x height of an image file accepted, checked from its
                header before decoding (the server passes its stricter upload limit).
            box: Only this part of the image, ``(x, y, width, height)`` in its original pixels
                (as shown, after the EXIF orientation); cut out before the resize.

        Returns:
            Pixels at the run's size. Shape: (H, W, C), uint8.

        Raises:
            DataError: For a file that is missing or not an image, bytes that are not one, an
                image over ``max_pixels``, or an array of a bad shape or type.
            BadBox: For a box outside the image or of no size.
        """
        if box is not None:
            try:
                return self.pixels(self._cut(query, box, max_pixels=max_pixels))
            except (BadBox, DataError) as e:
                if isinstance(query, str | os.PathLike) and not str(e).startswith("query "):
                    raise type(e)(f"query {query}: {e}") from None  # a search may have several
                raise
        model = self.run.model
        size, channels = model.image_size, model.in_channels
        if isinstance(query, bytes):
            return read_image(query, size, channels=channels, max_pixels=max_pixels)
        if isinstance(query, Image.Image):
            buf = io.BytesIO()
            query.save(buf, format="PNG")
            return read_image(buf.getvalue(), size, channels=channels)
        if isinstance(query, np.ndarray):
            arr = _query_array(query)
            if arr.shape == (size, size, channels):
                return arr
            image = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
            return self.pixels(image)
        path = Path(query)
        if not path.is_file():
            raise DataError(f"query {path}: no such file")
        try:
            return read_image(path, size, channels=channels, max_pixels=max_pixels)
        except DataError as e:  # name the file: a search may have several queries
            raise DataError(f"query {path}: {e}") from None

    def _cut(self, query: Query, box: Box, *, max_pixels: int) -> Image.Image:
        """The part ``box`` of a query, as an image in a mode the decoder takes."""
        box = check_box(box)
        if isinstance(query, np.ndarray):
            arr = _query_array(query)
            x, y, w, h = check_box(box, (arr.shape[1], arr.shape[0]))
            cut = np.ascontiguousarray(arr[y : y + h, x : x + w])
            return Image.fromarray(cut[:, :, 0] if cut.shape[2] == 1 else cut)
        if isinstance(query, Image.Image):
            image = ImageOps.exif_transpose(query)
        else:
            source: str | os.PathLike[str] | io.BytesIO
            source = io.BytesIO(query) if isinstance(query, bytes) else Path(query)
            if not isinstance(source, io.BytesIO) and not Path(source).is_file():
                raise DataError(f"query {source}: no such file")
            try:
                with Image.open(source) as opened:
                    width, height = opened.size
                    if width * height > max_pixels:
                        raise DataError(
                            f"image too large: {width}x{height} = {width * height:,} pixels, "
                            f"more than max_pixels={max_pixels:,}"
                        )
                    image = ImageOps.exif_transpose(opened)
                    image.load()
            except (DataError, BadBox):
                raise
            except Exception as e:  # Pillow raises many types on bad data
                raise DataError(f"cannot read the image to cut a box from it ({e})") from None
        x, y, w, h = check_box(box, image.size)
        part = image.crop((x, y, x + w, y + h))
        if part.mode not in _PNG_MODES:
            part = part.convert("RGB")
        return part

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """Query images embedded as the indexed ones were (same run, same precision).

        Args:
            pixels: Images from :meth:`pixels`. Shape: (Q, H, W, C), uint8.

        Returns:
            Shape: (Q, D), float32.
        """
        return self.index.embed_queries(self.run, pixels)

    def nearest(self, vectors: np.ndarray, k: int) -> list[list[Neighbor]]:
        """The ``k`` nearest indexed images of each query embedding, one list per query.

        Args:
            vectors: Query embeddings from :meth:`embed`. Shape: (Q, D).
            k: Neighbours per query (capped at the number of indexed images).
        """
        return self.index.search_vectors(vectors, k)

    def neighbors_of(self, item_id: str, k: int) -> list[Neighbor]:
        """The ``k`` nearest images of an indexed one, from its stored embedding (nothing is
        decoded or embedded; the item itself is among them).

        Raises:
            UnknownItem: For an id the index does not hold.
        """
        return self.index.neighbors_of(item_id, k)

    def search(self, query: Query, k: int = 10, *, box: Box | None = None) -> list[Neighbor]:
        """The ``k`` indexed images nearest to one query, nearest first.

        Each :class:`~latentsearch.index.Neighbor` carries its rank, id, path, label, class
        name and squared Euclidean distance.

        Args:
            query: The query image.
            k: Neighbours to return.
            box: Search with only this part of it, ``(x, y, width, height)`` in its original
                pixels (see :meth:`pixels`).

        Raises:
            BadBox: For a box outside the image or of no size.
        """
        return self.search_many([query], k, box=box)[0]

    def search_many(
        self, queries: Sequence[Query], k: int = 10, *, box: Box | None = None
    ) -> list[list[Neighbor]]:
        """The ``k`` nearest indexed images of each query, one list per query.

        Args:
            queries: The query images.
            k: Neighbours per query.
            box: The same part of each query (see :meth:`pixels`); None for the whole image.
        """
        if not queries:
            return []
        batch = np.stack([self.pixels(q, box=box) for q in queries])
        return self.nearest(self.embed(batch), k)


def open_index(path: str | os.PathLike[str], run: str | os.PathLike[str] | None = None) -> Searcher:
    """Opens an index folder (from ``latentsearch index`` or ``up``) for searching.

    Args:
        path: The index folder.
        run: The run folder that built it (default: the one the index names).

    Raises:
        ImageIndexError: For a folder that is not an index, or a run that did not build it.
        RunMoved: When ``run`` is not given and the run the index names is gone.
        RunError: For a run folder that cannot be read.
    """
    from latentsearch.index import ImageIndex
    from latentsearch.runs import load_run

    index = ImageIndex.load(Path(path))
    if run is None:
        run = index.run_path
        if not run.exists():  # say so before load_run's "no run at" hides that it moved
            raise RunMoved(Path(path), run)
    return Searcher(index, load_run(Path(run)))
