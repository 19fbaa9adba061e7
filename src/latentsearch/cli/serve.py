"""The ``serve`` command: the search page and its JSON API over a saved index."""

from __future__ import annotations

import argparse
import ipaddress
from typing import TYPE_CHECKING, Any

from latentsearch.cli.common import CLIError

if TYPE_CHECKING:
    from latentsearch.server.limits import ServeLimits

MIB = 1024 * 1024


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, given: list[str] | None) -> list[str] | None:
    """The ``Host`` names the server answers to: ``--allowed-host`` values when given; the
    loopback names (and ``host`` itself) when listening on loopback; else None (any)."""
    from latentsearch.server.limits import LOOPBACK_HOSTS

    if given:
        return list(given)
    if _is_loopback(host):
        return list(dict.fromkeys([*LOOPBACK_HOSTS, host]))
    return None


def _set_threads(n: int) -> None:
    """Threads each request may use in torch and FAISS.

    One by default: a query is one small image, which more threads do not speed up, while
    concurrent requests already keep the cores busy. On a shared 2-core machine two OpenMP
    threads per request made a search 30x slower (spinning threads waiting for a core).
    """
    import faiss
    import torch

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def _limits(args: argparse.Namespace) -> ServeLimits:
    """The limit flags as one value; the library checks them (its messages name the flags)."""
    from latentsearch.server.limits import ServeLimits

    # The flag is in MiB, the field in bytes: the library's message would name neither.
    if not args.max_upload_mb > 0:
        raise CLIError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    return ServeLimits(
        max_upload_bytes=int(args.max_upload_mb * MIB),
        max_pixels=args.max_pixels,
        max_k=args.max_k,
        max_decodes=args.max_decodes,
        threads=args.threads,
    )


def check_serve_options(args: argparse.Namespace) -> tuple[ServeLimits, list[str] | None]:
    """The server's options, checked before anything is loaded (``up`` checks them before it
    trains): the limits and the allowed hosts.

    Raises:
        CLIError: A port outside 0-65535, an empty --allowed-host, or a limit the library
            refuses.
    """
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be from 0 to 65535 (0: any free port), got {args.port}")
    limits = _limits(args)
    hosts = allowed_hosts(args.host, args.allowed_host)
    if hosts is not None and any(not h.strip() for h in hosts):
        raise CLIError("--allowed-host must not be empty")
    return limits, hosts


def cmd_serve(args: argparse.Namespace) -> int:
    from latentsearch.server.app import create_app
    from latentsearch.server.running import ServerError, bind, serve, url_of

    limits, hosts = check_serve_options(args)
    _set_threads(limits.threads)
    app = create_app(
        args.index, args.run, limits=limits, allowed_hosts=hosts, clusters=not args.no_clusters
    )
    try:
        sock = bind(args.host, args.port)
    except ServerError as e:
        raise CLIError(str(e)) from None
    service = app.state.service
    print(
        f"serving {len(service.index):,} images of {args.index} (run {service.run.path}) "
        f"at {url_of(sock)}/  (API docs: {url_of(sock)}/docs; Ctrl+C stops)",
        flush=True,
    )
    print(f"clusters: {service.clusters_note}", flush=True)
    if not _is_loopback(args.host):
        print(
            f"note: listening on {args.host}, not only this machine; the server has no "
            "authentication: anyone who can reach it can search and view the indexed images",
            flush=True,
        )
    if hosts is None:
        print(
            "note: any Host header is accepted; pass --allowed-host NAME (repeatable) with the "
            "names clients use, so that no other site can reach the server by DNS rebinding",
            flush=True,
        )
    serve(app, sock, log_level=args.log_level)
    return 0


COMMANDS = {
    "serve": "serve a web page and a JSON API to search an index by image",
}
"""This module's commands and their one-line help, known without importing anything heavy."""


def register(sub: Any) -> None:
    """Adds the ``serve`` command to the ``latentsearch`` sub-parsers."""
    p = sub.add_parser(
        "serve",
        help=COMMANDS["serve"],
        description="Load an index and its run once, then serve the search page at / and the "
        "JSON API (POST /search, GET /items/{id}, ...; docs at /docs).",
    )
    p.add_argument("index", help="index folder from `latentsearch index`")
    p.add_argument("--run", default=None, help="run folder (default: the one that built INDEX)")
    add_serve_options(p)
    p.set_defaults(func=cmd_serve)


def add_serve_options(p: argparse.ArgumentParser) -> None:
    """The server's options (address, limits, threads), shared by ``serve`` and ``up``; the
    limits' defaults are :class:`~latentsearch.server.limits.ServeLimits`'s."""
    from latentsearch.server.limits import LOOPBACK_HOSTS, ServeLimits

    limits = ServeLimits()
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: all)",
    )
    p.add_argument("--port", type=int, default=8000, help="default: 8000; 0 picks a free one")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=limits.max_upload_bytes / MIB,
        help=f"largest upload in MiB (default: {limits.max_upload_bytes / MIB:g})",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=limits.max_pixels,
        help=f"largest width x height of an upload (default: {limits.max_pixels:,})",
    )
    p.add_argument(
        "--max-k",
        type=int,
        default=limits.max_k,
        help=f"most neighbours per request (default: {limits.max_k})",
    )
    p.add_argument(
        "--max-decodes",
        type=int,
        default=limits.max_decodes,
        help="most uploads decoded at the same time, the others wait; bounds memory under "
        f"many large uploads (default: {limits.max_decodes})",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a host name clients reach the server by (repeatable; *.example.org for "
        "subdomains, * for any); requests with another Host header get 400. Default: "
        f"{', '.join(LOOPBACK_HOSTS)} when --host is a loopback address, any otherwise",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=limits.threads,
        help=f"CPU threads per request for torch and FAISS (default: {limits.threads}; requests "
        "run in parallel, and one small query image gains nothing from more)",
    )
    p.add_argument(
        "--no-clusters",
        action="store_true",
        help="do not serve the groups of the run's cluster head (`latentsearch cluster`); "
        "a head fine-tuned with its own encoder re-reads every indexed file at start",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default: info, one line per request)",
    )
