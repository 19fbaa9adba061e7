"""The server's default limits, in a module light enough for the command line to import."""

from __future__ import annotations

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
"""Largest upload accepted by ``POST /search`` (10 MiB)."""

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest width x height of an uploaded image, checked from its header before decoding."""

DEFAULT_MAX_K = 100
"""Most neighbours one request may ask for."""

DEFAULT_K = 10
"""Neighbours returned when a request does not say."""
