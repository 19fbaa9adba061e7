"""The search server: a FastAPI app over one saved index and the run that built it.

>>> app = create_app("photos.index")          # loads the index and its run once
>>> uvicorn.run(app, host="127.0.0.1", port=8000)

Routes (JSON unless said otherwise; every error is ``{"detail": "a sentence"}`` with a 4xx):

- ``GET /``: the search page (``static/``); ``GET /docs``, ``GET /redoc``: the OpenAPI docs,
  their scripts served from this server (no CDN: they work offline).
- ``POST /search``: multipart ``image`` (+ ``k`` as a form field or query parameter).
- ``GET /items/{id}/neighbors?k=`` (or ``POST /search/{id}?k=``): search with an indexed
  image, using its stored embedding (nothing is decoded or uploaded again).
- ``GET /items/{id}``: metadata; ``GET /items/{id}/image``: the indexed image, only while the
  file's bytes still have the SHA-256 recorded at indexing (else 404), as PNG, JPEG, GIF,
  WebP or BMP with that fixed type (other formats re-encoded as PNG), ``nosniff`` and a CSP
  that lets nothing in it run.
- ``GET /random?k=``: a random indexed image and its neighbours; ``GET /health``.
- ``GET /clusters``: the groups of the run's cluster head (``latentsearch cluster``) and their
  sizes; ``GET /clusters/{c}?offset=&limit=``: a group's images, most probable first. With a
  head, items, neighbours and uploaded queries carry their ``cluster``; without one, these
  routes answer 404 and ``/health`` says how to train a head.

Ids are the index's ids (paths relative to the indexed folder, slashes included, any
character escaped in the URL, newlines too). A file is served only when its id is in the
index's manifest: no part of a request is ever joined to a file-system path. Uploads are
decoded at most ``max_decodes`` at a time, reduced as early as the format allows, and the
memory of a big decode is handed back to the system afterwards.

``allowed_hosts`` refuses requests whose ``Host`` header names another host (400): against
DNS rebinding, a page elsewhere reaching a server on this machine through a name it controls.

Requests run in FastAPI's thread pool, several at once. ``latentsearch serve`` therefore
limits torch and FAISS to one thread per request (``--threads``); a program that runs this
app itself should do the same (``torch.set_num_threads(1)``, ``faiss.omp_set_num_threads(1)``),
see ``benchmarks/README.md``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.resources
import io
import os
import secrets
import stat
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from latentsearch.data import DataError, read_image
from latentsearch.errors import ConfigError, LatentsearchError
from latentsearch.index import (
    ImageIndex,
    IndexItem,
    Neighbor,
    StoredPixelsUnavailable,
    UnknownItem,
)
from latentsearch.runs import Run, RunError, load_run
from latentsearch.server import schemas
from latentsearch.server.clusters import ServedClusters, load_served_clusters
from latentsearch.server.limits import (
    DEFAULT_K,
    DEFAULT_MAX_DECODES,
    DEFAULT_MAX_K,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MAX_UPLOAD_PIXELS,
)

MULTIPART_OVERHEAD = 64 * 1024
"""Room for boundaries, part headers and the ``k`` field around an upload of the largest size."""

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The page: ``index.html``, ``style.css``, ``app.js``; no external resources."""

PAGE_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""The page loads nothing from elsewhere, so the browser may refuse anything that tries."""

IMAGE_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
"""Sent with every served image: opened on its own, nothing in it may run or load."""

SERVED_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
}
"""Formats served as they are (browsers show them); any other is re-encoded as PNG."""

MAX_SERVED_BYTES = 256 * 1024 * 1024
"""Largest indexed file ``/items/{id}/image`` reads to check and serve (404 above)."""

REENCODED_MAX_SIDE = 4096
"""Re-encoded images (TIFF, ...) are shrunk to fit this many pixels per side."""

BIG_DECODE_PIXELS = 4_000_000
"""After decoding an image this large, freed memory is handed back to the system."""

CLUSTER_PAGE = 50
"""Images per page of a cluster, unless ``limit`` says otherwise (at most ``max_k``)."""

DOCS_ASSETS = "/docs-assets"
"""Where Swagger UI's and ReDoc's scripts are served from (the ``fastapi-offline`` package)."""


class _AnyPath(Convertor[str]):
    """A path parameter that takes every character, newlines included (``{id:path}`` does not:
    its pattern ``.*`` stops at a newline)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("any_path", _AnyPath())

KQuery = Annotated[
    int | None,
    Query(ge=1, description="neighbours to return (default 10, at most max_k: see /health)"),
]
KForm = Annotated[
    int | None,
    Form(alias="k", ge=1, description="neighbours to return; wins over the query parameter"),
]
ItemId = Annotated[str, PathParam(description="an indexed id, slashes included")]

_NOT_IMAGE = "not an image this server can read; upload a PNG, JPEG, GIF, BMP, TIFF or WebP file"


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:g} MiB" if n >= 1024 * 1024 else f"{n:,} bytes"


def _quoted(item_id: str) -> str:
    """An id as a URL path: slashes stay (the routes take ``{id:path}``), the rest is escaped."""
    return quote(item_id, safe="/")


def _probe(data: bytes) -> tuple[str, int, int]:
    """Format, width and height from an image's header, without decoding its pixels.

    Tells a non-image (415) and a too-large image (413) apart from a corrupt one (422), which
    ``read_image`` alone reports with the same exception.

    Raises:
        HTTPException: 415 when Pillow does not recognise the bytes as an image, 413 for
            Pillow's own decompression-bomb limit, 422 for a damaged header.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            return str(img.format or "unknown"), int(img.size[0]), int(img.size[1])
    except Image.UnidentifiedImageError:
        raise HTTPException(415, _NOT_IMAGE) from None
    except Image.DecompressionBombError as e:
        raise HTTPException(413, f"image too large: {e}") from None
    except Exception as e:  # Pillow raises many types on a damaged header
        raise HTTPException(422, f"corrupt image header ({type(e).__name__}: {e})") from None


def release_memory() -> None:
    """Hands memory freed by a big decode back to the system (glibc keeps it otherwise).

    Each request thread gets its own malloc arena; without this, a few large decodes in
    parallel leave gigabytes held by the process long after the requests ended.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _docs_assets() -> Path | None:
    """The folder of Swagger UI's and ReDoc's files from ``fastapi-offline``, if installed."""
    try:
        folder = Path(str(importlib.resources.files("fastapi_offline") / "static"))
    except (ImportError, TypeError):
        return None
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _content_disposition(filename: str) -> str:
    """``inline`` with the file name, RFC 6266 style (any character, safely quoted)."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"inline; filename=\"{ascii_name}\"; filename*=utf-8''{quote(filename, safe='')}"


def _png(pixels: np.ndarray) -> bytes:
    """Pixels as a PNG file. Shape: (H, W, C), uint8, C 1 or 3."""
    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class SearchService:
    """The index, the run and the limits behind the routes.

    Everything here runs in FastAPI's thread pool (the routes are plain functions), so slow
    decoding and embedding never block the event loop; the index is safe to search from
    several threads.

    Attributes:
        index: The loaded index.
        run: The run that built it.
        max_upload_bytes: Largest accepted upload.
        max_pixels: Largest accepted width x height.
        max_k: Most neighbours per request.
        max_decodes: Most images decoded at the same time (uploads and re-encodings); more
            requests wait for a free slot, so memory stays bounded under any load.
        clusters: The groups of the run's cluster head, None without one.
        clusters_note: Where the groups come from, or why there are none.
    """

    def __init__(
        self,
        index: ImageIndex,
        run: Run,
        *,
        max_upload_bytes: int,
        max_pixels: int,
        max_k: int,
        max_decodes: int = DEFAULT_MAX_DECODES,
        clusters: ServedClusters | None = None,
        clusters_note: str = "clusters not loaded",
    ) -> None:
        self.index = index
        self.run = run
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.max_k = max_k
        self.max_decodes = max_decodes
        self._decodes = threading.BoundedSemaphore(max_decodes)
        self.class_names = index.class_names
        self.clusters = clusters
        self.clusters_note = clusters_note

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
        body = {
            "id": item.id,
            "label": item.label,
            "class_name": self.index.class_name(item.label),
            "filename": None if item.path is None else os.path.basename(item.path),
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
            label=n.label,
            class_name=n.class_name,
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
            HTTPException: 404 for an id the index does not hold.
        """
        try:
            return self.index.item(item_id)
        except UnknownItem:
            raise HTTPException(404, f"no item with id {item_id!r} in this index") from None

    def image(self, item_id: str) -> Response:
        """The item's image: its indexed file's bytes, checked, or a PNG for array sources.

        The bytes are served only when their SHA-256 is the one recorded at indexing: a file
        changed since, or a path now a link to something else, is refused, so the server
        only ever sends what it indexed as an image. The content type comes from the format
        Pillow reads in those bytes, never from the file name.

        Raises:
            HTTPException: 404 for an unknown id, a file gone or changed since indexing.
        """
        item = self.item(item_id)
        headers = {
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": IMAGE_SECURITY_POLICY,
            "Cache-Control": "max-age=300",
        }
        if item.path is None:
            try:
                pixels = self.index.stored_pixels(item.id)
            except StoredPixelsUnavailable as e:
                raise HTTPException(404, str(e)) from None
            return Response(_png(pixels), media_type="image/png", headers=headers)
        data = self._indexed_bytes(item)
        try:
            with Image.open(io.BytesIO(data)) as img:
                fmt = str(img.format or "")
        except Exception:  # indexed as an image, so it was one; be safe anyway
            raise HTTPException(404, f"the file of item {item.id!r} is not an image") from None
        media_type = SERVED_FORMATS.get(fmt)
        if media_type is None:
            data, media_type = self._reencode(item.id, data), "image/png"
        headers["Content-Disposition"] = _content_disposition(os.path.basename(item.path))
        return Response(data, media_type=media_type, headers=headers)

    def _indexed_bytes(self, item: IndexItem) -> bytes:
        """The bytes of an item's file, when they are still those that were indexed.

        Raises:
            HTTPException: 404 when the file is gone, not a regular file, too large, or
                changed since indexing (or was unreadable then).
        """
        assert item.path is not None
        gone = HTTPException(404, f"the file of item {item.id!r} is gone since indexing")
        if item.sha256 is None:
            raise HTTPException(
                404, f"item {item.id!r} was indexed without a content hash: it cannot be checked"
            )
        try:
            with open(item.path, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise gone
                if st.st_size > MAX_SERVED_BYTES:
                    raise HTTPException(
                        404, f"the file of item {item.id!r} is too large to serve here"
                    )
                data = f.read(MAX_SERVED_BYTES + 1)
        except OSError:
            raise gone from None
        if len(data) > MAX_SERVED_BYTES or hashlib.sha256(data).hexdigest() != item.sha256:
            raise HTTPException(
                404,
                f"the file of item {item.id!r} changed since it was indexed; bring the index "
                "up to date with `latentsearch index RUN IMAGES --update INDEX`",
            )
        return data

    def _reencode(self, item_id: str, data: bytes) -> bytes:
        """An image in a format browsers do not show (TIFF, ...) as a PNG, bounded in size.

        Raises:
            HTTPException: 404 when it cannot be decoded here.
        """
        _, width, height = _probe(data)
        if width * height > self.max_pixels:
            raise HTTPException(404, f"item {item_id!r} is too large to convert for display")
        buf = io.BytesIO()
        with self._decodes:
            try:
                with Image.open(io.BytesIO(data)) as img:
                    img.draft("RGB", (REENCODED_MAX_SIDE, REENCODED_MAX_SIDE))
                    img.thumbnail((REENCODED_MAX_SIDE, REENCODED_MAX_SIDE))
                    out = img if img.mode in ("RGB", "RGBA", "L", "LA") else img.convert("RGBA")
                    out.save(buf, format="PNG")
            except Exception as e:  # Pillow raises many types on bad data
                raise HTTPException(
                    404, f"item {item_id!r} cannot be converted for display ({type(e).__name__})"
                ) from None
            finally:
                if width * height >= BIG_DECODE_PIXELS:
                    release_memory()
        return buf.getvalue()

    # ------------------------------------------------------------------------ search
    def read_upload(self, upload: UploadFile) -> bytes:
        """The uploaded bytes, read only up to one byte past the limit.

        Raises:
            HTTPException: 413 for a larger upload, 422 for an empty one.
        """
        data = upload.file.read(self.max_upload_bytes + 1)
        if len(data) > self.max_upload_bytes:
            raise HTTPException(
                413, f"upload too large: the limit is {_mib(self.max_upload_bytes)} per image"
            )
        if not data:
            raise HTTPException(422, "empty upload: the image field holds no bytes")
        return data

    def search_upload(self, upload: UploadFile, k: int, prefix: str) -> schemas.SearchResult:
        """Decodes an uploaded image like the indexed ones and returns its nearest images.

        Raises:
            HTTPException: 413 (too many bytes or pixels), 415 (not an image), 422 (empty,
                corrupt).
        """
        started = time.perf_counter()
        data = self.read_upload(upload)
        fmt, width, height = _probe(data)
        if width * height > self.max_pixels:
            raise HTTPException(
                413,
                f"image too large: {width}x{height} = {width * height:,} pixels, more than "
                f"this server's limit of {self.max_pixels:,}",
            )
        model = self.run.model
        with self._decodes:
            try:
                pixels = read_image(
                    data, model.image_size, channels=model.in_channels, max_pixels=self.max_pixels
                )
            except DataError as e:
                raise HTTPException(422, f"cannot decode the image: {e}") from None
            finally:
                if width * height >= BIG_DECODE_PIXELS:
                    release_memory()
        vectors = self.index.embed_queries(self.run, pixels[None])
        neighbors = self.index.search_vectors(vectors, k)[0]
        query = schemas.UploadQuery(
            filename=upload.filename,
            content_type=upload.content_type,
            bytes=len(data),
            format=fmt,
            width=width,
            height=height,
        )
        if self.clusters is not None:
            cluster, probability = self.clusters.assign_queries(vectors, pixels[None], self.run)
            query.cluster = int(cluster[0])
            query.cluster_probability = round(float(probability[0]), 4)
            query.cluster_url = f"{prefix}/clusters/{query.cluster}"
        return self._result(query, k, neighbors, started, prefix)

    def search_item(self, item_id: str, k: int, prefix: str) -> schemas.SearchResult:
        """The nearest images of an indexed one, from its stored embedding.

        Raises:
            HTTPException: 404 for an unknown id.
        """
        started = time.perf_counter()
        item = self.item(item_id)
        neighbors = self.index.neighbors_of(item.id, k)
        query = schemas.ItemQuery(**self.item_json(item, prefix))
        return self._result(query, k, neighbors, started, prefix)

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
            class_names=self.class_names,
            default_k=min(DEFAULT_K, self.max_k),
            max_k=self.max_k,
            max_upload_bytes=self.max_upload_bytes,
            max_pixels=self.max_pixels,
            clusters=0 if self.clusters is None else self.clusters.n_clusters,
            clusters_note=self.clusters_note,
        )

    # ------------------------------------------------------------------------ clusters
    def _served_clusters(self) -> ServedClusters:
        """The clusters, or a 404 that says how to get them."""
        if self.clusters is None:
            raise HTTPException(404, f"this server has no clusters ({self.clusters_note})")
        return self.clusters

    def cluster_list(self, prefix: str) -> schemas.ClusterList:
        """Every group of the cluster head with its size.

        Raises:
            HTTPException: 404 without clusters.
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
            HTTPException: 404 without clusters or for a cluster the head does not have.
        """
        clusters = self._served_clusters()
        if cluster >= clusters.n_clusters:
            raise HTTPException(
                404,
                f"no cluster {cluster}: the head has {clusters.n_clusters} "
                f"(0 to {clusters.n_clusters - 1})",
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


class UploadLimit:
    """ASGI middleware: refuses request bodies over ``max_body_size`` bytes with a JSON 413.

    A declared ``Content-Length`` over the limit is refused before any byte is read; without
    one (chunked uploads), bytes are counted as they arrive and reading stops at the first
    byte over the limit, so no request can make the server buffer more than that.
    """

    def __init__(self, app: ASGIApp, max_body_size: int, message: str) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_size:
            response = JSONResponse({"detail": self.message}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_size:
                    # Raised inside body parsing, so the app's handler turns it into JSON.
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, limited, send)


def _host_name(header: str) -> str:
    """The host of a ``Host`` header, port and IPv6 brackets removed, lower case."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _host_allowed(host: str, allowed: Sequence[str]) -> bool:
    for pattern in allowed:
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


class HostCheck:
    """ASGI middleware: refuses requests whose ``Host`` is not allowed, with a JSON 400.

    Patterns are host names or addresses (``localhost``, ``::1``, ``photos.example.org``),
    ``*.example.org`` for any subdomain, or ``*`` for any host.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.allowed = [_host_name(h) if h != "*" else h for h in allowed_hosts]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host", "")
        if not _host_allowed(_host_name(header), self.allowed):
            shown = header[:100] or "(none)"
            response = JSONResponse(
                {
                    "detail": f"host {shown!r} is not allowed here; this server answers to "
                    f"{', '.join(self.allowed)} (latentsearch serve --allowed-host adds one)"
                },
                status_code=400,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def load_service(
    index_path: str | Path,
    run_path: str | Path | None = None,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
    max_k: int = DEFAULT_MAX_K,
    max_decodes: int = DEFAULT_MAX_DECODES,
    clusters: bool = True,
) -> SearchService:
    """Loads an index and its run and checks that they belong together.

    Args:
        index_path: An index folder from ``latentsearch index``.
        run_path: The run that built it; None for the one the index records.
        max_upload_bytes: Largest accepted upload, >= 1.
        max_pixels: Largest accepted width x height of an upload, >= 1.
        max_k: Most neighbours per request, >= 1.
        max_decodes: Most images decoded at once, >= 1.
        clusters: Serve the groups of the run's cluster head, when it has one that fits the
            index (a head fine-tuned with its own encoder re-reads the image files once).

    Raises:
        IndexFormatError: When there is no readable index at ``index_path``.
        RunError: When the run cannot be loaded.
        FingerprintMismatch: When the run did not build the index.
        ConfigError: For limits below 1.
    """
    for name, value in (
        ("max_upload_bytes", max_upload_bytes),
        ("max_pixels", max_pixels),
        ("max_k", max_k),
        ("max_decodes", max_decodes),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(name, f"must be a positive integer, got {value!r}")
    index = ImageIndex.load(index_path)
    if len(index) == 0:
        raise LatentsearchError(f"{index_path} holds no images: nothing to search")
    if run_path is None:
        run_path = index.run_path
        if not Path(run_path).exists():
            raise RunError(
                f"the run that built {index_path} is no longer at {run_path}: pass its new "
                "location (`run_path`)"
            )
    run = load_run(run_path)
    index.check_compatible(run)
    served, note = (None, "clusters off (asked for)")
    if clusters:
        served, note = load_served_clusters(index, run)
    return SearchService(
        index,
        run,
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        max_k=max_k,
        max_decodes=max_decodes,
        clusters=served,
        clusters_note=note,
    )


def _validation_message(errors: Sequence[Any]) -> str:
    """FastAPI's validation errors as one sentence: ``k: Input should be ...; image: ...``."""
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path")]
        parts.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(
    index_path: str | Path,
    run_path: str | Path | None = None,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
    max_k: int = DEFAULT_MAX_K,
    max_decodes: int = DEFAULT_MAX_DECODES,
    allowed_hosts: Sequence[str] | None = None,
    clusters: bool = True,
) -> FastAPI:
    """The search server's app, with the index and run loaded once, now.

    Args:
        index_path: An index folder from ``latentsearch index``.
        run_path: The run that built it; None for the one the index records.
        max_upload_bytes: Largest accepted upload (413 above).
        max_pixels: Largest accepted width x height of an upload (413 above), checked from
            the header before anything is decoded.
        max_k: Most neighbours per request (422 above).
        max_decodes: Most uploads decoded at the same time (the others wait).
        allowed_hosts: Host names the ``Host`` header may carry (400 otherwise), ``*.domain``
            patterns or ``*``; None accepts any. ``latentsearch serve`` passes
            ``LOOPBACK_HOSTS`` when it listens on a loopback address.
        clusters: Serve the groups of the run's cluster head (see :func:`load_service`).

    Returns:
        The app; its ``state.service`` is the :class:`SearchService`.

    Raises:
        IndexFormatError: When there is no readable index at ``index_path``.
        RunError: When the run cannot be loaded.
        FingerprintMismatch: When the run is not the one that built the index.
        ConfigError: For limits below 1.
    """
    service = load_service(
        index_path,
        run_path,
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        max_k=max_k,
        max_decodes=max_decodes,
        clusters=clusters,
    )
    default_k = min(DEFAULT_K, max_k)
    app = FastAPI(
        title="latentsearch",
        summary="Search a folder of images by image.",
        description=f"{len(service.index):,} images indexed with a "
        f"{service.index.fingerprint.get('model')} model. Errors are "
        '`{"detail": "a sentence"}` with a 4xx status.',
        version="1",
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    too_large = f"upload too large: the limit is {_mib(max_upload_bytes)} per image"
    app.add_middleware(
        UploadLimit, max_body_size=max_upload_bytes + MULTIPART_OVERHEAD, message=too_large
    )
    if allowed_hosts is not None:
        if not allowed_hosts:
            raise ConfigError("allowed_hosts", "is empty: no request could be answered")
        app.add_middleware(HostCheck, allowed_hosts=list(allowed_hosts))
    errors: dict[int | str, dict[str, Any]] = {
        404: {"model": schemas.Problem, "description": "no such item"},
        422: {"model": schemas.Problem, "description": "bad parameter"},
    }
    upload_errors: dict[int | str, dict[str, Any]] = {
        413: {"model": schemas.Problem, "description": "too many bytes or pixels"},
        415: {"model": schemas.Problem, "description": "not an image"},
        422: {"model": schemas.Problem, "description": "empty or corrupt image, bad k"},
    }

    def chosen_k(*ks: int | None) -> int:
        """The first ``k`` given (form field before query), checked against ``max_k``."""
        k = next((k for k in ks if k is not None), default_k)
        if k > max_k:
            raise HTTPException(422, f"k: at most {max_k} neighbours per request, got {k}")
        return k

    def prefix(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    # ------------------------------------------------------------------------ errors
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        slim = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
        return JSONResponse(
            {"detail": _validation_message(exc.errors()), "errors": slim}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such page: see /docs for the API"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    def metadata_fallback(item_id: str, suffix: str, request: Request) -> JSONResponse | None:
        # ``/items/a/image`` is the image of "a", unless "a" is unknown and "a/image" is an
        # indexed id (a file named "image" in folder "a"): then it is that item's metadata.
        whole = f"{item_id}/{suffix}"
        if service.has(item_id) or not service.has(whole):
            return None
        return JSONResponse(service.item_json(service.item(whole), prefix(request)))

    # ------------------------------------------------------------------------ search
    @app.post(
        "/search",
        response_model=schemas.SearchResult,
        responses=upload_errors,
        summary="Search with an uploaded image",
    )
    def search(
        request: Request,
        image: Annotated[UploadFile, File(description="the query image (PNG, JPEG, ...)")],
        k_form: KForm = None,
        k: KQuery = None,
    ) -> schemas.SearchResult:
        """Decodes the image as the indexed ones were and returns its nearest indexed images.

        ``k`` may come as a form field or a query parameter (the form field wins).
        """
        return service.search_upload(image, chosen_k(k_form, k), prefix(request))

    @app.get(
        "/items/{item_id:any_path}/neighbors",
        response_model=schemas.SearchResult,
        responses=errors,
        summary="Search with an indexed image",
    )
    def item_neighbors(request: Request, item_id: ItemId, k: KQuery = None) -> Any:
        """The nearest images of an indexed image, found from its stored embedding."""
        fallback = metadata_fallback(item_id, "neighbors", request)
        if fallback is not None:
            return fallback
        return service.search_item(item_id, chosen_k(k), prefix(request))

    @app.post(
        "/search/{item_id:any_path}",
        response_model=schemas.SearchResult,
        responses=errors,
        summary="Search with an indexed image (same as GET /items/{id}/neighbors)",
    )
    def search_item(request: Request, item_id: ItemId, k: KQuery = None) -> schemas.SearchResult:
        """The nearest images of an indexed image, found from its stored embedding."""
        return service.search_item(item_id, chosen_k(k), prefix(request))

    @app.get(
        "/random",
        response_model=schemas.SearchResult,
        responses=errors,
        summary="Search with a random indexed image",
    )
    def random_query(request: Request, k: KQuery = None) -> schemas.SearchResult:
        """An indexed image drawn at random, and its nearest images."""
        return service.search_item(service.random_id(), chosen_k(k), prefix(request))

    # ------------------------------------------------------------------------ clusters
    @app.get(
        "/clusters",
        response_model=schemas.ClusterList,
        responses={404: {"model": schemas.Problem, "description": "no cluster head"}},
        summary="The groups of the run's cluster head",
    )
    def cluster_list(request: Request) -> schemas.ClusterList:
        """Every group the run's cluster head (``latentsearch cluster``) finds, with its size."""
        return service.cluster_list(prefix(request))

    @app.get(
        "/clusters/{cluster}",
        response_model=schemas.ClusterPage,
        responses=errors,
        summary="The images of one group",
    )
    def cluster_page(
        request: Request,
        cluster: Annotated[int, PathParam(ge=0, description="the group's number")],
        offset: Annotated[int, Query(ge=0, description="images to skip")] = 0,
        limit: Annotated[
            int | None, Query(ge=1, description="images to return (default 50, at most max_k)")
        ] = None,
    ) -> schemas.ClusterPage:
        """A group's images, most probable first, ``limit`` at a time."""
        if limit is None:
            limit = min(CLUSTER_PAGE, max_k)
        elif limit > max_k:
            raise HTTPException(422, f"limit: at most {max_k} images per request, got {limit}")
        return service.cluster_page(cluster, offset, limit, prefix(request))

    # ------------------------------------------------------------------------ items
    @app.get(
        "/items/{item_id:any_path}/image",
        responses={
            200: {"content": {"image/*": {}}, "description": "the image file"},
            404: errors[404],
        },
        response_class=Response,
        summary="The indexed image file",
    )
    def item_image(request: Request, item_id: ItemId) -> Any:
        """The indexed file itself (array sources: a PNG of the stored pixels)."""
        fallback = metadata_fallback(item_id, "image", request)
        if fallback is not None:
            return fallback
        return service.image(item_id)

    @app.get(
        "/items/{item_id:any_path}",
        response_model=schemas.Item,
        responses=errors,
        summary="An indexed image's metadata",
    )
    def item(request: Request, item_id: ItemId) -> Any:
        """Id, label, class name and file name of an indexed image, with its URLs."""
        return service.item_json(service.item(item_id), prefix(request))

    @app.get("/health", response_model=schemas.Health, summary="What is served, and the limits")
    def health() -> schemas.Health:
        """Number of images, model, input size, classes, and the request limits."""
        return service.health()

    # ------------------------------------------------------------------------ the page
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html",
            headers={"Content-Security-Policy": PAGE_SECURITY_POLICY, "Cache-Control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_docs(app, prefix)
    return app


def _add_docs(app: FastAPI, prefix: Any) -> None:
    """``/docs`` (Swagger UI) and ``/redoc``, their scripts served by this app, not a CDN."""
    assets = _docs_assets()
    if assets is not None:
        app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    def asset(request: Request, name: str, cdn: str) -> str:
        return f"{prefix(request)}{DOCS_ASSETS}/{name}" if assets is not None else cdn

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{prefix(request)}{app.openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=asset(
                request,
                "swagger-ui-bundle.js",
                "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js",
            ),
            swagger_css_url=asset(
                request,
                "swagger-ui.css",
                "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css",
            ),
            swagger_favicon_url=f"{prefix(request)}/static/favicon.svg",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=f"{prefix(request)}{app.openapi_url}",
            title=f"{app.title} API",
            redoc_js_url=asset(
                request,
                "redoc.standalone.js",
                "https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js",
            ),
            redoc_favicon_url=f"{prefix(request)}/static/favicon.svg",
            with_google_fonts=False,
        )
