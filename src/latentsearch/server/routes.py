"""The JSON API's routes: thin HTTP faces over :class:`~latentsearch.server.service.SearchService`.

Each route reads its parameters, asks the app's service (``app.state.service``) and returns its
answer; the service's refusals become ``{"detail": "a sentence"}`` with their 4xx status here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from latentsearch.server import schemas
from latentsearch.server.errors import (
    NotAnImage,
    NotFound,
    RequestRefused,
    TooLarge,
    Unprocessable,
)
from latentsearch.server.limits import DEFAULT_K
from latentsearch.server.service import CLUSTER_PAGE, ITEMS_PAGE, SearchService

IMAGE_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
"""Sent with every served image: opened on its own, nothing in it may run or load."""

STATUS = {NotFound: 404, TooLarge: 413, NotAnImage: 415, Unprocessable: 422}
"""The HTTP status of each kind of refusal."""


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
    Query(
        ge=1, description=f"neighbours to return (default {DEFAULT_K}, at most max_k: see /health)"
    ),
]
KForm = Annotated[
    int | None,
    Form(alias="k", ge=1, description="neighbours to return; wins over the query parameter"),
]
ItemId = Annotated[str, PathParam(description="an indexed id, slashes included")]
BOX_HELP = (
    "search with only this part of the image: x,y,width,height in its own pixels (as shown), "
    "from the top-left corner"
)
BoxQuery = Annotated[str | None, Query(description=BOX_HELP, examples=["10,20,200,150"])]
BoxForm = Annotated[
    str | None, Form(alias="box", description=BOX_HELP + "; wins over the query parameter")
]

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.Problem, "description": "no such item"},
    422: {"model": schemas.Problem, "description": "bad parameter"},
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": schemas.Problem, "description": "too many bytes or pixels"},
    415: {"model": schemas.Problem, "description": "not an image"},
    422: {"model": schemas.Problem, "description": "empty or corrupt image, bad k"},
}

router = APIRouter()


def _service(request: Request) -> SearchService:
    service: SearchService = request.app.state.service
    return service


def prefix(request: Request) -> str:
    """The app's root path, before every URL it gives out."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _content_disposition(filename: str) -> str:
    """``inline`` with the file name, RFC 6266 style (any character, safely quoted)."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"inline; filename=\"{ascii_name}\"; filename*=utf-8''{quote(filename, safe='')}"


def _metadata_fallback(request: Request, item_id: str, suffix: str) -> JSONResponse | None:
    """``/items/a/image`` is the image of "a", unless "a" is unknown and "a/image" is an
    indexed id (a file named "image" in folder "a"): then it is that item's metadata."""
    service, whole = _service(request), f"{item_id}/{suffix}"
    if service.has(item_id) or not service.has(whole):
        return None
    return JSONResponse(service.item_json(service.item(whole), prefix(request)))


# ---------------------------------------------------------------------------- search
@router.post(
    "/search",
    response_model=schemas.SearchResult,
    responses=UPLOAD_ERRORS,
    summary="Search with an uploaded image",
)
def search(
    request: Request,
    image: Annotated[UploadFile, File(description="the query image (PNG, JPEG, ...)")],
    k_form: KForm = None,
    k: KQuery = None,
    box_form: BoxForm = None,
    box: BoxQuery = None,
) -> schemas.SearchResult:
    """Decodes the image as the indexed ones were (only the part ``box``, when given) and
    returns its nearest indexed images.

    ``k`` and ``box`` may come as form fields or query parameters (the form field wins).
    """
    service = _service(request)
    return service.search_upload(
        image.file,
        service.k(k_form, k),
        prefix(request),
        filename=image.filename,
        content_type=image.content_type,
        box=service.box(box_form if box_form is not None else box),
    )


@router.get(
    "/items/{item_id:any_path}/neighbors",
    response_model=schemas.SearchResult,
    responses=ERRORS,
    summary="Search with an indexed image",
)
def item_neighbors(
    request: Request, item_id: ItemId, k: KQuery = None, box: BoxQuery = None
) -> Any:
    """The nearest images of an indexed image, found from its stored embedding; with ``box``,
    from that part of its original file."""
    fallback = _metadata_fallback(request, item_id, "neighbors")
    if fallback is not None:
        return fallback
    service = _service(request)
    return service.search_item(item_id, service.k(k), prefix(request), box=service.box(box))


@router.post(
    "/search/{item_id:any_path}",
    response_model=schemas.SearchResult,
    responses=ERRORS,
    summary="Search with an indexed image (same as GET /items/{id}/neighbors)",
)
def search_item(
    request: Request, item_id: ItemId, k: KQuery = None, box: BoxQuery = None
) -> schemas.SearchResult:
    """The nearest images of an indexed image, found from its stored embedding; with ``box``,
    from that part of its original file."""
    service = _service(request)
    return service.search_item(item_id, service.k(k), prefix(request), box=service.box(box))


@router.get(
    "/random",
    response_model=schemas.SearchResult,
    responses=ERRORS,
    summary="Search with a random indexed image",
)
def random_query(request: Request, k: KQuery = None) -> schemas.SearchResult:
    """An indexed image drawn at random, and its nearest images."""
    service = _service(request)
    return service.search_item(service.random_id(), service.k(k), prefix(request))


# ---------------------------------------------------------------------------- clusters
@router.get(
    "/clusters",
    response_model=schemas.ClusterList,
    responses={404: {"model": schemas.Problem, "description": "no cluster head"}},
    summary="The groups of the run's cluster head",
)
def cluster_list(request: Request) -> schemas.ClusterList:
    """Every group the run's cluster head (``latentsearch cluster``) finds, with its size."""
    return _service(request).cluster_list(prefix(request))


@router.get(
    "/clusters/{cluster}",
    response_model=schemas.ClusterPage,
    responses=ERRORS,
    summary="The images of one group",
)
def cluster_page(
    request: Request,
    cluster: Annotated[int, PathParam(ge=0, description="the group's number")],
    offset: Annotated[int, Query(ge=0, description="images to skip")] = 0,
    limit: Annotated[
        int | None,
        Query(ge=1, description=f"images to return (default {CLUSTER_PAGE}, at most max_k)"),
    ] = None,
) -> schemas.ClusterPage:
    """A group's images, most probable first, ``limit`` at a time."""
    service = _service(request)
    return service.cluster_page(cluster, offset, service.page_limit(limit), prefix(request))


# ---------------------------------------------------------------------------- items
@router.get(
    "/items",
    response_model=schemas.ItemPage,
    responses={422: ERRORS[422]},
    summary="The indexed images, a page at a time",
)
def items_page(
    request: Request,
    offset: Annotated[int, Query(ge=0, description="images to skip")] = 0,
    limit: Annotated[
        int | None,
        Query(ge=1, description=f"images to return (default {ITEMS_PAGE}, at most max_k)"),
    ] = None,
) -> schemas.ItemPage:
    """The index's images in index order, ``limit`` at a time; past the end, an empty page."""
    service = _service(request)
    return service.items_page(offset, service.page_limit(limit, ITEMS_PAGE), prefix(request))


@router.get(
    "/items/{item_id:any_path}/image",
    responses={
        200: {"content": {"image/*": {}}, "description": "the image file"},
        404: ERRORS[404],
    },
    response_class=Response,
    summary="The indexed image file",
)
def item_image(request: Request, item_id: ItemId) -> Any:
    """The indexed file itself (array sources: a PNG of the stored pixels)."""
    fallback = _metadata_fallback(request, item_id, "image")
    if fallback is not None:
        return fallback
    image = _service(request).image(item_id)
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": IMAGE_SECURITY_POLICY,
        "Cache-Control": "max-age=300",
    }
    if image.filename is not None:
        headers["Content-Disposition"] = _content_disposition(image.filename)
    return Response(image.data, media_type=image.media_type, headers=headers)


@router.get(
    "/items/{item_id:any_path}",
    response_model=schemas.Item,
    responses=ERRORS,
    summary="An indexed image's metadata",
)
def item(request: Request, item_id: ItemId) -> Any:
    """Id, label, class name and file name of an indexed image, with its URLs."""
    service = _service(request)
    return service.item_json(service.item(item_id), prefix(request))


@router.get("/health", response_model=schemas.Health, summary="What is served, and the limits")
def health(request: Request) -> schemas.Health:
    """Number of images, model, input size, classes, and the request limits."""
    return _service(request).health()


# ---------------------------------------------------------------------------- errors
def _validation_message(errors: Sequence[Any]) -> str:
    """FastAPI's validation errors as one sentence: ``k: Input should be ...; image: ...``."""
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path")]
        parts.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _invalid(_: Request, exc: RequestValidationError) -> Response:
    slim = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
    return JSONResponse(
        {"detail": _validation_message(exc.errors()), "errors": slim}, status_code=422
    )


async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
    detail = exc.detail
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such page: see /docs for the API"
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def _refused(_: Request, exc: RequestRefused) -> Response:
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 422)
    return JSONResponse({"detail": str(exc)}, status_code=status)


def add_routes(app: FastAPI) -> None:
    """Adds the API's routes and its JSON error answers to ``app``."""
    # The decorator form, called directly: it keeps each handler's precise exception type.
    app.exception_handler(RequestValidationError)(_invalid)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(RequestRefused)(_refused)
    app.include_router(router)
