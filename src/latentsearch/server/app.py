"""The search server: a FastAPI app over one saved index and the run that built it.

>>> app = create_app("photos.index")          # loads the index and its run once
>>> uvicorn.run(app, host="127.0.0.1", port=8000)

Routes (JSON unless said otherwise; every error is ``{"detail": "a sentence"}`` with a 4xx):

- ``GET /``: the search page (``static/``); ``GET /docs``: the OpenAPI docs.
- ``POST /search``: multipart ``image`` (+ ``k`` as a form field or query parameter).
- ``GET /items/{id}/neighbors?k=`` (or ``POST /search/{id}?k=``): search with an indexed
  image, using its stored embedding (nothing is decoded or uploaded again).
- ``GET /items/{id}``: metadata; ``GET /items/{id}/image``: the indexed file itself.
- ``GET /random?k=``: a random indexed image and its neighbours; ``GET /health``.

Ids are the index's ids (paths relative to the indexed folder, slashes included). A file is
served only when its id is in the index's manifest: no part of a request is ever joined to a
file-system path.

Requests run in FastAPI's thread pool, several at once. ``latentsearch serve`` therefore
limits torch and FAISS to one thread per request (``--threads``); a program that runs this
app itself should do the same (``torch.set_num_threads(1)``, ``faiss.omp_set_num_threads(1)``),
see ``benchmarks/README.md``.
"""

from __future__ import annotations

import io
import mimetypes
import os
import secrets
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
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from latentsearch.data import DataError, read_image
from latentsearch.index import ImageIndex, IndexItem, Neighbor, UnknownItem
from latentsearch.server import schemas
from latentsearch.server.limits import (
    DEFAULT_K,
    DEFAULT_MAX_K,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
)
from latentsearch.training import Run, RunError, load_run

MULTIPART_OVERHEAD = 64 * 1024
"""Room for boundaries, part headers and the ``k`` field around an upload of the largest size."""

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The page: ``index.html``, ``style.css``, ``app.js``; no external resources."""

PAGE_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""The page loads nothing from elsewhere, so the browser may refuse anything that tries."""

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


def _media_type(path: str) -> str:
    """The content type of an image file, from its content (extensions can lie)."""
    try:
        with Image.open(path) as img:
            mime = Image.MIME.get(img.format or "")
    except Exception:  # unreadable now: fall back on the name
        mime = None
    return mime or mimetypes.guess_type(path)[0] or "application/octet-stream"


class _StoredImages:
    """PNG renderings of items without a file (digits, CIFAR-10 batches, idx files).

    Their pixels come from the ``load_data`` spec the index recorded, loaded once on the first
    request for one.
    """

    def __init__(self, spec: str | None, image_size: int) -> None:
        self._spec = spec
        self._image_size = image_size
        self._lock = threading.Lock()
        self._rows: dict[str, int] | None = None
        self._pixels: np.ndarray | None = None
        self._error: str | None = None

    def _load(self) -> None:
        from latentsearch.data import load_data
        from latentsearch.index import all_images

        if self._spec is None:
            self._error = "the index does not record where its images came from"
            return
        try:
            data = all_images(load_data(self._spec, image_size=self._image_size, download=False))
        except (DataError, OSError) as e:
            self._error = f"its source {self._spec!r} cannot be loaded here: {e}"
            return
        self._rows = {item_id: i for i, item_id in enumerate(data.ids)}
        self._pixels = data.pixels

    def png(self, item_id: str) -> bytes:
        """The item's pixels as a PNG file.

        Raises:
            HTTPException: 404 when the source cannot be loaded or lacks the id.
        """
        with self._lock:
            if self._rows is None and self._error is None:
                self._load()
        if self._rows is None or self._pixels is None:
            raise HTTPException(404, f"item {item_id!r} has no image file, and {self._error}")
        row = self._rows.get(item_id)
        if row is None:
            raise HTTPException(404, f"item {item_id!r} is no longer in {self._spec!r}")
        pixels = np.asarray(self._pixels[row])
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
    """

    def __init__(
        self,
        index: ImageIndex,
        run: Run,
        *,
        max_upload_bytes: int,
        max_pixels: int,
        max_k: int,
    ) -> None:
        self.index = index
        self.run = run
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.max_k = max_k
        self.class_names = index.class_names
        self.stored = _StoredImages(index.data_spec, run.model.image_size)

    # ------------------------------------------------------------------------ JSON
    def _class_name(self, label: int) -> str | None:
        return self.class_names[label] if 0 <= label < len(self.class_names) else None

    def item_json(self, item: IndexItem, prefix: str) -> dict[str, Any]:
        """An item's public metadata, with URLs under ``prefix`` (the app's root path)."""
        url = f"{prefix}/items/{_quoted(item.id)}"
        return {
            "id": item.id,
            "label": item.label,
            "class_name": self._class_name(item.label),
            "filename": None if item.path is None else os.path.basename(item.path),
            "sha256": item.sha256,
            "image_url": f"{url}/image",
            "item_url": url,
            "neighbors_url": f"{url}/neighbors",
        }

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
        """The item's image: its indexed file, or a PNG of its pixels for array sources.

        Raises:
            HTTPException: 404 for an unknown id or a file gone since indexing.
        """
        item = self.item(item_id)
        if item.path is None:
            return Response(self.stored.png(item.id), media_type="image/png")
        if not os.path.isfile(item.path):
            raise HTTPException(404, f"the file of item {item_id!r} is gone since indexing")
        return FileResponse(
            item.path,
            media_type=_media_type(item.path),
            filename=os.path.basename(item.path),
            content_disposition_type="inline",
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=300"},
        )

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
        try:
            pixels = read_image(
                data, model.image_size, channels=model.in_channels, max_pixels=self.max_pixels
            )
        except DataError as e:
            raise HTTPException(422, f"cannot decode the image: {e}") from None
        neighbors = self.index.search_images(self.run, pixels[None], k)[0]
        query = schemas.UploadQuery(
            filename=upload.filename,
            content_type=upload.content_type,
            bytes=len(data),
            format=fmt,
            width=width,
            height=height,
        )
        return self._result(query, k, neighbors, started, prefix)

    def search_item(self, item_id: str, k: int, prefix: str) -> schemas.SearchResult:
        """The nearest images of an indexed one, from its stored embedding.

        Raises:
            HTTPException: 404 for an unknown id.
        """
        started = time.perf_counter()
        item = self.item(item_id)
        position = self.index.position(item.id)
        distances, positions = self.index.search(self.index.embeddings[position : position + 1], k)
        neighbors: list[Neighbor] = []
        for d, p in zip(distances[0].tolist(), positions[0].tolist(), strict=True):
            if p < 0:  # an approximate index may return fewer than k
                continue
            it = self.index.items[p]
            neighbors.append(
                Neighbor(
                    rank=len(neighbors) + 1,
                    position=p,
                    id=it.id,
                    path=it.path,
                    label=it.label,
                    class_name=self._class_name(it.label),
                    distance=float(d),
                )
            )
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


def load_service(
    index_path: str | Path,
    run_path: str | Path | None = None,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_k: int = DEFAULT_MAX_K,
) -> SearchService:
    """Loads an index and its run and checks that they belong together.

    Args:
        index_path: An index folder from ``latentsearch index``.
        run_path: The run that built it; None for the one the index records.
        max_upload_bytes: Largest accepted upload, >= 1.
        max_pixels: Largest accepted width x height of an upload, >= 1.
        max_k: Most neighbours per request, >= 1.

    Raises:
        IndexFormatError: When there is no readable index at ``index_path``.
        RunError: When the run cannot be loaded.
        FingerprintMismatch: When the run did not build the index.
        ValueError: For limits below 1.
    """
    for name, value in (
        ("max_upload_bytes", max_upload_bytes),
        ("max_pixels", max_pixels),
        ("max_k", max_k),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    index = ImageIndex.load(index_path)
    if len(index) == 0:
        raise ValueError(f"{index_path} holds no images: nothing to search")
    if run_path is None:
        run_path = index.run_path
        if not Path(run_path).exists():
            raise RunError(
                f"the run that built {index_path} is no longer at {run_path}: pass its new "
                "location (--run RUN)"
            )
    run = load_run(run_path)
    index.check_compatible(run)
    return SearchService(
        index, run, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, max_k=max_k
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
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_k: int = DEFAULT_MAX_K,
) -> FastAPI:
    """The search server's app, with the index and run loaded once, now.

    Args:
        index_path: An index folder from ``latentsearch index``.
        run_path: The run that built it; None for the one the index records.
        max_upload_bytes: Largest accepted upload (413 above).
        max_pixels: Largest accepted width x height of an upload (413 above), checked from
            the header before anything is decoded.
        max_k: Most neighbours per request (422 above).

    Returns:
        The app; its ``state.service`` is the :class:`SearchService`.

    Raises:
        IndexFormatError: When there is no readable index at ``index_path``.
        RunError: When the run cannot be loaded.
        FingerprintMismatch: When the run is not the one that built the index.
        ValueError: For limits below 1.
    """
    service = load_service(
        index_path, run_path, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, max_k=max_k
    )
    default_k = min(DEFAULT_K, max_k)
    app = FastAPI(
        title="latentsearch",
        summary="Search a folder of images by image.",
        description=f"{len(service.index):,} images indexed with a "
        f"{service.index.fingerprint.get('model')} model. Errors are "
        '`{"detail": "a sentence"}` with a 4xx status.',
        version="1",
    )
    app.state.service = service
    too_large = f"upload too large: the limit is {_mib(max_upload_bytes)} per image"
    app.add_middleware(
        UploadLimit, max_body_size=max_upload_bytes + MULTIPART_OVERHEAD, message=too_large
    )
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
        "/items/{item_id:path}/neighbors",
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
        "/search/{item_id:path}",
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

    # ------------------------------------------------------------------------ items
    @app.get(
        "/items/{item_id:path}/image",
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
        "/items/{item_id:path}",
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
    return app
