"""Thumbnails for the report's pictures: drawn from the original files, not the model's input.

A model sees 32 x 32 pixels (or fewer); a 1,024-px photograph drawn from those is a blur of
coloured squares. A thumbnail here is decoded from the file itself (JPEG ``draft`` decodes at
1/2, 1/4 or 1/8 scale, so a large photo costs little), keeps its aspect and is padded into a
square cell, with the file's name to write under it. A file that is gone, or whose content no
longer hashes to what was read when the images were loaded, becomes a placeholder that says
so: the picture is still drawn, and says which file it could not show.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from latentsearch.data import DataError, ImageData
from latentsearch.data.files import printable
from latentsearch.data.images import DEFAULT_MAX_PIXELS, read_image_file

THUMB = 144
"""Side, in pixels, of the square cell a thumbnail is padded into."""

PAD_COLOR = (242, 242, 242)  # around a picture that is not square: light grey, so a white
# picture shows where it ends
PLACEHOLDER_COLOR = (226, 226, 226)

MISSING = "missing"  # the file is gone since the images were loaded
CHANGED = "changed"  # its content differs from what was loaded (another SHA-256)
UNREADABLE = "unreadable"  # there, unchanged or unhashed, but Pillow cannot decode it


@dataclass(frozen=True)
class Tile:
    """One thumbnail and what to write under it.

    Attributes:
        pixels: The picture, padded into a square. Shape: (size, size, 3), uint8.
        name: The file's name ("" for images without a file, e.g. CIFAR-10 arrays).
        status: None when drawn from its image, else ``missing``, ``changed`` or
            ``unreadable`` (the pixels are then a placeholder).
    """

    pixels: np.ndarray
    name: str = ""
    status: str | None = None

    @property
    def caption(self) -> str:
        """The name, with the status after it when the image could not be drawn."""
        if self.status is None:
            return self.name
        return f"{self.name} ({self.status})" if self.name else self.status


def _pad(img: Image.Image, size: int) -> np.ndarray:
    """Centres an RGB image of at most ``size`` on each side in a square. Shape: (size, size, 3)."""
    cell = Image.new("RGB", (size, size), PAD_COLOR)
    cell.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return np.asarray(cell, dtype=np.uint8)


def _fit(img: Image.Image, size: int) -> Image.Image:
    """Scaled so that its long side is ``size``, aspect kept: shrunk smoothly, grown crisply."""
    w, h = img.size
    scale = size / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    if scale >= 1:
        # Nearest keeps tiny images (8x8 digits) as crisp squares instead of a blur.
        return img.resize(new, Image.Resampling.NEAREST)
    img.thumbnail(new, Image.Resampling.LANCZOS)
    return img


def pixel_tile(pixels: np.ndarray, size: int = THUMB) -> np.ndarray:
    """Pixels in memory (an image without a file, or the model's input) as a tile.

    Shape: (H, W, C) -> (size, size, 3), C 1 or 3, uint8.
    """
    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    return _pad(_fit(img, size), size)


def placeholder(status: str, size: int = THUMB) -> np.ndarray:
    """A grey square with ``status`` written across it. Shape: (size, size, 3)."""
    img = Image.new("RGB", (size, size), PLACEHOLDER_COLOR)
    draw = ImageDraw.Draw(img)
    draw.line((0, 0, size - 1, size - 1), fill=(200, 200, 200), width=2)
    draw.line((0, size - 1, size - 1, 0), fill=(200, 200, 200), width=2)
    font = ImageFont.load_default(size=max(10, size // 7))
    box = draw.textbbox((0, 0), status, font=font)
    x = (size - (box[2] - box[0])) / 2 - box[0]
    y = (size - (box[3] - box[1])) / 2 - box[1]
    draw.rectangle((x - 4, y - 3, x + box[2] - box[0] + 4, y + box[3] + 3), fill=PLACEHOLDER_COLOR)
    draw.text((x, y), status, fill=(90, 90, 90), font=font)
    return np.asarray(img, dtype=np.uint8)


def _decode(data: bytes, size: int) -> Image.Image:
    """The file's image, decoded near thumbnail size, upright, on white, as RGB."""
    with Image.open(io.BytesIO(data)) as img:
        if img.width * img.height > DEFAULT_MAX_PIXELS:
            raise ValueError(f"{img.width}x{img.height} is too large to draw")
        if img.format == "JPEG":
            img.draft("RGB", (size, size))  # decodes at 1/2, 1/4 or 1/8 scale: fast
        img.load()
        out = ImageOps.exif_transpose(img) or img
        if out.mode in ("RGBA", "LA", "PA") or (out.mode == "P" and "transparency" in out.info):
            rgba = out.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            out = Image.alpha_composite(white, rgba)
        return out.convert("RGB")


def original_tile(path: str | Path, sha256: str | None = None, *, size: int = THUMB) -> Tile:
    """A thumbnail of an image file, aspect kept, or a placeholder saying why there is none.

    Args:
        path: The image file.
        sha256: Its content's SHA-256 when the images were loaded; a file whose bytes hash
            otherwise is ``changed``. None: not checked.
        size: Side of the square tile.

    Returns:
        The tile, its ``name`` the file's name, its ``status`` None when drawn.
    """
    name = printable(Path(path).name)
    try:
        data = read_image_file(path)  # never opens a named pipe or a device (they may block)
    except FileNotFoundError:
        return Tile(placeholder(MISSING, size), name, MISSING)
    except (OSError, DataError):
        return Tile(placeholder(UNREADABLE, size), name, UNREADABLE)
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        return Tile(placeholder(CHANGED, size), name, CHANGED)
    try:
        img = _decode(data, size)
    except Exception:  # Pillow raises many types on bad data; the placeholder says enough
        return Tile(placeholder(UNREADABLE, size), name, UNREADABLE)
    return Tile(_pad(_fit(img, size), size), name)


def image_tiles(
    images: ImageData, positions: Sequence[int] | np.ndarray, *, size: int = THUMB
) -> list[Tile]:
    """Tiles of some images of a set: from their files when they have them, else their pixels.

    Args:
        images: The set (its ``paths`` and ``sha256``, when present, are read).
        positions: Which images, in the order wanted.
        size: Side of each square tile.
    """
    tiles = []
    for p in positions:
        p = int(p)
        if images.paths is not None and images.paths[p]:
            sha = images.sha256[p] if images.sha256 is not None else None
            tiles.append(original_tile(images.paths[p], sha, size=size))
        else:
            tiles.append(Tile(pixel_tile(np.asarray(images.pixels[p]), size)))
    return tiles
