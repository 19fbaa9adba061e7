"""Exceptions of the index package; all are ``ValueError``s, so the CLI shows them as one line."""

from __future__ import annotations


class ImageIndexError(ValueError):
    """Base class of every error the index raises on bad input or a bad index folder."""


class IndexFormatError(ImageIndexError):
    """An index folder is missing, incomplete, corrupt, or of an unknown format version."""


class FingerprintMismatch(ImageIndexError):
    """A run is not the one that built the index (other model, weights or image size)."""


class UnknownItem(ImageIndexError):
    """An id that the index does not hold."""
