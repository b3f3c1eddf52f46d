"""Decode untrusted image bytes to RGB uint8 arrays, encode results, and resize/compose images
(colour transforms: `styletx.colors`).

Used by the engine, the CLI and the server; it must not import TensorFlow.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import IO

import numpy as np
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)
from PIL import Image as PILImage

from styletx.colors import grey_to_rgb, round_to_uint8
from styletx.errors import ImageTooLarge, InvalidImage, InvalidOptions
from styletx.geometry import cover_size
from styletx.result import Image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_QUALITY",
    "FORMATS",
    "decode_image",
    "encode_image",
    "format_for_path",
    "image_dimensions",
    "resize_cover",
    "resize_to",
    "side_by_side",
]

logger = logging.getLogger(__name__)

#: Largest image (width x height) `decode_image` accepts unless told otherwise.
DEFAULT_MAX_PIXELS = 40_000_000
#: Formats `encode_image` writes.
FORMATS: tuple[str, ...] = ("png", "jpeg", "webp")
#: JPEG/WebP quality when the caller gives none.
DEFAULT_QUALITY = 90
#: File extensions spelled differently from their format's name.
_EXTENSION_ALIASES = {"jpg": "jpeg"}
# Header parsers of the accepted formats, called directly instead of PIL.Image.open: open() runs
# PIL's process-wide decompression-bomb check (a warning from 89 Mpx, an error from 179 Mpx) on
# every header, before we can apply our own limit, and it would try every other plugin (EPS runs
# Ghostscript) on unknown input. The plugins parse only the header here; pixels come at load().
_OPENERS: dict[str, Callable[[IO[bytes]], ImageFile.ImageFile]] = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.jpeg_factory,  # also returns MPO (multi-picture) files, first frame
    "webp": WebPImagePlugin.WebPImageFile,
    "gif": GifImagePlugin.GifImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
    "tiff": TiffImagePlugin.TiffImageFile,
}

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF

# Modes whose samples do not fit 8 bits; PIL's own convert() clips them instead of scaling.
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def decode_image(
    data: bytes | str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    field: str = "image",
) -> Image:
    """Decode PNG/JPEG/WebP/GIF/BMP/TIFF bytes or a file to an upright H x W x 3 RGB uint8 array.

    Raises `ImageTooLarge` when the header declares more than `max_pixels` (checked before any
    pixel is decoded) and `InvalidImage` for empty, unreadable, truncated or zero-sized input.
    """
    if max_pixels < 1:
        raise InvalidOptions("max_pixels", f"must be at least 1, got {max_pixels}")
    if isinstance(data, bytes | bytearray | memoryview):
        return _decode_stream(io.BytesIO(data), max_pixels=max_pixels, field=field)
    path = Path(data)
    try:
        with path.open("rb") as stream:
            return _decode_stream(stream, max_pixels=max_pixels, field=field)
    except OSError as exc:
        raise InvalidImage(f"cannot read {str(path)!r}: {exc.strerror}", field=field) from exc


def image_dimensions(data: bytes) -> tuple[int, int]:
    """(width, height) as stored in the header, without decoding pixels or applying max_pixels.

    EXIF orientation is not applied (width and height may be swapped relative to `decode_image`'s
    result); the pixel count, which is what limits care about, is the same.
    """
    # Only PIL's own ceiling can refuse here (a GIF frame larger than its screen, see below).
    limit = int(PILImage.MAX_IMAGE_PIXELS or 0)
    with closing(_open_header(io.BytesIO(data), field="image", limit=limit)) as image:
        return image.size


def encode_image(image: Image, fmt: str = "png", *, quality: int = DEFAULT_QUALITY) -> bytes:
    """Encode an RGB uint8 image as PNG, JPEG or WebP; `quality` (1..100) is for the lossy ones."""
    name = _normalise_format(fmt)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise InvalidOptions("output_quality", f"must be an integer in 1..100, got {quality!r}")
    picture = _to_pil(image)
    out = io.BytesIO()
    if name == "png":
        picture.save(out, "PNG")
    elif name == "jpeg":
        picture.save(out, "JPEG", quality=quality)
    else:
        picture.save(out, "WEBP", quality=quality)
    return out.getvalue()


def format_for_path(path: str | os.PathLike[str]) -> str:
    """The encoder format a file name asks for (`x.jpg` -> jpeg); png for anything unknown."""
    suffix = Path(path).suffix.lower().lstrip(".")
    name = _EXTENSION_ALIASES.get(suffix, suffix)
    return name if name in FORMATS else "png"


def resize_to(image: Image, height: int, width: int) -> Image:
    """Resize to exactly height x width (Lanczos, which also antialiases when shrinking)."""
    if height < 1 or width < 1:
        raise ValueError(f"target size must be positive, got {height}x{width}")
    picture = _to_pil(image)
    if picture.size == (width, height):
        return np.array(picture, dtype=np.uint8)
    return np.array(picture.resize((width, height), PILImage.Resampling.LANCZOS), dtype=np.uint8)


def resize_cover(image: Image, height: int, width: int) -> Image:
    """Resize to cover height x width with the aspect ratio kept, then crop the centre to it
    (what init=style starts from: the style's own shape, not squashed into the output's)."""
    covered_h, covered_w = cover_size(image.shape[0], image.shape[1], (height, width))
    covered = resize_to(image, covered_h, covered_w)
    top, left = (covered_h - height) // 2, (covered_w - width) // 2
    return np.ascontiguousarray(covered[top : top + height, left : left + width])


def side_by_side(images: Sequence[Image], *, height: int | None = None, gap: int = 8) -> Image:
    """Panels left to right (e.g. content | style | result), each scaled to one common height
    (default: the tallest panel's), separated by `gap` white columns."""
    if not images:
        raise ValueError("side_by_side needs at least one image")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    target = max(image.shape[0] for image in images) if height is None else height
    if target < 1:
        raise ValueError(f"height must be positive, got {target}")
    panels = [
        resize_to(image, target, max(1, round(image.shape[1] * target / image.shape[0])))
        for image in images
    ]
    total_width = sum(panel.shape[1] for panel in panels) + gap * (len(panels) - 1)
    canvas = np.full((target, total_width, 3), 255, dtype=np.uint8)
    x = 0
    for panel in panels:
        canvas[:, x : x + panel.shape[1]] = panel
        x += panel.shape[1] + gap
    return canvas


# --- decoding internals ---------------------------------------------------------------------


def _decode_stream(stream: IO[bytes], *, max_pixels: int, field: str) -> Image:
    """Check the header against the pixel limit, then decode, orient and convert to RGB."""
    limit = _effective_limit(max_pixels)
    with closing(_open_header(stream, field=field, limit=limit)) as image:
        width, height = image.size
        if width * height > limit:
            raise ImageTooLarge(width * height, limit, field=field)
        kind = _NAMES.get((image.format or "").lower(), image.format or "image")
        try:
            image.load()
        except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
            raise ImageTooLarge(_bomb_pixels(exc, limit), limit, field=field) from exc
        except MemoryError:
            raise
        except Exception as exc:
            # Pillow reports corrupt or truncated data with many exception types (OSError,
            # SyntaxError, ValueError, struct.error, ...); for untrusted bytes each means bad input.
            # Its wording ("unpack_from requires a buffer...") tells a caller nothing: logged only.
            logger.debug("image data unreadable", extra={"field": field, "error": str(exc)})
            raise InvalidImage(
                f"the {kind} data is truncated or corrupt: it breaks off before all of its "
                f"{width}x{height} pixels ({_size_of(stream)} received); send the complete, "
                "undamaged file",
                field=field,
            ) from exc
        _apply_orientation(image, field)
        return _to_rgb_array(image, field)


def _open_header(stream: IO[bytes], *, field: str, limit: int) -> ImageFile.ImageFile:
    """Identify the format from its magic bytes and parse only the header (no pixel data)."""
    prefix = stream.read(16)
    if not prefix:
        raise InvalidImage(
            f"empty image data (0 bytes): send an encoded {_SUPPORTED} image", field=field
        )
    kind = _sniff(prefix)
    if kind is None:
        raise InvalidImage(
            f"not an image in a supported format ({_SUPPORTED}): {_size_of(stream)} that start "
            f"with {prefix[:8]!r}",
            field=field,
        )
    stream.seek(0)
    try:
        image = _OPENERS[kind](stream)
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        # Only a GIF whose first frame outgrows its screen triggers PIL's check while parsing;
        # `limit` is the caller's (at most PIL's), so the image is over it too.
        raise ImageTooLarge(_bomb_pixels(exc, limit), limit, field=field) from exc
    except MemoryError:
        raise
    except Exception as exc:
        logger.debug("image header unreadable", extra={"field": field, "error": str(exc)})
        raise InvalidImage(
            f"not a complete {_NAMES[kind]} file: {_size_of(stream)}, truncated or corrupt "
            "within its header (signature, size, colours); send the complete, undamaged file",
            field=field,
        ) from exc
    # ImageFile itself refuses a header declaring a zero width or height (a SyntaxError above).
    return image


#: How messages name each input format.
_NAMES = {
    "png": "PNG",
    "jpeg": "JPEG",
    "mpo": "JPEG",
    "webp": "WebP",
    "gif": "GIF",
    "bmp": "BMP",
    "tiff": "TIFF",
}
_SUPPORTED = "PNG, JPEG, WebP, GIF, BMP or TIFF"


def _size_of(stream: IO[bytes]) -> str:
    """ "N bytes": the length of the data in `stream` (for messages)."""
    position = stream.tell()
    size = stream.seek(0, io.SEEK_END)
    stream.seek(position)
    return f"{size} bytes"


def _sniff(prefix: bytes) -> str | None:
    """Format name from the file's magic bytes, or None for anything we do not read."""
    if prefix.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if prefix.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if prefix[:4] == b"RIFF" and prefix[8:12] == b"WEBP":
        return "webp"
    if prefix[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if prefix[:2] == b"BM":
        return "bmp"
    if prefix[:4] in _TIFF_MAGICS:
        return "tiff"
    return None


def _effective_limit(max_pixels: int) -> int:
    """Our limit, capped at PIL's process-wide one so PIL's own check never fires during load()."""
    ceiling = PILImage.MAX_IMAGE_PIXELS
    return max_pixels if ceiling is None else min(max_pixels, int(ceiling))


def _bomb_pixels(exc: Exception, limit: int) -> int:
    """Pixel count from PIL's decompression-bomb message ("Image size (N pixels) ...")."""
    found = _BOMB_PIXELS.search(str(exc))
    return int(found.group(1)) if found else limit + 1


def _apply_orientation(image: PILImage.Image, field: str) -> None:
    """Rotate/flip in place as the EXIF orientation tag says (phones store pictures sideways)."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except MemoryError:
        raise
    except Exception as exc:
        # The pixels decoded fine; a broken EXIF block should not lose the picture (browsers
        # show such files too), so keep it as stored.
        logger.warning("%s: ignoring unreadable EXIF orientation: %s", field, exc)


def _to_rgb_array(image: PILImage.Image, field: str) -> Image:
    """Convert any PIL mode to an H x W x 3 RGB uint8 array with faithful colours."""
    mode = image.mode
    if mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_rgb(image)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        # Transparent pixels have no defined colour (often stored black); the engine has no alpha,
        # so show them as a viewer shows them on a page: over white.
        return _composite_on_white(_convert(image, "RGBA", field))
    if mode == "LAB":
        # PIL's LAB -> RGB convert() copies channels as if they were RGB; use a real transform.
        from PIL import ImageCms

        transform = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        converted = ImageCms.applyTransform(image, transform)
        assert converted is not None  # None only with inPlace=True
        return np.array(converted, dtype=np.uint8)
    return np.array(_convert(image, "RGB", field), dtype=np.uint8)


def _convert(image: PILImage.Image, mode: str, field: str) -> PILImage.Image:
    if image.mode == mode:
        return image
    try:
        return image.convert(mode)
    except ValueError as exc:
        raise InvalidImage(f"unsupported colour mode {image.mode}", field=field) from exc


def _composite_on_white(rgba: PILImage.Image) -> Image:
    """Alpha-blend an RGBA image over white, rounding to the nearest 8-bit value."""
    pixels = np.asarray(rgba, dtype=np.uint32)
    alpha = pixels[..., 3:4]
    blended = (pixels[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
    return blended.astype(np.uint8)


def _high_depth_to_rgb(image: PILImage.Image) -> Image:
    """Scale 16-bit, 32-bit integer and float greyscale to 8 bits (PIL's convert() would clip)."""
    raw = np.asarray(image)
    if image.mode == "F":
        values = np.nan_to_num(raw.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        # Float images are either normalised (0..1) or already on the 8-bit scale.
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        grey = round_to_uint8(values)
    else:
        ints = raw.astype(np.int64)
        # 16-bit modes always use the full 0..65535 range; mode "I" declares no range, so values
        # above 255 mean a 16-bit source (older Pillow opened 16-bit PNGs as "I").
        if image.mode == "I" and (ints.size == 0 or ints.max() <= 255):
            grey = np.clip(ints, 0, 255).astype(np.uint8)
        else:
            grey = ((np.clip(ints, 0, 65535) + 128) // 257).astype(np.uint8)
    transparent = image.info.get("transparency")
    if isinstance(transparent, int):
        # A tRNS grey key marks fully transparent pixels: white, like the alpha modes.
        grey[raw == transparent] = 255
    return grey_to_rgb(grey)


# --- array helpers --------------------------------------------------------------------------


def _to_pil(image: Image) -> PILImage.Image:
    """Validate an RGB uint8 array and wrap it as a PIL image."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 numpy array, got {getattr(image, 'dtype', type(image))}"
        )
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    return PILImage.fromarray(np.ascontiguousarray(image))


def _normalise_format(fmt: str) -> str:
    name = fmt.strip().lower() if isinstance(fmt, str) else ""
    name = "jpeg" if name == "jpg" else name
    if name not in FORMATS:
        raise InvalidOptions("output_format", f"unknown format {fmt!r}; expected one of {FORMATS}")
    return name
