"""read_image: one file or upload decoded exactly like the folder source, safely."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentsearch.data import DataError, read_image
from latentsearch.data.images import resize_pixels


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _claimed_size_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height``: a decompression bomb's header."""
    data = bytearray(_png_bytes(Image.new("RGB", (1, 1))))
    # Signature (8 bytes), then the IHDR chunk: length (4), b"IHDR" (4), width, height, ...
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_png_path_bytes_and_file_object_agree(tmp_path: Path, files) -> None:
    path = files.png(tmp_path / "red.png", (255, 0, 0), size=(20, 20))
    from_path = read_image(path, 8)
    from_bytes = read_image(path.read_bytes(), 8)
    with open(path, "rb") as f:
        from_file = read_image(f, 8)
    assert from_path.shape == (8, 8, 3) and from_path.dtype == np.uint8
    np.testing.assert_array_equal(from_path, from_bytes)
    np.testing.assert_array_equal(from_path, from_file)
    assert (from_path == [255, 0, 0]).all()


def test_grey_becomes_rgb_or_stays_grey(tmp_path: Path, files) -> None:
    path = files.grey(tmp_path / "g.png", 77)
    rgb = read_image(path, 16)
    assert rgb.shape == (16, 16, 3) and (rgb == 77).all()
    grey = read_image(path, 16, channels=1)
    assert grey.shape == (16, 16, 1) and (grey == 77).all()


def test_jpeg_downscale(tmp_path: Path, files) -> None:
    path = files.jpeg(tmp_path / "big.jpg", (0, 200, 0), size=(400, 300))
    out = read_image(path, 24)
    assert out.shape == (24, 24, 3)
    assert np.abs(out.astype(int) - [0, 200, 0]).max() <= 3


def test_non_square_keeps_the_centred_square(tmp_path: Path, files) -> None:
    out = read_image(files.non_square(tmp_path / "wide.png"), 12)
    assert out.shape == (12, 12, 3)
    # The centre third of the 90x30 image is pure green.
    assert (out[:, 2:-2] == [0, 255, 0]).all()
    assert out[:, :, 1].mean() > 240


def test_transparent_pixels_become_white() -> None:
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    out = read_image(_png_bytes(img), 10)
    assert (out == 255).all()


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = [255, 0, 0]  # left half red
    arr[:, 20:] = [0, 0, 255]  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": left becomes top
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, exif=exif)
    out = read_image(buf.getvalue(), 20).astype(int)
    assert out[0, :, 0].mean() > 200 and out[0, :, 2].mean() < 50  # top row red
    assert out[-1, :, 2].mean() > 200 and out[-1, :, 0].mean() < 50  # bottom row blue


@pytest.mark.parametrize(
    "payload",
    [b"", b"hello, I am text", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"\xff\xd8\xff\xe0garbage"],
    ids=["empty", "text", "bad-png", "bad-jpeg"],
)
def test_garbage_bytes_raise_data_error(payload: bytes) -> None:
    with pytest.raises(DataError):
        read_image(payload, 16)


def test_truncated_jpeg_raises_data_error(tmp_path: Path, files) -> None:
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_image(files.corrupt_jpeg(tmp_path / "c.jpg"), 16)


@pytest.mark.parametrize("side", [8_000, 100_000])
def test_decompression_bomb_is_refused_before_decoding(side: int) -> None:
    # 8,000² passes Pillow's own limit but not the default max_pixels; 100,000² fails both.
    with pytest.raises(DataError, match="too large"):
        read_image(_claimed_size_png(side, side), 16)


def test_max_pixels_argument() -> None:
    data = _png_bytes(Image.new("RGB", (40, 30)))
    assert read_image(data, 8, max_pixels=1200).shape == (8, 8, 3)
    with pytest.raises(DataError, match="max_pixels=1,199"):
        read_image(data, 8, max_pixels=1199)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 0}, "image_size"),
        ({"image_size": 8, "channels": 2}, "channels"),
        ({"image_size": 8, "max_pixels": 0}, "max_pixels"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_image(_png_bytes(Image.new("RGB", (4, 4))), **kwargs)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_image(tmp_path / "nope.png", 8)


def test_resize_pixels_grey_and_identity() -> None:
    pixels = np.full((3, 8, 8, 1), 200, dtype=np.uint8)
    assert resize_pixels(pixels, 8) is pixels
    out = resize_pixels(pixels, 16)
    assert out.shape == (3, 16, 16, 1) and (out == 200).all()


def _gradient(height: int = 24, width: int = 40) -> np.ndarray:
    """An 8-bit grey gradient covering 0..255. Shape: (height, width)."""
    return np.linspace(0, 255, height * width).round().astype(np.uint8).reshape(height, width)


def _sixteen_bit(eight: np.ndarray, how: str) -> bytes:
    """``eight`` as a 16-bit file (``v * 257``, as image tools widen 8-bit values)."""
    wide = eight.astype(np.uint16) * 257
    buf = io.BytesIO()
    if how == "png-I;16":
        Image.fromarray(wide).save(buf, format="PNG")
    elif how == "tiff-I":  # 32-bit integers holding 16-bit values
        Image.fromarray(wide.astype(np.int32)).save(buf, format="TIFF")
    else:  # big-endian 16-bit TIFF
        Image.frombytes("I;16B", eight.shape[::-1], wide.astype(">u2").tobytes()).save(
            buf, format="TIFF"
        )
    return buf.getvalue()


@pytest.mark.parametrize("how", ["png-I;16", "tiff-I", "tiff-I;16B"])
def test_16_bit_grey_decodes_like_its_8_bit_original(how: str) -> None:
    eight = _gradient()
    original = read_image(_png_bytes(Image.fromarray(eight, mode="L")), 16)
    decoded = read_image(_sixteen_bit(eight, how), 16)
    np.testing.assert_array_equal(decoded, original)
    assert decoded.mean() < 200  # not nearly white, as a clipping conversion makes it


def test_16_bit_png_file_decodes_like_its_8_bit_original(tmp_path: Path) -> None:
    eight = _gradient(32, 32)
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "16.png")
    Image.fromarray(eight, mode="L").save(tmp_path / "8.png")
    assert Image.open(tmp_path / "16.png").mode.startswith("I")
    np.testing.assert_array_equal(
        read_image(tmp_path / "16.png", 32), read_image(tmp_path / "8.png", 32)
    )


def test_float_images_in_0_1_are_scaled() -> None:
    eight = _gradient()
    img = Image.fromarray(eight.astype(np.float32) / 255.0, mode="F")
    buf = io.BytesIO()
    img.save(buf, format="TIFF")
    decoded = read_image(buf.getvalue(), 16, channels=1)
    expected = read_image(_png_bytes(Image.fromarray(eight, mode="L")), 16, channels=1)
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("mode", ["P", "L", "RGB", "1"])
def test_big_images_are_reduced_before_converting(mode: str) -> None:
    # Uniform halves: reducing early must not change what the decoder sees.
    arr = np.zeros((600, 900, 3), dtype=np.uint8)
    arr[:, 450:] = 255
    img = Image.fromarray(arr).convert(mode)
    out = read_image(_png_bytes(img), 8)
    assert out.shape == (8, 8, 3)
    # The centred 600x600 square is half black, half white (columns 150..449 | 450..749).
    assert (out[:, :3] == 0).all() and (out[:, -3:] == 255).all()


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"compression": "tiff_adobe_deflate"} if fmt == "TIFF" else {}))
    return buf.getvalue()


WIDE = {
    "png-I;16": lambda side: _encoded(Image.fromarray(np.zeros((side, side), np.uint16)), "PNG"),
    "tiff-F": lambda side: _encoded(Image.fromarray(np.zeros((side, side), np.float32)), "TIFF"),
    "tiff-I": lambda side: _encoded(Image.fromarray(np.zeros((side, side), np.int32)), "TIFF"),
}


@pytest.mark.parametrize("kind", sorted(WIDE))
def test_wide_images_convert_without_full_size_copies(kind: str) -> None:
    import tracemalloc

    side = 1500
    data = WIDE[kind](side)
    tracemalloc.start()  # sees NumPy's arrays (not Pillow's own pixels)
    try:
        out = read_image(data, 16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (16, 16, 3) and (out == 0).all()
    # Converting the whole image at once took several 8-byte copies of it (18 MB each); band
    # by band, less than one.
    assert peak < side * side * 8, f"{peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("mode", ["I;16", "F", "I", "P", "PT", "1", "RGBA"])
@pytest.mark.parametrize(
    ("shape", "image_size"), [((301, 457), 8), ((97, 1500), 16), ((40, 50), 16)]
)
def test_band_by_band_conversion_gives_the_same_pixels(
    mode: str, shape: tuple[int, int], image_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latentsearch.data import images

    rng = np.random.default_rng(3)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, shape, dtype=np.uint16))
    elif mode == "F":
        values = rng.random(shape).astype(np.float32)
        values[0, 0], values[-1, -1] = np.nan, np.inf
        img = Image.fromarray(values)
    elif mode == "I":
        img = Image.fromarray(rng.integers(0, 70_000, shape).astype(np.int32))
    else:
        rgba = Image.fromarray(rng.integers(0, 256, (*shape, 4), dtype=np.uint8))
        img = rgba.convert("RGB").convert("P") if mode in ("P", "PT") else rgba.convert(mode)
        if mode == "PT":
            img.info["transparency"] = 7
    data = _encoded(img, "PNG" if mode not in ("F", "I") else "TIFF")
    whole = read_image(data, image_size)
    monkeypatch.setattr(images, "_BAND_BYTES", 1)  # bands as thin as the reduction allows
    np.testing.assert_array_equal(read_image(data, image_size), whole)


def test_long_thin_image_over_the_memory_budget_is_refused_from_its_header() -> None:
    from latentsearch.data import ImageTooLarge

    # 39 Mpx passes max_pixels, but is too thin to be reduced before its full-size copies.
    with pytest.raises(ImageTooLarge, match="too large to decode"):
        read_image(_claimed_size_png(1300, 30_000), 224)


def test_a_large_non_image_file_is_refused_from_its_first_bytes(tmp_path: Path) -> None:
    import tracemalloc

    from latentsearch.data.images import read_image_file

    big = tmp_path / "video.mp4"
    with open(big, "wb") as f:
        f.write(b"\0\0\0\x18ftypmp42")
        f.truncate(64 * 1024 * 1024)  # sparse: nothing is written to disk
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="not an image"):
            read_image_file(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"{peak / 2**20:.1f} MiB"
    png = tmp_path / "a.png"
    png.write_bytes(_png_bytes(Image.new("RGB", (4, 4))))
    assert read_image_file(png) == png.read_bytes()


def test_wide_modes_count_their_bytes_against_the_budget() -> None:
    from latentsearch.data import ImageTooLarge

    floats = _encoded(Image.fromarray(np.zeros((100, 100), np.float32)), "TIFF")  # 40,000 B
    with pytest.raises(ImageTooLarge, match="too large to decode: 100x100 in mode F"):
        read_image(floats, 8, max_pixels=10_000)  # budget 30,000 bytes
    assert read_image(floats, 8, max_pixels=13_334).shape == (8, 8, 3)
    sixteen = _encoded(Image.fromarray(np.zeros((100, 100), np.uint16)), "PNG")  # 20,000 B
    assert read_image(sixteen, 8, max_pixels=10_000).shape == (8, 8, 3)
