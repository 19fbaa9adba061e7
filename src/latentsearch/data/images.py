"""Decoding single images and resizing pixel arrays, the same way for every source."""

from __future__ import annotations

import io
import os
from typing import BinaryIO

import numpy as np
from PIL import Image

from latentsearch.data.base import DataError

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest width x height ``read_image`` accepts before decoding (decompression-bomb guard), for
the user's own image files: a 48-megapixel camera photo passes."""

DEFAULT_MAX_UPLOAD_PIXELS = 40_000_000
"""The same guard for images uploaded to the server by anyone who can reach it
(``serve --max-pixels``), stricter than for local files."""

REDUCE_MARGIN = 3
"""Big images are shrunk by an integer factor right after decoding while their short side stays
at least this many times the output side; the bilinear resize then does the rest."""

_EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_REDUCIBLE_MODES = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})

ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


def check_image_size(image_size: int | None) -> int | None:
    """Validates an ``image_size`` argument.

    Raises:
        DataError: When it is not a positive integer (or None).
    """
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    if image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size}")
    return int(image_size)


def _check_channels(channels: int) -> str:
    if channels == 3:
        return "RGB"
    if channels == 1:
        return "L"
    raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def _fit_square(img: Image.Image, image_size: int) -> Image.Image:
    """Scales the short side to ``image_size`` and keeps the centred square.

    Resizing only the centred square (``box``) is the same as resizing the whole image and then
    cropping, but does less work.
    """
    w, h = img.size
    if w == image_size and h == image_size:
        return img
    side = min(w, h)
    left = (w - side) / 2
    top = (h - side) / 2
    # reducing_gap lets Pillow shrink by an integer factor first on big reductions: much faster,
    # and still area-averaged (Pillow's bilinear resize widens its support when it downscales).
    gap = 3.0 if side > image_size else None
    return img.resize(
        (image_size, image_size),
        Image.Resampling.BILINEAR,
        box=(left, top, left + side, top + side),
        reducing_gap=gap,
    )


def _to_8bit(img: Image.Image) -> Image.Image:
    """16- and 32-bit grey (``I;16``, ``I``) and float (``F``) images as 8-bit grey (``L``).

    Pillow's own conversion clips these to 255, so a 16-bit photo comes out nearly white.
    Values are scaled instead: a 16-bit value ``v`` becomes ``round(v / 257)``, which maps a
    16-bit file made from an 8-bit one (``v8 * 257``) back to exactly ``v8``. Mode ``I`` holds
    16-bit samples for PNG and for any image whose values exceed 255; other ``I`` images (all
    values <= 255) and ``F`` images with values in [0, 1] keep their scale.
    """
    arr = np.asarray(img)
    if img.mode == "F":
        values = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        out = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(out)
    values = arr.astype(np.int64)
    sixteen = img.mode != "I" or img.format == "PNG" or (values.size and values.max() > 255)
    if sixteen:
        values = (np.clip(values, 0, 65535) * 255 + 32767) // 65535
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))


def _reduce_early(img: Image.Image, image_size: int) -> Image.Image:
    """Shrinks a big image by an integer factor before any conversion multiplies its memory.

    A 6,000 x 6,000 palette PNG takes 36 MB as decoded, but 144 MB as RGBA and several times
    that through compositing and resizing; reduced first (box filter, area-averaged) it never
    grows beyond the decoded size.
    """
    factor = min(img.size) // (image_size * REDUCE_MARGIN)
    if factor < 2:
        return img
    if img.mode in ("P", "PA", "1"):
        # No reduce for palettes and bilevel: expand to the smallest mode that keeps them.
        transparent = img.mode == "PA" or "transparency" in img.info
        img = img.convert("L" if img.mode == "1" else "RGBA" if transparent else "RGB")
    if img.mode not in _REDUCIBLE_MODES:
        return img
    return img.reduce(factor)


def _decode(img: Image.Image, image_size: int, mode: str, max_pixels: int) -> np.ndarray:
    w, h = img.size
    if w * h > max_pixels:
        raise DataError(
            f"image too large: {w}x{h} = {w * h:,} pixels, more than max_pixels={max_pixels:,} "
            "(raise max_pixels if the file is trusted)"
        )
    if w < 1 or h < 1:
        raise DataError(f"image has an empty size {w}x{h}")
    if img.format == "JPEG":
        # Let the JPEG decoder downscale by 1/2, 1/4 or 1/8 while the short side stays
        # >= image_size: most of the speed-up for large photos.
        img.draft(mode, (image_size, image_size))
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1) if "exif" in img.info else 1
    if img.mode in _WIDE_GREY_MODES or img.mode == "F":
        img = _to_8bit(img)
    img = _reduce_early(img, image_size)
    if orientation in _ORIENTATION_FIX:
        # By hand, as ImageOps.exif_transpose does: the converted image no longer has the EXIF.
        img = img.transpose(_ORIENTATION_FIX[orientation])
    if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels become white, not whatever colour happens to hide under them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != mode:
        img = img.convert(mode)
    img = _fit_square(img, image_size)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def decode_image(
    source: ImageSource,
    image_size: int,
    *,
    channels: int = 3,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decodes one image file into a square uint8 array (no argument checks; see ``read_image``).

    Returns:
        Pixels. Shape: (image_size, image_size, channels).

    Raises:
        DataError: When the file is not an image Pillow can read, is corrupt or truncated, or
            has more than ``max_pixels`` pixels.
    """
    mode = "RGB" if channels == 3 else "L"
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(source)
    try:
        with Image.open(source) as img:
            return _decode(img, image_size, mode, max_pixels)
    except DataError:
        raise
    except Image.UnidentifiedImageError:
        raise DataError("not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"image too large: {exc}") from None
    except FileNotFoundError:
        raise DataError(f"no such file: {source}") from None
    except Exception as exc:  # Pillow's decoders raise many exception types on bad data
        raise DataError(f"corrupt or truncated image ({type(exc).__name__}: {exc})") from None


def read_image(
    source: ImageSource,
    image_size: int,
    channels: int = 3,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decodes one image exactly as the image-folder source does.

    The image is converted to RGB (or grey), transparent areas become white, the EXIF
    orientation is applied, the short side is scaled to ``image_size`` (bilinear, area-averaged
    when shrinking) and the centred square is kept.

    Args:
        source: A file path, the file's bytes, or a binary file object.
        image_size: Side of the square output.
        channels: 3 for RGB, 1 for grey.
        max_pixels: Largest width x height accepted; checked from the header before decoding,
            so a decompression bomb is refused without being decompressed.

    Returns:
        Pixels, dtype uint8. Shape: (image_size, image_size, channels).

    Raises:
        DataError: For bad arguments, and when the input is not a readable image or is too
            large.
    """
    size = check_image_size(image_size)
    if size is None:
        raise DataError("read_image needs an image_size")
    _check_channels(channels)
    if max_pixels < 1:
        raise DataError(f"max_pixels must be positive, got {max_pixels}")
    return decode_image(source, size, channels=channels, max_pixels=max_pixels)


def resize_pixels(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """Resizes a stack of images to squares, short side first and then a centre crop.

    Args:
        pixels: uint8 images. Shape: (N, H, W, C), C in {1, 3}.
        image_size: Side of the output squares.

    Returns:
        A new uint8 array, or ``pixels`` itself when it already has that size.
        Shape: (N, image_size, image_size, C).
    """
    n, h, w, c = pixels.shape
    if h == image_size and w == image_size:
        return pixels
    out = np.empty((n, image_size, image_size, c), dtype=np.uint8)
    for i in range(n):
        img = Image.fromarray(pixels[i, :, :, 0] if c == 1 else pixels[i])
        arr = np.asarray(_fit_square(img, image_size))
        out[i] = arr[:, :, None] if c == 1 else arr
    return out
