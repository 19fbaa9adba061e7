"""The server's limits as one value, in a module light enough for the command line to import."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from latentsearch.data.images import DEFAULT_MAX_UPLOAD_PIXELS
from latentsearch.errors import ConfigError

__all__ = ["DEFAULT_K", "LOOPBACK_HOSTS", "ServeLimits"]

DEFAULT_K = 10
"""Neighbours returned when a request does not say (at most ``max_k``)."""

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Host names ``serve`` accepts by default when it listens on a loopback address."""


@dataclass(frozen=True)
class ServeLimits:
    """What one server accepts and uses, resolved once where it starts.

    Raises:
        ConfigError: For a limit that is not a positive integer (named by its field).
    """

    max_upload_bytes: int = 10 * 1024 * 1024  # largest upload to POST /search (413 above)
    # Largest width x height of an upload (413 above), read from its header before decoding.
    max_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS
    max_k: int = 100  # most neighbours (or cluster images) one request may ask for (422 above)
    # Most images decoded at the same time (uploads, re-encodings); the others wait. A decode
    # holds at most about max_pixels x 4 bytes (160 MB at 40 Mpx; read_image refuses, 413,
    # what would need more), so this bounds memory under load.
    max_decodes: int = 2
    # Threads each request may use in torch and FAISS. Process-wide, so `latentsearch serve`
    # applies it; `create_app` leaves a program's own setting alone.
    threads: int = 1

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(field.name, f"must be a positive integer, got {value!r}")

    @property
    def default_k(self) -> int:
        """Neighbours returned when a request does not say."""
        return min(DEFAULT_K, self.max_k)
