"""Indexed images as the server sends them: checked against their hash, re-encoded if need be.

A file is read only through an indexed item's recorded path, never a path from a request, and
sent only while its bytes still have the SHA-256 recorded at indexing. Its type comes from the
format Pillow reads in those bytes, never from the file name; formats browsers do not show are
re-encoded as PNG, bounded in size. A path that is no longer a regular file (a named pipe, a
device) is refused without reading it, so a request never waits on a pipe's writer.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import os
import sys
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from latentsearch.data.files import NotARegularFile, open_regular, printable
from latentsearch.index import ImageIndex, IndexItem, StoredPixelsUnavailable
from latentsearch.server.errors import NotAnImage, NotFound, TooLarge, Unprocessable

SERVED_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
}
"""Formats served as they are (browsers show them); any other is re-encoded as PNG."""

MAX_SERVED_BYTES = 256 * 1024 * 1024
"""Largest indexed file ``/items/{id}/image`` reads to check and serve (404 above)."""

REENCODED_MAX_SIDE = 4096
"""Re-encoded images (TIFF, ...) are shrunk to fit this many pixels per side."""

BIG_DECODE_PIXELS = 4_000_000
"""After decoding an image this large, freed memory is handed back to the system."""

NOT_IMAGE = "not an image this server can read; upload a PNG, JPEG, GIF, BMP, TIFF or WebP file"


@dataclass(frozen=True)
class ServedImage:
    """An image to send.

    Attributes:
        data: The bytes.
        media_type: Their type, from their format.
        filename: The indexed file's name as printable text (see ``data.folder.printable``);
            None for pixels of an array source.
    """

    data: bytes
    media_type: str
    filename: str | None


def probe(data: bytes) -> tuple[str, int, int]:
    """Format, width and height from an image's header, without decoding its pixels.

    Tells a non-image and a too-large image apart from a corrupt one, which ``read_image``
    alone reports with the same exception.

    Raises:
        NotAnImage: When Pillow does not recognise the bytes as an image.
        TooLarge: For Pillow's own decompression-bomb limit.
        Unprocessable: For a damaged header.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            return str(img.format or "unknown"), int(img.size[0]), int(img.size[1])
    except Image.UnidentifiedImageError:
        raise NotAnImage(NOT_IMAGE) from None
    except Image.DecompressionBombError as e:
        raise TooLarge(f"image too large: {e}") from None
    except Exception as e:  # Pillow raises many types on a damaged header
        raise Unprocessable(f"corrupt image header ({type(e).__name__}: {e})") from None


def release_memory() -> None:
    """Hands memory freed by a big decode back to the system (glibc keeps it otherwise).

    Each request thread gets its own malloc arena; without this, a few large decodes in
    parallel leave gigabytes held by the process long after the requests ended.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def png(pixels: np.ndarray) -> bytes:
    """Pixels as a PNG file. Shape: (H, W, C), uint8, C 1 or 3."""
    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def indexed_bytes(item: IndexItem) -> bytes:
    """The bytes of an item's file, when they are still those that were indexed.

    Raises:
        NotFound: When the file is gone, not a regular file, too large, or changed since
            indexing (or was unreadable then).
    """
    if item.path is None:
        raise NotFound(f"item {item.id!r} has no image file")
    gone = NotFound(f"the file of item {item.id!r} is gone since indexing")
    if item.sha256 is None:
        raise NotFound(f"item {item.id!r} was indexed without a content hash: it cannot be checked")
    try:
        # Opened without blocking and checked before any read: a plain open() of a named
        # pipe would hold this request thread until something writes to the pipe.
        with open_regular(item.path) as f:
            if os.fstat(f.fileno()).st_size > MAX_SERVED_BYTES:
                raise NotFound(f"the file of item {item.id!r} is too large to serve here")
            data = f.read(MAX_SERVED_BYTES + 1)
    except NotARegularFile as e:
        raise NotFound(
            f"the file of item {item.id!r} is gone since indexing: its path is now "
            f"{e.strerror}; bring the index up to date with `latentsearch index RUN IMAGES "
            "--update INDEX`"
        ) from None
    except OSError:
        raise gone from None
    if len(data) > MAX_SERVED_BYTES or hashlib.sha256(data).hexdigest() != item.sha256:
        raise NotFound(
            f"the file of item {item.id!r} changed since it was indexed; bring the index "
            "up to date with `latentsearch index RUN IMAGES --update INDEX`"
        )
    return data


def reencode(
    item_id: str, data: bytes, *, max_pixels: int, decodes: threading.BoundedSemaphore
) -> bytes:
    """An image in a format browsers do not show (TIFF, ...) as a PNG, bounded in size.

    Args:
        item_id: The item, for messages.
        data: Its file's bytes.
        max_pixels: Largest width x height decoded.
        decodes: The slots shared with upload decoding; one is held while decoding.

    Raises:
        NotFound: When it cannot be decoded here.
        NotAnImage, TooLarge, Unprocessable: When its header cannot be read (see :func:`probe`).
    """
    _, width, height = probe(data)
    if width * height > max_pixels:
        raise NotFound(f"item {item_id!r} is too large to convert for display")
    buf = io.BytesIO()
    with decodes:
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.draft("RGB", (REENCODED_MAX_SIDE, REENCODED_MAX_SIDE))
                img.thumbnail((REENCODED_MAX_SIDE, REENCODED_MAX_SIDE))
                out = img if img.mode in ("RGB", "RGBA", "L", "LA") else img.convert("RGBA")
                out.save(buf, format="PNG")
        except Exception as e:  # Pillow raises many types on bad data
            raise NotFound(
                f"item {item_id!r} cannot be converted for display ({type(e).__name__})"
            ) from None
        finally:
            if width * height >= BIG_DECODE_PIXELS:
                release_memory()
    return buf.getvalue()


def served_image(
    index: ImageIndex,
    item: IndexItem,
    *,
    max_pixels: int,
    decodes: threading.BoundedSemaphore,
) -> ServedImage:
    """An item's image: its indexed file's bytes, checked, or a PNG for array sources.

    Args:
        index: The index that holds the item.
        item: The item.
        max_pixels: Largest width x height re-encoded.
        decodes: The slots shared with upload decoding.

    Raises:
        NotFound: For a file gone or changed since indexing, or pixels not available.
    """
    if item.path is None:
        try:
            pixels = index.stored_pixels(item.id)
        except StoredPixelsUnavailable as e:
            raise NotFound(str(e)) from None
        return ServedImage(png(pixels), "image/png", None)
    data = indexed_bytes(item)
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = str(img.format or "")
    except Exception:  # indexed as an image, so it was one; be safe anyway
        raise NotFound(f"the file of item {item.id!r} is not an image") from None
    media_type = SERVED_FORMATS.get(fmt)
    if media_type is None:
        data = reencode(item.id, data, max_pixels=max_pixels, decodes=decodes)
        media_type = "image/png"
    return ServedImage(data, media_type, printable(os.path.basename(item.path)))
