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
memory of a big decode is handed back to the system afterwards. The limits are one
:class:`~latentsearch.server.limits.ServeLimits`.

``allowed_hosts`` refuses requests whose ``Host`` header names another host (400): against
DNS rebinding, a page elsewhere reaching a server on this machine through a name it controls.

Requests run in FastAPI's thread pool, several at once. ``latentsearch serve`` therefore
limits torch and FAISS to one thread per request (``ServeLimits.threads``); a program that runs this
app itself should do the same (``torch.set_num_threads(1)``, ``faiss.omp_set_num_threads(1)``),
see ``benchmarks/README.md``.

The parts: :mod:`~latentsearch.server.middleware` (upload limit, ``Host`` check, ``nosniff``
on every response and a CSP on every page), :mod:`~latentsearch.server.files` (checked file
serving, re-encoding), :mod:`~latentsearch.server.service` (the work, without HTTP, over a
:class:`~latentsearch.Searcher`) and :mod:`~latentsearch.server.routes` (the API); this module
puts them together with the page and the API docs (each with a CSP that lets only its own
scripts run).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from latentsearch.data.images import quiet_decompression_bomb_warning
from latentsearch.errors import ConfigError
from latentsearch.server.limits import ServeLimits
from latentsearch.server.middleware import (
    PAGE_SECURITY_POLICY,
    HostCheck,
    SecurityHeaders,
    UploadLimit,
)
from latentsearch.server.routes import add_routes, prefix
from latentsearch.server.service import load_service, too_large

MULTIPART_OVERHEAD = 64 * 1024
"""Room for boundaries, part headers and the ``k`` field around an upload of the largest size."""

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The page: ``index.html``, ``style.css``, ``app.js``; no external resources."""

DOCS_ASSETS = "/docs-assets"
"""Where Swagger UI's and ReDoc's scripts are served from (the ``fastapi-offline`` package)."""


def create_app(
    index_path: str | Path,
    run_path: str | Path | None = None,
    *,
    limits: ServeLimits | None = None,
    allowed_hosts: Sequence[str] | None = None,
    clusters: bool = True,
) -> FastAPI:
    """The search server's app, with the index and run loaded once, now.

    Args:
        index_path: An index folder from ``latentsearch index``.
        run_path: The run that built it; None for the one the index records.
        limits: Largest upload (413 above), largest width x height of an upload (413 above,
            checked from the header before anything is decoded), most neighbours per request
            (422 above), most uploads decoded at the same time (the others wait); default:
            :class:`ServeLimits`'s defaults. Its ``threads`` is left to the caller.
        allowed_hosts: Host names the ``Host`` header may carry (400 otherwise), ``*.domain``
            patterns or ``*``; None accepts any. ``latentsearch serve`` passes
            ``LOOPBACK_HOSTS`` when it listens on a loopback address.
        clusters: Serve the groups of the run's cluster head (see
            :func:`~latentsearch.server.service.load_service`).

    Returns:
        The app; its ``state.service`` is the
        :class:`~latentsearch.server.service.SearchService`.

    Raises:
        IndexFormatError: When there is no readable index at ``index_path``.
        RunError: When the run cannot be loaded.
        FingerprintMismatch: When the run is not the one that built the index.
        ConfigError: For an empty ``allowed_hosts``.
    """
    if allowed_hosts is not None and not allowed_hosts:
        raise ConfigError("allowed_hosts", "is empty: no request could be answered")
    service = load_service(index_path, run_path, limits=limits, clusters=clusters)
    # Uploads over Pillow's own limit are refused (413) by the pixel limit, which is lower.
    quiet_decompression_bomb_warning()
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
    app.add_middleware(
        UploadLimit,
        max_body_size=service.limits.max_upload_bytes + MULTIPART_OVERHEAD,
        message=too_large(service.limits),
    )
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed_hosts=list(allowed_hosts))
    # Outermost, so the refusals of the other middlewares carry the headers too.
    app.add_middleware(SecurityHeaders)
    add_routes(app)

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


def _docs_assets() -> Path | None:
    """The folder of Swagger UI's and ReDoc's files from ``fastapi-offline``, if installed."""
    try:
        folder = Path(str(importlib.resources.files("fastapi_offline") / "static"))
    except (ImportError, TypeError):
        return None
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _docs_policy(page: HTMLResponse, *, cdn: bool) -> HTMLResponse:
    """The docs page with a CSP that lets its own scripts run and nothing else.

    Swagger UI's page starts the bundle with one inline script, allowed by its hash; both
    Swagger UI and ReDoc set inline styles, and ReDoc runs its search in a ``blob:`` worker.
    """
    html = bytes(page.body).decode("utf-8")
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    )
    scripts = "'self'" + (" https://cdn.jsdelivr.net" if cdn else "") + hashes
    styles = "'self' 'unsafe-inline'" + (" https://cdn.jsdelivr.net" if cdn else "")
    page.headers["Content-Security-Policy"] = (
        f"default-src 'self'; script-src {scripts}; style-src {styles}; "
        "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
    return page


def _add_docs(app: FastAPI, prefix: Callable[[Request], str]) -> None:
    """``/docs`` (Swagger UI) and ``/redoc``, their scripts served by this app, not a CDN."""
    assets = _docs_assets()
    if assets is not None:
        app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    def asset(request: Request, name: str, cdn: str) -> str:
        return f"{prefix(request)}{DOCS_ASSETS}/{name}" if assets is not None else cdn

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        page = get_swagger_ui_html(
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
        return _docs_policy(page, cdn=assets is None)

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        page = get_redoc_html(
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
        return _docs_policy(page, cdn=assets is None)
