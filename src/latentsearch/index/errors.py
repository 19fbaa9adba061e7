"""Exceptions of the index package: ``LatentsearchError``s, which the CLI shows as one line."""

from __future__ import annotations

from latentsearch.errors import LatentsearchError


class ImageIndexError(LatentsearchError):
    """Base class of every error the index raises on bad input or a bad index folder."""


class IndexFormatError(ImageIndexError):
    """An index folder is missing, incomplete, corrupt, or of an unknown format version."""


class FingerprintMismatch(ImageIndexError):
    """A run is not the one that built the index (other model, weights or image size)."""


class UnknownItem(ImageIndexError):
    """An id that the index does not hold."""


class StoredPixelsUnavailable(ImageIndexError):
    """An item without a file whose pixels cannot be loaded again: the index records no
    source, the source fails to load here, or it no longer holds the item."""
