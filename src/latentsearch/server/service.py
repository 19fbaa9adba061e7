"""The server's work without HTTP: a :class:`~latentsearch.Searcher`, the limits and the
clusters, answering in the API's JSON bodies (:mod:`~latentsearch.server.schemas`).

Everything here runs in FastAPI's thread pool (the routes are plain functions), so slow
decoding and embedding never block the event loop; the index is safe to search from several
threads. Refusals raise :mod:`~latentsearch.server.errors`, which the routes turn into 4xx.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

import numpy as np

from latentsearch.data import DataError, ImageTooLarge
from latentsearch.data.files import printable
from latentsearch.errors import LatentsearchError
from latentsearch.index import IndexItem, Neighbor, StoredPixelsUnavailable, UnknownItem
from latentsearch.searcher import BadBox, Box, RunMoved, Searcher, open_index, parse_box
from latentsearch.server import schemas
from latentsearch.server.clusters import ServedClusters, load_served_clusters
from latentsearch.server.errors import NotFound, TooLarge, Unprocessable
from latentsearch.server.files import (
    BIG_DECODE_PIXELS,
    ServedImage,
    indexed_bytes,
    probe,
    release_memory,
    served_image,
)
from latentsearch.server.limits import ServeLimits

if TYPE_CHECKING:
    from latentsearch.index import ImageIndex
    from latentsearch.runs import Run

CLUSTER_PAGE = 50
"""Images per page of a cluster, unless ``limit`` says otherwise (at most ``max_k``)."""

ITEMS_PAGE = 50
"""Images per page of ``GET /items``, unless ``limit`` says otherwise (at most ``max_k``)."""


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:g} MiB" if n >= 1024 * 1024 else f"{n:,} bytes"


def too_large(limits: ServeLimits) -> str:
    """The message for an upload over the byte limit (the service's and the middleware's)."""
    return f"upload too large: the limit is {_mib(limits.max_upload_bytes)} per image"


def _quoted(item_id: str) -> str:
    """An id as a URL path: slashes stay (the routes take ``{id:path}``), the rest is escaped."""
    return quote(item_id, safe="/")


class SearchService:
    """The searcher, the limits and the clusters behind the routes.

    Args:
        searcher: The index and the run that built it.
        limits: What requests may ask for.
        clusters: The groups of the run's cluster head, None without one.
        clusters_note: Where the groups come from, or why there are none.
    """

    def __init__(
        self,
        searcher: Searcher,
        limits: ServeLimits,
        *,
        clusters: ServedClusters | None = None,
        clusters_note: str = "clusters not loaded",
    ) -> None:
        self.searcher = searcher
        self.limits = limits
        self.clusters = clusters
        self.clusters_note = clusters_note
        # Folder names of an index built without labels are places, not classes: never shown.
        self.labelled = searcher.index.labelled
        # Uploads and re-encodings share these slots, so memory stays bounded under any load.
        self._decodes = threading.BoundedSemaphore(limits.max_decodes)

    @property
    def index(self) -> ImageIndex:
        """The served index (the searcher's)."""
        return self.searcher.index

    @property
    def run(self) -> Run:
        """The run that built it (the searcher's)."""
        return self.searcher.run

    # ------------------------------------------------------------------------ parameters
    def k(self, *ks: int | None) -> int:
        """The first ``k`` given (form field before query), else the default; at most max_k.

        Raises:
            Unprocessable: Above ``max_k``.
        """
        k = next((k for k in ks if k is not None), self.limits.default_k)
        if k > self.limits.max_k:
            raise Unprocessable(f"k: at most {self.limits.max_k} neighbours per request, got {k}")
        return k

    def page_limit(self, limit: int | None, default: int = CLUSTER_PAGE) -> int:
        """Images per page: ``limit``, else ``default``; at most max_k.

        Raises:
            Unprocessable: Above ``max_k``.
        """
        max_k = self.limits.max_k
        if limit is None:
            return min(default, max_k)
        if limit > max_k:
            raise Unprocessable(f"limit: at most {max_k} images per request, got {limit}")
        return limit

    def box(self, text: str | None) -> Box | None:
        """A box from its text form ``x,y,w,h``, None when not given.

        Raises:
            Unprocessable: For anything but four integers with a positive width and height.
        """
        if text is None or not text.strip():
            return None
        try:
            return parse_box(text)
        except BadBox as e:
            raise Unprocessable(str(e)) from None

    # ------------------------------------------------------------------------ JSON
    def item_json(
        self, item: IndexItem, prefix: str, position: int | None = None
    ) -> dict[str, Any]:
        """An item's public metadata, with URLs under ``prefix`` (the app's root path).

        Args:
            item: The item.
            prefix: The app's root path.
            position: The item's position in the index, when known (else looked up).
        """
        url = f"{prefix}/items/{_quoted(item.id)}"
        label = item.label if self.labelled else -1
        body = {
            "id": item.id,
            "label": label,
            "class_name": self.index.class_name(label),
            "filename": None if item.path is None else printable(os.path.basename(item.path)),
            "sha256": item.sha256,
            "image_url": f"{url}/image",
            "item_url": url,
            "neighbors_url": f"{url}/neighbors",
        }
        if self.clusters is not None:
            at = self.index.position(item.id) if position is None else position
            cluster = int(self.clusters.assignment[at])
            body["cluster"] = cluster
            body["cluster_probability"] = round(float(self.clusters.probability[at]), 4)
            body["cluster_url"] = f"{prefix}/clusters/{cluster}"
        return body

    def _neighbor_json(self, n: Neighbor, prefix: str) -> schemas.Neighbor:
        url = f"{prefix}/items/{_quoted(n.id)}"
        return schemas.Neighbor(
            rank=n.rank,
            id=n.id,
            label=n.label if self.labelled else -1,
            class_name=n.class_name if self.labelled else None,
            filename=None if n.path is None else printable(os.path.basename(n.path)),
            distance=n.distance,
            image_url=f"{url}/image",
            item_url=url,
            neighbors_url=f"{url}/neighbors",
            cluster=None if self.clusters is None else int(self.clusters.assignment[n.position]),
        )

    def _result(
        self,
        query: schemas.UploadQuery | schemas.ItemQuery,
        k: int,
        neighbors: Sequence[Neighbor],
        started: float,
        prefix: str,
    ) -> schemas.SearchResult:
        return schemas.SearchResult(
            query=query,
            k=k,
            neighbors=[self._neighbor_json(n, prefix) for n in neighbors],
            milliseconds=round((time.perf_counter() - started) * 1000.0, 3),
        )

    # ------------------------------------------------------------------------ lookups
    def has(self, item_id: str) -> bool:
        """Whether the index holds this id."""
        try:
            self.index.position(item_id)
        except UnknownItem:
            return False
        return True

    def item(self, item_id: str) -> IndexItem:
        """The indexed item with this id.

        Raises:
            NotFound: For an id the index does not hold.
        """
        try:
            return self.index.item(item_id)
        except UnknownItem:
            raise NotFound(f"no item with id {item_id!r} in this index") from None

    def image(self, item_id: str) -> ServedImage:
        """The item's image: its indexed file's bytes, checked, or a PNG for array sources.

        Raises:
            NotFound: For an unknown id, a file gone or changed since indexing.
        """
        return served_image(
            self.index,
            self.item(item_id),
            max_pixels=self.limits.max_pixels,
            decodes=self._decodes,
        )

    # ------------------------------------------------------------------------ search
    def read_upload(self, file: BinaryIO) -> bytes:
        """An upload's bytes, read only up to one byte past the limit.

        Raises:
            TooLarge: For a larger upload.
            Unprocessable: For an empty one.
        """
        data = file.read(self.limits.max_upload_bytes + 1)
        if len(data) > self.limits.max_upload_bytes:
            raise TooLarge(too_large(self.limits))
        if not data:
            raise Unprocessable("empty upload: the image field holds no bytes")
        return data

    def search_upload(
        self,
        file: BinaryIO,
        k: int,
        prefix: str,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        box: Box | None = None,
    ) -> schemas.SearchResult:
        """Decodes an uploaded image like the indexed ones and returns its nearest images.

        Args:
            file: The upload.
            k: Neighbours to return.
            prefix: The app's root path.
            filename: The upload's name, as the client sent it.
            content_type: Its type, as the client sent it.
            box: Search with only this part of it (original pixels, as shown).

        Raises:
            TooLarge: Too many bytes or pixels.
            NotAnImage: Not an image.
            Unprocessable: Empty or corrupt, or a box outside the image.
        """
        started = time.perf_counter()
        data = self.read_upload(file)
        fmt, width, height = probe(data)
        max_pixels = self.limits.max_pixels
        if width * height > max_pixels:
            raise TooLarge(
                f"image too large: {width}x{height} = {width * height:,} pixels, more than "
                f"this server's limit of {max_pixels:,}"
            )
        pixels = self._decode(data, box, big=width * height >= BIG_DECODE_PIXELS)
        vectors = self.searcher.embed(pixels)
        neighbors = self.searcher.nearest(vectors, k)[0]
        query = schemas.UploadQuery(
            filename=filename,
            content_type=content_type,
            bytes=len(data),
            format=fmt,
            width=width,
            height=height,
            box=None if box is None else list(box),
        )
        self._place(query, vectors, pixels, prefix)
        return self._result(query, k, neighbors, started, prefix)

    def _decode(self, data: bytes | np.ndarray, box: Box | None, *, big: bool) -> np.ndarray:
        """A query decoded (the part ``box`` of it) in one of the shared decode slots.

        Returns:
            Shape: (1, H, W, C), uint8.

        Raises:
            Unprocessable: Corrupt, or a box outside the image.
            TooLarge: Its pixels would take more memory than one decode may.
        """
        with self._decodes:
            try:
                return self.searcher.pixels(data, max_pixels=self.limits.max_pixels, box=box)[None]
            except BadBox as e:
                raise Unprocessable(str(e)) from None
            except ImageTooLarge as e:
                raise TooLarge(str(e)) from None
            except DataError as e:
                raise Unprocessable(f"cannot decode the image: {e}") from None
            finally:
                if big:
                    release_memory()

    def _place(
        self,
        query: schemas.UploadQuery | schemas.ItemQuery,
        vectors: np.ndarray,
        pixels: np.ndarray,
        prefix: str,
    ) -> None:
        """Puts a decoded query in its group of the cluster head, when there is one."""
        if self.clusters is None:
            return
        cluster, probability = self.clusters.assign_queries(vectors, pixels, self.run)
        query.cluster = int(cluster[0])
        query.cluster_probability = round(float(probability[0]), 4)
        query.cluster_url = f"{prefix}/clusters/{query.cluster}"

    def search_item(
        self, item_id: str, k: int, prefix: str, *, box: Box | None = None
    ) -> schemas.SearchResult:
        """The nearest images of an indexed one: from its stored embedding, or with ``box``
        from that part of its original file (read and checked as ``/items/{id}/image`` is).

        Raises:
            NotFound: For an unknown id; with a box, a file gone or changed since indexing.
            Unprocessable: For a box outside the image.
        """
        started = time.perf_counter()
        item = self.item(item_id)
        query = schemas.ItemQuery(**self.item_json(item, prefix))
        if box is None:
            neighbors = self.searcher.neighbors_of(item.id, k)
            return self._result(query, k, neighbors, started, prefix)
        pixels = self._decode(self._original(item), box, big=True)
        vectors = self.searcher.embed(pixels)
        neighbors = self.searcher.nearest(vectors, k)[0]
        query.box = list(box)
        self._place(query, vectors, pixels, prefix)  # the part's group, not the whole image's
        return self._result(query, k, neighbors, started, prefix)

    def _original(self, item: IndexItem) -> bytes | np.ndarray:
        """An item's original: its file's bytes (checked against the indexed hash) or, for
        array sources, its stored pixels.

        Raises:
            NotFound: For a file gone or changed since indexing, or pixels not available.
        """
        if item.path is not None:
            return indexed_bytes(item)
        try:
            return self.index.stored_pixels(item.id)
        except StoredPixelsUnavailable as e:
            raise NotFound(str(e)) from None

    def random_id(self) -> str:
        """The id of an indexed image drawn uniformly at random."""
        return self.index.items[secrets.randbelow(len(self.index))].id

    def health(self) -> schemas.Health:
        """What is served, and the limits."""
        model = self.run.model
        return schemas.Health(
            items=len(self.index),
            model=str(self.index.fingerprint.get("model")),
            image_size=model.image_size,
            channels=model.in_channels,
            embedding_dim=self.index.embedding_dim,
            index_type=self.index.index_type,
            class_names=self.index.class_names if self.labelled else [],
            labelled=self.labelled,
            default_k=self.limits.default_k,
            max_k=self.limits.max_k,
            max_upload_bytes=self.limits.max_upload_bytes,
            max_pixels=self.limits.max_pixels,
            clusters=0 if self.clusters is None else self.clusters.n_clusters,
            clusters_note=self.clusters_note,
        )

    def items_page(self, offset: int, limit: int, prefix: str) -> schemas.ItemPage:
        """Images ``offset`` to ``offset + limit`` of the index, in its order; empty past the
        end. Only those items are looked at, so a page costs the same on any index size."""
        n = len(self.index)
        start = min(offset, n)
        page = self.index.items[start : start + limit]
        items = [schemas.Item(**self.item_json(it, prefix, start + i)) for i, it in enumerate(page)]
        end = start + len(page)
        return schemas.ItemPage(
            total=n,
            offset=offset,
            limit=limit,
            items=items,
            next_url=f"{prefix}/items?offset={end}&limit={limit}" if end < n else None,
        )

    # ------------------------------------------------------------------------ clusters
    def _served_clusters(self) -> ServedClusters:
        """The clusters, or a refusal that says how to get them."""
        if self.clusters is None:
            raise NotFound(f"this server has no clusters ({self.clusters_note})")
        return self.clusters

    def cluster_list(self, prefix: str) -> schemas.ClusterList:
        """Every group of the cluster head with its size.

        Raises:
            NotFound: Without clusters.
        """
        clusters = self._served_clusters()
        return schemas.ClusterList(
            items=len(self.index),
            clusters=[
                schemas.ClusterSummary(cluster=c, size=len(m), url=f"{prefix}/clusters/{c}")
                for c, m in enumerate(clusters.members)
            ],
        )

    def cluster_page(
        self, cluster: int, offset: int, limit: int, prefix: str
    ) -> schemas.ClusterPage:
        """Images ``offset`` to ``offset + limit`` of a group, most probable first.

        Raises:
            NotFound: Without clusters or for a cluster the head does not have.
        """
        clusters = self._served_clusters()
        if cluster >= clusters.n_clusters:
            raise NotFound(
                f"no cluster {cluster}: the head has {clusters.n_clusters} "
                f"(0 to {clusters.n_clusters - 1})"
            )
        members = clusters.members[cluster]
        page = members[offset : offset + limit]
        items = [schemas.Item(**self.item_json(self.index.items[p], prefix, int(p))) for p in page]
        end = offset + len(page)
        more = f"{prefix}/clusters/{cluster}?offset={end}&limit={limit}"
        return schemas.ClusterPage(
            cluster=cluster,
            size=len(members),
            offset=offset,
            items=items,
            next_url=more if end < len(members) else None,
        )


def load_service(
    index_path: str | Path,
    run_path: str | Path | None = None,
    *,
    limits: ServeLimits | None = None,
    clusters: bool = True,
) -> SearchService:
    """Opens an index and its run (:func:`~latentsearch.open_index`) for serving.

    Args:
        index_path: An index folder from ``latentsearch index``.
        run_path: The run that built it; None for the one the index records.
        limits: What requests may ask for (default: :class:`ServeLimits`'s defaults).
        clusters: Serve the groups of the run's cluster head, when it has one that fits the
            index (a head fine-tuned with its own encoder re-reads the image files once).

    Raises:
        IndexFormatError: When there is no readable index at ``index_path``.
        RunError: When the run cannot be loaded, or is no longer where the index says.
        FingerprintMismatch: When the run did not build the index.
        LatentsearchError: For an index without images.
    """
    try:
        searcher = open_index(index_path, run_path)
    except RunMoved as e:
        raise e.naming("run_path") from None
    if len(searcher) == 0:
        raise LatentsearchError(f"{index_path} holds no images: nothing to search")
    served, note = (None, "clusters off (asked for)")
    if clusters:
        served, note = load_served_clusters(searcher.index, searcher.run)
    return SearchService(searcher, limits or ServeLimits(), clusters=served, clusters_note=note)
