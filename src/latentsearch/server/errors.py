"""What the service refuses, by kind; the routes answer each kind with its HTTP status."""

from __future__ import annotations

from latentsearch.errors import LatentsearchError


class RequestRefused(LatentsearchError):
    """A request the service cannot answer; the message says why, for the user."""


class NotFound(RequestRefused):
    """No such item, cluster or servable file (404)."""


class TooLarge(RequestRefused):
    """An upload over the byte or pixel limit (413)."""


class NotAnImage(RequestRefused):
    """Uploaded bytes that are no image format this server reads (415)."""


class Unprocessable(RequestRefused):
    """A bad parameter, or an upload that is empty or corrupt (422)."""
