"""styletx.images: decoding untrusted bytes, pixel limits, colour modes, encoding, resizing."""

from __future__ import annotations

import io
import logging
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image as PILImage
from PIL import ImageFile, ImageOps

from styletx.colors import (
    match_luminance,
    rgb_to_yiq,
    to_luminance,
    transfer_luminance,
    yiq_to_rgb,
)
from styletx.errors import ImageTooLarge, InvalidImage, InvalidOptions
from styletx.geometry import fit_longest
from styletx.images import (
    DEFAULT_MAX_PIXELS,
    FORMATS,
    decode_image,
    encode_image,
    image_dimensions,
    resize_cover,
    resize_to,
    side_by_side,
)
from tests.support.weights import tiny_image

RGB = npt.NDArray[np.uint8]


def save(image: PILImage.Image, fmt: str, **params: Any) -> bytes:
    """Encode a PIL image with PIL itself (the test's independent encoder)."""
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def pil_rgb(array: RGB) -> PILImage.Image:
    return PILImage.fromarray(array)


def png_with_header_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR is patched to declare width x height (CRC fixed up)."""
    data = bytearray(save(PILImage.new("RGB", (1, 1)), "PNG"))
    # Signature (8) + chunk length (4) + b"IHDR" (4): width and height follow, then 5 bytes, CRC.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def gif_with_frame(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A minimal GIF whose first image descriptor declares `frame` on a `screen`-sized canvas."""
    header = b"GIF89a" + struct.pack("<HHBBB", *screen, 0, 0, 0)
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, *frame, 0)
    return header + descriptor + b"\x02\x02\x4c\x01\x00;"


@pytest.fixture
def forbid_pixel_loading(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Call it (after building the test's files) to make any pixel decoding fail loudly."""

    def refuse(self: PILImage.Image) -> None:
        raise AssertionError("pixel data was decoded")

    def forbid() -> None:
        monkeypatch.setattr(PILImage.Image, "load", refuse)
        monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)

    return forbid


# --- formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_encode_then_decode_round_trips(fmt: str) -> None:
    image = tiny_image(40, 56, seed=3)
    data = encode_image(image, fmt, quality=95)
    decoded = decode_image(data)
    assert decoded.shape == image.shape
    assert decoded.dtype == np.uint8
    error = np.abs(decoded.astype(int) - image.astype(int))
    if fmt == "png":
        assert np.array_equal(decoded, image)
    else:
        assert error.mean() < 4.0


@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("jpeg", b"\xff\xd8\xff")])
def test_encode_writes_the_requested_format(fmt: str, magic: bytes) -> None:
    assert encode_image(tiny_image(8, 8), fmt).startswith(magic)


def test_encode_webp_is_a_riff_webp_container() -> None:
    data = encode_image(tiny_image(8, 8), "webp")
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def test_encode_accepts_jpg_alias_and_any_case() -> None:
    image = tiny_image(8, 8)
    assert encode_image(image, "JPG").startswith(b"\xff\xd8\xff")
    assert encode_image(image, " PNG ").startswith(b"\x89PNG")


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_lossless_input_formats_decode_exactly(fmt: str) -> None:
    image = tiny_image(24, 32, seed=5)
    assert np.array_equal(decode_image(save(pil_rgb(image), fmt)), image)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_lossy_input_formats_decode_close(fmt: str) -> None:
    image = tiny_image(24, 32, seed=5)
    decoded = decode_image(save(pil_rgb(image), fmt, quality=95))
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 4.0


def test_gif_decodes_its_first_frame_only() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [PILImage.new("RGB", (12, 10), colour) for colour in colours]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert getattr(PILImage.open(io.BytesIO(data)), "n_frames", 1) == 3
    decoded = decode_image(data)
    assert decoded.shape == (10, 12, 3)
    assert (decoded == (255, 0, 0)).all()


def test_decode_reads_str_and_path_arguments(tmp_path: Path) -> None:
    image = tiny_image(16, 20, seed=7)
    path = tmp_path / "picture.png"
    path.write_bytes(save(pil_rgb(image), "PNG"))
    assert np.array_equal(decode_image(path), image)
    assert np.array_equal(decode_image(str(path)), image)


def test_decode_returns_a_writeable_contiguous_array() -> None:
    decoded = decode_image(save(PILImage.new("RGB", (5, 4), (1, 2, 3)), "PNG"))
    assert decoded.flags.writeable and decoded.flags.c_contiguous
    decoded[0, 0] = 0  # the engine may modify it in place


def test_formats_outside_the_supported_set_are_refused_unparsed() -> None:
    ico = save(PILImage.new("RGB", (16, 16)), "ICO")
    with pytest.raises(InvalidImage, match="not an image in a supported format"):
        decode_image(ico, field="style_images[0]")


# --- colour modes -------------------------------------------------------------------------


def test_rgba_is_composited_on_white() -> None:
    rgba = np.array(
        [[[10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128], [200, 100, 0, 64]]], np.uint8
    )
    decoded = decode_image(save(PILImage.fromarray(rgba, "RGBA"), "PNG"))
    assert decoded[0, 0].tolist() == [255, 255, 255]  # fully transparent -> white
    assert decoded[0, 1].tolist() == [10, 20, 30]  # opaque -> unchanged
    assert decoded[0, 2].tolist() == [127, 127, 127]  # half-transparent black -> mid grey
    expected = [round((c * 64 + 255 * (255 - 64)) / 255) for c in (200, 100, 0)]
    assert decoded[0, 3].tolist() == expected


def test_la_is_composited_on_white() -> None:
    la = PILImage.new("LA", (2, 1))
    la.putpixel((0, 0), (40, 0))
    la.putpixel((1, 0), (40, 255))
    decoded = decode_image(save(la, "PNG"))
    assert decoded[0].tolist() == [[255, 255, 255], [40, 40, 40]]


def test_palette_image_uses_its_palette() -> None:
    image = PILImage.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 128, 255] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    decoded = decode_image(save(image, "PNG"))
    assert decoded[0].tolist() == [[255, 0, 0], [0, 128, 255]]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_becomes_white(fmt: str) -> None:
    image = PILImage.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 128, 255] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    decoded = decode_image(save(image, fmt, transparency=0))
    assert decoded[0].tolist() == [[255, 255, 255], [0, 128, 255]]


def test_rgb_colour_key_transparency_becomes_white() -> None:
    image = PILImage.new("RGB", (2, 1), (9, 9, 9))
    image.putpixel((1, 0), (50, 60, 70))
    decoded = decode_image(save(image, "PNG", transparency=(9, 9, 9)))
    assert decoded[0].tolist() == [[255, 255, 255], [50, 60, 70]]


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_converts_to_rgb(fmt: str) -> None:
    cmyk = [(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255), (0, 255, 255, 0)]
    expected = [[255, 255, 255], [0, 255, 255], [0, 0, 0], [255, 0, 0]]
    image = PILImage.new("CMYK", (8 * len(cmyk), 8))
    for index, colour in enumerate(cmyk):
        image.paste(colour, (8 * index, 0, 8 * index + 8, 8))
    decoded = decode_image(save(image, fmt, **({"quality": 100} if fmt == "JPEG" else {})))
    centres = decoded[4, 4::8].astype(int)
    assert np.abs(centres - np.array(expected)).max() <= (0 if fmt == "TIFF" else 3)


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    values = np.array([[0, 65535, 257, 1000, 32896]], dtype=np.uint16)
    image = PILImage.fromarray(values)
    assert image.mode == "I;16"
    decoded = decode_image(save(image, "PNG"))
    assert decoded[0, :, 0].tolist() == [0, 255, 1, 4, 128]  # round(v / 257); clipping gives 255s
    assert (decoded[..., 0] == decoded[..., 1]).all() and (decoded[..., 1] == decoded[..., 2]).all()


def test_16_bit_greyscale_transparency_key_becomes_white() -> None:
    image = PILImage.fromarray(np.array([[0, 300]], dtype=np.uint16))
    decoded = decode_image(save(image, "PNG", transparency=300))
    assert decoded[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_32_bit_integer_greyscale_on_a_16_bit_scale() -> None:
    image = PILImage.fromarray(np.array([[0, 65535, 25700, -5]], dtype=np.int32))
    assert image.mode == "I"
    decoded = decode_image(save(image, "TIFF"))
    assert decoded[0, :, 0].tolist() == [0, 255, 100, 0]


def test_32_bit_integer_greyscale_with_8_bit_values_is_kept() -> None:
    image = PILImage.fromarray(np.array([[0, 77, 255]], dtype=np.int32))
    assert decode_image(save(image, "TIFF"))[0, :, 0].tolist() == [0, 77, 255]


def test_float_greyscale_in_0_to_1_is_scaled() -> None:
    image = PILImage.fromarray(np.array([[0.0, 0.5, 1.0, 0.2]], dtype=np.float32))
    assert image.mode == "F"
    assert decode_image(save(image, "TIFF"))[0, :, 0].tolist() == [0, 128, 255, 51]


def test_float_greyscale_on_8_bit_scale_is_clipped_and_rounded() -> None:
    image = PILImage.fromarray(np.array([[200.4, 300.0, -3.0, np.nan]], dtype=np.float32))
    assert decode_image(save(image, "TIFF"))[0, :, 0].tolist() == [200, 255, 0, 0]


def test_greyscale_and_bilevel_become_grey_rgb() -> None:
    assert decode_image(save(PILImage.new("L", (3, 2), 77), "PNG"))[1, 2].tolist() == [77] * 3
    bilevel = PILImage.new("1", (2, 1), 0)
    bilevel.putpixel((1, 0), 1)
    assert decode_image(save(bilevel, "BMP"))[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_lab_uses_a_colour_transform() -> None:
    image = PILImage.new("LAB", (2, 1), (255, 128, 128))  # L=100, a=b=0: white
    image.putpixel((1, 0), (0, 128, 128))  # L=0: black
    decoded = decode_image(save(image, "TIFF")).astype(int)
    assert (decoded[0, 0] >= 250).all()
    assert (decoded[0, 1] <= 5).all()


# --- EXIF orientation ---------------------------------------------------------------------


def _marked_image() -> PILImage.Image:
    """32 wide x 16 tall: red top-left, blue top-right, green bottom half (no symmetry)."""
    array = np.zeros((16, 32, 3), np.uint8)
    array[:8, :16] = (255, 0, 0)
    array[:8, 16:] = (0, 0, 255)
    array[8:] = (0, 255, 0)
    return pil_rgb(array)


@pytest.mark.parametrize(
    ("orientation", "expected_turns"),
    [(3, 2), (6, -1), (8, 1)],  # np.rot90 turns, counter-clockwise: 6 = 90 cw, 8 = 90 ccw
)
def test_exif_orientation_is_applied(orientation: int, expected_turns: int) -> None:
    stored = decode_image(save(_marked_image(), "JPEG", quality=95))
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    tagged = save(_marked_image(), "JPEG", quality=95, exif=exif)
    upright = decode_image(tagged)
    assert np.array_equal(upright, np.rot90(stored, expected_turns))
    if orientation == 6:  # rotated clockwise: the left (red) column is now the top row
        assert upright.shape == (32, 16, 3)
        assert upright[2, 12, 0] > 200 and upright[2, 12, 2] < 50
    assert image_dimensions(tagged) == (32, 16)  # the header's stored size


def test_unreadable_exif_keeps_the_picture(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(image: PILImage.Image, *, in_place: bool = False) -> None:
        raise SyntaxError("bad IFD")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    with caplog.at_level(logging.WARNING, logger="styletx.images"):
        decoded = decode_image(save(PILImage.new("RGB", (4, 2), (5, 6, 7)), "PNG"), field="x")
    assert decoded.shape == (2, 4, 3)
    assert "x: ignoring unreadable EXIF orientation" in caplog.text


# --- pixel limits (decompression bombs) ---------------------------------------------------


def test_bomb_png_is_refused_from_its_header(forbid_pixel_loading: Callable[[], None]) -> None:
    bomb = png_with_header_size(20_000, 20_000)
    forbid_pixel_loading()
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(bomb, field="content_image")
    assert caught.value.pixels == 400_000_000
    assert caught.value.limit == DEFAULT_MAX_PIXELS
    assert caught.value.field == "content_image"
    assert isinstance(caught.value, InvalidImage)


def test_image_in_pils_warning_band_is_refused_without_any_warning(
    forbid_pixel_loading: Callable[[], None],
) -> None:
    # 100 Mpx: above PIL's MAX_IMAGE_PIXELS (which only warns) and above our default limit.
    data = png_with_header_size(10_000, 10_000)
    forbid_pixel_loading()
    with warnings.catch_warnings(record=True) as emitted:
        warnings.simplefilter("always")
        with pytest.raises(ImageTooLarge) as caught:
            decode_image(data)
    assert caught.value.pixels == 100_000_000
    assert [str(warning.message) for warning in emitted] == []


def test_image_dimensions_reads_the_header_only(forbid_pixel_loading: Callable[[], None]) -> None:
    files = [png_with_header_size(20_000, 20_000)]
    files += [save(PILImage.new("RGB", (7, 3)), fmt) for fmt in ("WEBP", "JPEG", "GIF", "TIFF")]
    forbid_pixel_loading()
    assert [image_dimensions(data) for data in files] == [(20_000, 20_000)] + [(7, 3)] * 4


def test_max_pixels_is_inclusive() -> None:
    data = save(PILImage.new("RGB", (64, 64)), "PNG")
    assert decode_image(data, max_pixels=64 * 64).shape == (64, 64, 3)
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(data, max_pixels=64 * 64 - 1)
    assert (caught.value.pixels, caught.value.limit) == (4096, 4095)


def test_a_lower_pil_ceiling_is_honoured_as_image_too_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLarge) as caught:
            decode_image(save(PILImage.new("RGB", (64, 64)), "PNG"))
    assert (caught.value.pixels, caught.value.limit) == (4096, 1000)


def test_pil_bomb_error_during_load_maps_to_image_too_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def bomb(self: PILImage.Image) -> None:
        raise PILImage.DecompressionBombError("Image size (123456789 pixels) exceeds limit")

    monkeypatch.setattr(ImageFile.ImageFile, "load", bomb)
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(save(PILImage.new("RGB", (8, 8)), "PNG"), field="style_images[1]")
    assert caught.value.pixels == 123_456_789
    assert caught.value.field == "style_images[1]"


def test_gif_frame_larger_than_its_screen_is_refused() -> None:
    # PIL grows the canvas to the first frame while parsing and raises its own bomb error.
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(gif_with_frame((1, 1), (20_000, 20_000)))
    assert caught.value.pixels == 400_000_000
    with pytest.raises(ImageTooLarge):  # below PIL's error, above our limit
        decode_image(gif_with_frame((1, 1), (8_000, 8_000)))


def test_max_pixels_must_be_positive() -> None:
    with pytest.raises(InvalidOptions) as caught:
        decode_image(save(PILImage.new("RGB", (1, 1)), "PNG"), max_pixels=0)
    assert caught.value.field == "max_pixels"


# --- unusable input -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_first_half_of_a_file_is_invalid(fmt: str) -> None:
    rng = np.random.default_rng(0)
    data = save(pil_rgb(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)), fmt)
    with pytest.raises(InvalidImage) as caught:
        decode_image(data[: len(data) // 2], field="content_image")
    assert caught.value.field == "content_image"
    assert str(caught.value).startswith("content_image: ")
    assert not isinstance(caught.value, ImageTooLarge)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_jpeg_missing_only_its_last_bytes_is_invalid() -> None:
    data = save(pil_rgb(tiny_image(32, 32)), "JPEG")
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(data[:-40])


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, world" * 10, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, bytes(range(256))],
    ids=["empty", "text", "png-signature-only", "binary"],
)
def test_garbage_is_invalid_and_names_the_field(data: bytes) -> None:
    with pytest.raises(InvalidImage) as caught:
        decode_image(data, field="style_images[0]")
    assert caught.value.field == "style_images[0]"
    assert "style_images[0]" in str(caught.value)


def test_empty_input_says_so() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(b"")


def test_missing_path_and_directory_are_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match="cannot read") as caught:
        decode_image(tmp_path / "nope.png", field="content_image")
    assert caught.value.field == "content_image"
    with pytest.raises(InvalidImage, match="cannot read"):
        decode_image(str(tmp_path))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(empty)


def test_zero_sized_headers_are_invalid() -> None:
    bmp = bytearray(save(PILImage.new("RGB", (1, 1)), "BMP"))
    bmp[18:22] = struct.pack("<i", 0)  # BITMAPINFOHEADER width
    for data in (png_with_header_size(0, 5), png_with_header_size(5, 0), bytes(bmp)):
        with pytest.raises(InvalidImage) as caught:
            decode_image(data)
        assert not isinstance(caught.value, ImageTooLarge)
    with pytest.raises(InvalidImage):
        decode_image(gif_with_frame((0, 0), (0, 0)))


def test_randomly_corrupted_files_raise_only_invalid_image() -> None:
    rng = np.random.default_rng(42)
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"):
        original = bytearray(save(pil_rgb(tiny_image(16, 16)), fmt))
        for _ in range(40):
            corrupt = bytearray(original)
            for position in rng.integers(0, len(corrupt), 4):
                corrupt[position] = int(rng.integers(0, 256))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL warns about some corrupt metadata
                try:
                    decoded = decode_image(bytes(corrupt))
                except InvalidImage:
                    continue
            assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3


# --- encoding options ---------------------------------------------------------------------


@pytest.mark.parametrize("quality", [0, 101, -5, 1.5, True, "90"])
def test_quality_must_be_an_integer_from_1_to_100(quality: Any) -> None:
    with pytest.raises(InvalidOptions) as caught:
        encode_image(tiny_image(8, 8), "jpeg", quality=quality)
    assert caught.value.field == "output_quality"


@pytest.mark.parametrize("quality", [1, 100])
def test_quality_bounds_are_accepted(quality: int) -> None:
    assert decode_image(encode_image(tiny_image(8, 8), "webp", quality=quality)).shape == (8, 8, 3)


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_quality_controls_lossy_size(fmt: str) -> None:
    image = tiny_image(64, 64, seed=9)
    assert len(encode_image(image, fmt, quality=10)) < len(encode_image(image, fmt, quality=95))


@pytest.mark.parametrize("fmt", ["gif", "bmp", "", "pngx"])
def test_unknown_output_format_is_invalid_options(fmt: str) -> None:
    with pytest.raises(InvalidOptions) as caught:
        encode_image(tiny_image(8, 8), fmt)
    assert caught.value.field == "output_format"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4, 4, 3), np.float32),
        np.zeros((0, 4, 3), np.uint8),
    ],
    ids=["grey", "rgba", "float", "empty"],
)
def test_encode_refuses_arrays_that_are_not_rgb_uint8(image: Any) -> None:
    with pytest.raises(ValueError, match="expected"):
        encode_image(image)


# --- resizing and composing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "size", "expected"),
    [
        ((40, 100), 50, (20, 50)),  # landscape
        ((100, 40), 50, (50, 20)),  # portrait
        ((30, 30), 64, (64, 64)),  # square, upscaled
        ((4, 2), 3, (3, 2)),  # 1.5 rounds half up
        ((3, 300), 30, (1, 30)),  # 0.3 would round to 0: each side stays >= 1
    ],
)
def test_fit_longest_then_resize_to_keeps_aspect_ratio(
    shape: tuple[int, int], size: int, expected: tuple[int, int]
) -> None:
    assert fit_longest(*shape, size) == expected
    resized = resize_to(tiny_image(*shape, seed=1), *fit_longest(*shape, size))
    assert resized.shape == (*expected, 3)
    assert resized.dtype == np.uint8


@pytest.mark.parametrize("size", [0, -1])
def test_resize_refuses_non_positive_sizes(size: int) -> None:
    with pytest.raises(ValueError):
        resize_to(tiny_image(8, 8), size, 8)
    with pytest.raises(ValueError):
        resize_cover(tiny_image(8, 8), 8, size)


def test_resize_cover_crops_the_centre_instead_of_squashing() -> None:
    # Three vertical bands, red | green | blue, on a 20 x 60 image; the target is square.
    array = np.zeros((20, 60, 3), np.uint8)
    array[:, :20], array[:, 20:40], array[:, 40:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    covered = resize_cover(array, 10, 10)
    assert covered.shape == (10, 10, 3)
    # Scaled to 10 x 30 (aspect kept), the middle 10 columns are the green band only (up to
    # Lanczos ringing at its edges); squashed, red and blue would fill a third each.
    assert np.abs(covered.astype(int) - (0, 255, 0)).max() <= 16
    tall = resize_cover(array, 40, 20)  # taller than the image: scaled up to 40 x 120
    assert tall.shape == (40, 20, 3)
    assert np.abs(tall.astype(int) - (0, 255, 0)).max() <= 16
    assert resize_cover(array, 20, 60).tobytes() == array.tobytes()


def test_resize_to_gives_exact_size_and_copies() -> None:
    image = tiny_image(20, 30)
    assert resize_to(image, 7, 45).shape == (7, 45, 3)
    same = resize_to(image, 20, 30)
    assert np.array_equal(same, image)
    same[0, 0] = 0
    assert same is not image


def test_side_by_side_scales_to_the_tallest_and_separates_with_white() -> None:
    panels = [
        np.full((40, 60, 3), 10, np.uint8),
        np.full((20, 20, 3), 100, np.uint8),
        np.full((80, 40, 3), 200, np.uint8),
    ]
    combined = side_by_side(panels)
    assert combined.shape == (80, 120 + 8 + 80 + 8 + 40, 3)
    assert (combined[:, :120] == 10).all()
    assert (combined[:, 120:128] == 255).all()
    assert (combined[:, 128:208] == 100).all()
    assert (combined[:, 216:] == 200).all()


def test_side_by_side_with_explicit_height_and_no_gap() -> None:
    panels = [tiny_image(40, 60), tiny_image(20, 20)]
    assert side_by_side(panels, height=10, gap=0).shape == (10, 15 + 10, 3)


def test_side_by_side_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        side_by_side([])
    with pytest.raises(ValueError):
        side_by_side([tiny_image(8, 8)], gap=-1)
    with pytest.raises(ValueError):
        side_by_side([tiny_image(8, 8)], height=0)


# --- colour spaces (preserve_colors) ------------------------------------------------------


def test_yiq_round_trips_and_y_is_luminance() -> None:
    rgb = tiny_image(8, 8, seed=4).astype(np.float32)
    yiq = rgb_to_yiq(rgb)
    assert yiq.dtype == np.float32
    assert np.allclose(yiq_to_rgb(yiq), rgb, atol=1e-3)
    assert np.allclose(yiq[..., 0], rgb @ np.array([0.299, 0.587, 0.114], np.float32), atol=1e-3)
    grey = rgb_to_yiq(np.full((1, 1, 3), 90.0, np.float32))[0, 0]
    assert np.allclose(grey, [90.0, 0.0, 0.0], atol=1e-3)  # greys carry no chrominance


def test_to_luminance_is_grey_rgb() -> None:
    image = np.array([[[255, 0, 0], [0, 255, 0], [255, 255, 255]]], np.uint8)
    assert to_luminance(image)[0].tolist() == [[76] * 3, [150] * 3, [255] * 3]


def test_transfer_luminance_keeps_colours_of_one_and_brightness_of_the_other() -> None:
    colors = tiny_image(16, 16, seed=11)
    luminance = np.full((16, 16, 3), 120, np.uint8)
    combined = transfer_luminance(luminance, colors)
    yiq = rgb_to_yiq(combined.astype(np.float32))
    source = rgb_to_yiq(colors.astype(np.float32))
    in_gamut = (combined > 0).all(axis=-1) & (combined < 255).all(axis=-1)
    assert in_gamut.mean() > 0.5
    assert np.abs(yiq[..., 0] - 120)[in_gamut].max() < 1.5
    assert np.abs(yiq[..., 1:] - source[..., 1:])[in_gamut].max() < 1.5
    with pytest.raises(ValueError, match="shapes differ"):
        transfer_luminance(luminance, colors[:8])


def test_match_luminance_takes_the_reference_statistics() -> None:
    image = tiny_image(32, 32, seed=12)
    reference = (tiny_image(32, 32, seed=13) // 3 + 60).astype(np.uint8)
    matched = rgb_to_yiq(match_luminance(image, reference).astype(np.float32))[..., 0]
    target = rgb_to_yiq(reference.astype(np.float32))[..., 0]
    assert abs(matched.mean() - target.mean()) < 0.6
    assert abs(matched.std() - target.std()) < 0.6
    flat = match_luminance(np.full((4, 4, 3), 9, np.uint8), reference)
    assert np.allclose(flat, round(float(target.mean())), atol=1)  # no spread to scale


# --- isolation ----------------------------------------------------------------------------


def test_module_does_not_import_tensorflow() -> None:
    code = "import sys, styletx.images; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_match_colors_moves_each_channel_to_the_styles_mean_and_spread() -> None:
    from styletx.colors import match_colors

    content = tiny_image(40, 50, seed=1)
    style = (np.random.default_rng(2).normal((200, 90, 30), (10, 40, 5), (30, 30, 3))).clip(0, 255)
    style = style.astype(np.uint8)
    matched = match_colors(content, [style], [1.0])
    assert matched.shape == content.shape and matched.dtype == np.uint8
    got = matched.reshape(-1, 3).astype(float)
    want = style.reshape(-1, 3).astype(float)
    np.testing.assert_allclose(got.mean(axis=0), want.mean(axis=0), atol=1.0)
    np.testing.assert_allclose(got.std(axis=0), want.std(axis=0), atol=1.5)
    # The content's shapes stay: matching is an affine map per channel.
    for c in range(3):
        assert np.corrcoef(got[:, c], content.reshape(-1, 3)[:, c])[0, 1] > 0.99


def test_match_colors_blends_several_styles_as_one_mixture() -> None:
    from styletx.colors import match_colors

    content = tiny_image(32, 32, seed=3)
    dark, light = np.full((8, 8, 3), 100, np.uint8), np.full((8, 8, 3), 160, np.uint8)
    matched = match_colors(content, [dark, light], [0.5, 0.5]).reshape(-1, 3).astype(float)
    # The mixture of 100 and 160 in equal parts: mean 130, spread 30 (each alone: spread 0).
    np.testing.assert_allclose(matched.mean(axis=0), 130, atol=1.0)
    np.testing.assert_allclose(matched.std(axis=0), 30, atol=1.0)
    flat = match_colors(np.full((4, 4, 3), 7, np.uint8), [light], [1.0])
    assert (flat == 160).all()  # nothing to scale: the style's mean
