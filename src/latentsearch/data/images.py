"""Decoding single images and resizing pixel arrays, the same way for every source."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
from PIL import Image

from latentsearch.data.base import DataError
from latentsearch.data.files import open_regular

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest width x height ``read_image`` accepts before decoding (decompression-bomb guard), for
the user's own image files: a 48-megapixel camera photo passes."""

DEFAULT_MAX_UPLOAD_PIXELS = 40_000_000
"""The same guard for images uploaded to the server by anyone who can reach it
(``serve --max-pixels``), stricter than for local files."""

DECODE_BYTES_PER_PIXEL = 3
"""The memory budget of one decode, checked from the header before decoding: its pixels may
take ``max_pixels`` times this many bytes (an 8-bit RGB image at the pixel limit), counted
from the mode (1 byte a pixel for grey, 2 for 16-bit grey, 4 for RGBA, CMYK, 32-bit and float
images); wider images must have fewer pixels. See :func:`decode_bytes`."""

DECODE_WORK_BYTES = 64 * 1024 * 1024
"""The copies made after the early reduction (transposed, composited on white, converted) may
take as much as the pixels plus this; only long thin images, which reduce little, exceed it."""

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
_SAMPLE_BYTES = {
    "1": 1, "L": 1, "P": 1,
    "LA": 2, "La": 2, "PA": 2, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2,
    "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
}  # fmt: skip
"""Bytes of a pixel's samples, by mode; any other mode (RGBA, CMYK, I, F): 4."""
_WORK_BYTES = 16
"""Bytes per pixel of the few full-size copies made after reducing (transposed, composited
on white, converted), counted at the reduced size."""
_BAND_BYTES = 4 * 1024 * 1024
"""Wide and palette images are converted to 8 bits this many bytes of rows at a time, and
reduced band by band, so no conversion ever holds a full-size copy."""


class ImageTooLarge(DataError):
    """An image over the pixel limit or the memory budget of a decode."""


ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


def quiet_decompression_bomb_warning() -> None:
    """Stops Pillow printing its ``DecompressionBombWarning`` (images over 89 Mpx) raw.

    This package checks every image it decodes against its own ``max_pixels`` from the header
    and refuses a larger one with a one-line :class:`ImageTooLarge`, so Pillow's warning on
    stderr, from whichever thread or worker opened the file, only repeats it. The faces (the
    command line, the server, the index workers) call this once; the library alone leaves a
    program's warning filters as they are.
    """
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


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


def _reduce_factor(size: tuple[int, int], image_size: int) -> int:
    """The integer factor a decoded image is shrunk by right away (1: not at all)."""
    return max(1, min(size) // (image_size * REDUCE_MARGIN))


def decode_bytes(img: Image.Image, image_size: int) -> tuple[int, int]:
    """What decoding an opened image to ``image_size`` holds, from its header.

    Returns:
        The bytes of its decoded pixels (``width x height x`` the mode's bytes per pixel), and
        those of the copies made after the early reduction (at the reduced size). Conversions
        of wide and palette modes to 8 bits go band by band and add little.
    """
    w, h = img.size
    factor = _reduce_factor(img.size, image_size)
    reduced = -(-w // factor) * -(-h // factor)
    return w * h * _SAMPLE_BYTES.get(img.mode, 4), reduced * _WORK_BYTES


def _bands(img: Image.Image, multiple: int) -> Iterator[tuple[int, Image.Image]]:
    """Horizontal bands of ``img`` of about ``_BAND_BYTES`` each, heights a multiple of
    ``multiple`` (but the last), with their top rows."""
    w, h = img.size
    rows = max(multiple, _BAND_BYTES // (8 * w) // multiple * multiple)
    for top in range(0, h, rows):
        yield top, img.crop((0, top, w, min(h, top + rows)))


def _to_8bit(img: Image.Image, factor: int) -> Image.Image:
    """16- and 32-bit grey (``I;16``, ``I``) and float (``F``) images as 8-bit grey (``L``),
    reduced by ``factor`` (1: not reduced).

    Pillow's own conversion clips these to 255, so a 16-bit photo comes out nearly white.
    Values are scaled instead: a 16-bit value ``v`` becomes ``round(v / 257)``, which maps a
    16-bit file made from an 8-bit one (``v8 * 257``) back to exactly ``v8``. Mode ``I`` holds
    16-bit samples for PNG and for any image whose values exceed 255; other ``I`` images (all
    values <= 255) and ``F`` images with values in [0, 1] keep their scale.

    Done band by band (the scale from the whole image first), so the 64-bit intermediates
    take a few MB, not 8 bytes per pixel of the whole image; each band is reduced as it is
    converted, which gives the same pixels as reducing the whole converted image.
    """
    if img.mode == "F":
        highest = max(
            float(
                np.nan_to_num(
                    np.asarray(band, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0
                ).max()
            )
            for _, band in _bands(img, factor)
        )
        unit = highest <= 1.0
    else:
        sixteen = img.mode != "I" or img.format == "PNG"
        if not sixteen:
            sixteen = any(int(np.asarray(band).max()) > 255 for _, band in _bands(img, factor))
    w, h = img.size
    out = Image.new("L", (-(-w // factor), -(-h // factor)))
    for top, band in _bands(img, factor):
        arr = np.asarray(band)
        if img.mode == "F":
            values = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
            if unit:
                values = values * 255.0
            eight = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        else:
            ints = arr.astype(np.int64)
            if sixteen:
                ints = (np.clip(ints, 0, 65535) * 255 + 32767) // 65535
            eight = np.clip(ints, 0, 255).astype(np.uint8)
        converted = Image.fromarray(eight)
        out.paste(converted.reduce(factor) if factor > 1 else converted, (0, top // factor))
    return out


def _reduce_early(img: Image.Image, image_size: int) -> Image.Image:
    """Shrinks a big image by an integer factor before any conversion multiplies its memory.

    A 6,000 x 6,000 palette PNG takes 36 MB as decoded, but 144 MB as RGBA and several times
    that through compositing and resizing; reduced first (box filter, area-averaged) it never
    grows much beyond the decoded size. Palette and bilevel images are expanded band by band.
    """
    factor = _reduce_factor(img.size, image_size)
    if factor < 2:
        return img
    if img.mode in ("P", "PA", "1"):
        # No reduce for palettes and bilevel: expand to the smallest mode that keeps them.
        transparent = img.mode == "PA" or "transparency" in img.info
        mode = "L" if img.mode == "1" else "RGBA" if transparent else "RGB"
        w, h = img.size
        out = Image.new(mode, (-(-w // factor), -(-h // factor)))
        for top, band in _bands(img, factor):
            out.paste(band.convert(mode).reduce(factor), (0, top // factor))
        return out
    if img.mode not in _REDUCIBLE_MODES:
        return img
    return img.reduce(factor)


def _decode(img: Image.Image, image_size: int, mode: str, max_pixels: int) -> np.ndarray:
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLarge(
            f"image too large: {w}x{h} = {w * h:,} pixels, more than max_pixels={max_pixels:,} "
            "(raise max_pixels if the file is trusted)"
        )
    if w < 1 or h < 1:
        raise DataError(f"image has an empty size {w}x{h}")
    if img.format == "JPEG":
        # Let the JPEG decoder downscale by 1/2, 1/4 or 1/8 while the short side stays
        # >= image_size: most of the speed-up for large photos, and of the memory saved.
        img.draft(mode, (image_size, image_size))
    budget = max_pixels * DECODE_BYTES_PER_PIXEL
    pixels, copies = decode_bytes(img, image_size)
    w, h = img.size
    if pixels > budget:
        raise ImageTooLarge(
            f"image too large to decode: {w}x{h} in mode {img.mode} takes "
            f"{pixels / 2**20:,.0f} MiB, more than the {budget / 2**20:,.0f} MiB of an 8-bit "
            f"RGB image of max_pixels={max_pixels:,}; save it with 8 bits a sample or fewer "
            "pixels"
        )
    if copies > budget + DECODE_WORK_BYTES:
        raise ImageTooLarge(
            f"image too large to decode: {w}x{h} is too long and thin to be reduced before it "
            f"is converted ({copies / 2**20:,.0f} MiB, more than the "
            f"{(budget + DECODE_WORK_BYTES) / 2**20:,.0f} MiB allowed with "
            f"max_pixels={max_pixels:,}); crop it"
        )
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1) if "exif" in img.info else 1
    if img.mode in _WIDE_GREY_MODES or img.mode == "F":
        img = _to_8bit(img, _reduce_factor(img.size, image_size))
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
        DataError: When the file is not an image Pillow can read, or is corrupt or truncated.
        ImageTooLarge: When it has more than ``max_pixels`` pixels or needs more memory than
            its budget to decode (see ``read_image``).
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
        raise ImageTooLarge(f"image too large: {exc}") from None
    except FileNotFoundError:
        raise DataError(f"no such file: {source}") from None
    except Exception as exc:  # Pillow's decoders raise many exception types on bad data
        raise DataError(f"corrupt or truncated image ({type(exc).__name__}: {exc})") from None


def read_image_file(path: str | os.PathLike[str]) -> bytes:
    """A file's bytes, read whole only when its first bytes are those of an image.

    Pillow's format checks (the magic numbers of each format, then a few header bytes) decide,
    so a large file that is no image (a video, an archive) is refused after reading a few
    bytes, not read whole into memory. A damaged header still reads the file: the decoder then
    says what is wrong with it.

    Raises:
        DataError: When no image format Pillow reads starts like the file.
        NotARegularFile: A named pipe, device or socket (never opened: it could block).
        OSError: When it cannot be opened or read.
    """
    with open_regular(os.fspath(path)) as f:
        try:
            with Image.open(f):
                pass
        except Image.UnidentifiedImageError:
            raise DataError("not an image Pillow can read") from None
        except Exception:  # a damaged header or a decompression bomb: decode_image words it
            pass
        f.seek(0)
        return f.read()


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
            so a decompression bomb is refused without being decompressed. It also sets the
            memory budget of the decode, also checked from the header: the pixels may take
            ``max_pixels * DECODE_BYTES_PER_PIXEL`` bytes (so RGBA, 32-bit or float images
            must have fewer pixels), the copies after the early reduction that plus
            ``DECODE_WORK_BYTES`` (which only long thin images exceed).

    Returns:
        Pixels, dtype uint8. Shape: (image_size, image_size, channels).

    Raises:
        DataError: For bad arguments, and when the input is not a readable image.
        ImageTooLarge: When it is too large (see ``max_pixels``).
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
