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
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from latentsearch.data import DataError
from latentsearch.data.images import DEFAULT_MAX_PIXELS, read_image
from latentsearch.runs import RunError

if TYPE_CHECKING:
    from latentsearch.index import ImageIndex, Neighbor
    from latentsearch.runs import Run

Query = str | os.PathLike[str] | bytes | np.ndarray | Image.Image
"""A query image: a file path, a file's bytes (an upload), pixels (H, W, C) or (H, W) as
uint8, or a PIL image."""


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

    def pixels(self, query: Query, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """A query decoded as the index's images were.

        Args:
            query: The query image.
            max_pixels: Largest width x height of an image file accepted, checked from its
                header before decoding (the server passes its stricter upload limit).

        Returns:
            Pixels at the run's size. Shape: (H, W, C), uint8.

        Raises:
            DataError: For a file that is missing or not an image, bytes that are not one, an
                image over ``max_pixels``, or an array of a bad shape or type.
        """
        model = self.run.model
        size, channels = model.image_size, model.in_channels
        if isinstance(query, bytes):
            return read_image(query, size, channels=channels, max_pixels=max_pixels)
        if isinstance(query, Image.Image):
            buf = io.BytesIO()
            query.save(buf, format="PNG")
            return read_image(buf.getvalue(), size, channels=channels)
        if isinstance(query, np.ndarray):
            arr = query[:, :, None] if query.ndim == 2 else query
            if arr.ndim != 3 or arr.shape[2] not in (1, 3):
                raise DataError(
                    f"a query array must be (H, W), (H, W, 1) or (H, W, 3); got {query.shape}"
                )
            if arr.dtype != np.uint8:
                raise DataError(f"a query array must be uint8 (0-255), got {arr.dtype}")
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

    def search(self, query: Query, k: int = 10) -> list[Neighbor]:
        """The ``k`` indexed images nearest to one query, nearest first.

        Each :class:`~latentsearch.index.Neighbor` carries its rank, id, path, label, class
        name and squared Euclidean distance.
        """
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[Query], k: int = 10) -> list[list[Neighbor]]:
        """The ``k`` nearest indexed images of each query, one list per query."""
        if not queries:
            return []
        batch = np.stack([self.pixels(q) for q in queries])
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
