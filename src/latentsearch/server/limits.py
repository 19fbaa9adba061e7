"""The server's default limits, in a module light enough for the command line to import."""

from __future__ import annotations

from latentsearch.data.images import DEFAULT_MAX_UPLOAD_PIXELS

__all__ = [
    "DEFAULT_K",
    "DEFAULT_MAX_DECODES",
    "DEFAULT_MAX_K",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_MAX_UPLOAD_PIXELS",
    "LOOPBACK_HOSTS",
]

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
"""Largest upload accepted by ``POST /search`` (10 MiB)."""

DEFAULT_MAX_K = 100
"""Most neighbours one request may ask for."""

DEFAULT_K = 10
"""Neighbours returned when a request does not say."""

DEFAULT_MAX_DECODES = 2
"""Most uploads decoded at the same time; more wait. A 40-Mpx image may take several hundred
MB while it is decoded, so this bounds the server's memory under concurrent large uploads."""

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Host names ``serve`` accepts by default when it listens on a loopback address."""
