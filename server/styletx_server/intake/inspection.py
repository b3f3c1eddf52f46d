"""Intake of a StylizeRequest: header-only inspection against the server's limits.

`inspect` runs before admission and reads nothing but the images' headers (declared dimensions)
and the options, so a refusal costs microseconds and no image memory; it checks every server
limit (style images, pixels per image and per request, output size, style size = size x
style_scale, scales, evaluations) and names the limit in the error. Decoding comes after
admission (`decode.py`), for requests already holding their pixel reservation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from styletx import StyleOptions, geometry
from styletx.errors import DeviceMemoryExceeded, InvalidImage, InvalidOptions
from styletx.images import DEFAULT_QUALITY, image_dimensions
from styletx.options import MIN_SIZE
from styletx.protocol import Engine
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors.refusals import FieldViolation, InvalidRequest
from styletx_server.intake.convert import FORMATS, resolve_options


@dataclass(frozen=True)
class Limits:
    """The server's bounds on the work one request may cause, and its defaults for options a
    request leaves unset; checked before admission."""

    max_styles: int
    max_pixels: int
    max_request_pixels: int
    max_size: int
    max_style_size: int
    max_scales: int
    max_evaluations: int
    #: Operator overrides of the engine's defaults; None keeps the engine's.
    default_size: int | None = None
    default_evaluations: int | None = None
    default_preset: str = StyleOptions().preset

    def base_options(self) -> StyleOptions:
        """The engine's defaults with the operator's overrides, before any preset."""
        options = StyleOptions()
        if self.default_size is not None:
            options = options.replace(size=self.default_size)
        if self.default_evaluations is not None:
            options = options.replace(max_evaluations=self.default_evaluations)
        return options


@dataclass(frozen=True)
class Inspection:
    """What admission needs to know about a request, from its options and image headers."""

    options: StyleOptions
    output_format: str
    output_quality: int
    #: Declared (header) pixels of the content and every style image: the budget reservation.
    pixels: int
    style_count: int
    #: Pixels of the output (the engine's working size), for time estimates.
    output_pixels: int


class _Checks:
    """Collects violations, each tagged with the server limit it exceeds (None: bad input)."""

    def __init__(self) -> None:
        self._found: list[tuple[FieldViolation, tuple[str, int] | None]] = []

    def add(self, field: str, description: str) -> None:
        self._found.append((FieldViolation(field, description), None))

    def extend(self, violations: list[FieldViolation]) -> None:
        self._found.extend((v, None) for v in violations)

    def limit(self, field: str, description: str, name: str, value: int) -> None:
        """A limit violation; it replaces other (engine-worded) violations of the same field."""
        self._found = [(v, lim) for v, lim in self._found if v.field != field or lim is not None]
        self._found.append((FieldViolation(field, description), (name, value)))

    def replace(self, field: str, description: str) -> None:
        """A clearer message for `field` (e.g. the server's range instead of the engine's)."""
        self._found = [(v, lim) for v, lim in self._found if v.field != field]
        self.add(field, description)

    def raise_if_any(self) -> None:
        if not self._found:
            return
        limits = dict(lim for _, lim in self._found if lim is not None)
        raise InvalidRequest(
            [v for v, _ in self._found],
            limits,
            only_limits=all(lim is not None for _, lim in self._found),
        )


def _output(request: pb.StylizeRequest, checks: _Checks) -> tuple[str, int]:
    fmt = FORMATS.get(request.output_format)
    if fmt is None:
        allowed = ", ".join(
            f"{number} ({pb.ImageFormat.Name(pb.ImageFormat.ValueType(number))})"
            for number in sorted(FORMATS)
            if number
        )
        checks.add(
            "output_format",
            f"unknown ImageFormat {request.output_format}; must be unset (PNG) or one of {allowed}",
        )
        fmt = "png"
    if request.output_quality > 100:
        checks.add(
            "output_quality",
            f"must be between 0 and 100 (0: the encoder's default, {DEFAULT_QUALITY}), "
            f"got {request.output_quality}",
        )
    quality = request.output_quality if 0 < request.output_quality <= 100 else DEFAULT_QUALITY
    return fmt, quality


def output_encoding(request: pb.StylizeRequest) -> tuple[str, int]:
    """(format, quality) the caller wants the result in; InvalidRequest when malformed."""
    checks = _Checks()
    encoding = _output(request, checks)
    checks.raise_if_any()
    return encoding


def _dimensions(data: bytes, field: str, limits: Limits, checks: _Checks) -> tuple[int, int] | None:
    """(height, width) from the header, or None (with a violation) when unusable or too large."""
    if not data:
        checks.add(
            field, "required: an encoded PNG, JPEG, WebP, GIF, BMP or TIFF image, got 0 bytes"
        )
        return None
    try:
        width, height = image_dimensions(data)
    except InvalidImage as exc:
        checks.add(field, exc.message)
        return None
    if width * height > limits.max_pixels:
        checks.limit(
            field,
            f"image declares {width}x{height} = {width * height} pixels, more than this "
            f"server's limit of {limits.max_pixels} per image",
            "max_pixels",
            limits.max_pixels,
        )
        return None
    return height, width


def _effective(request: pb.StylizeRequest, resolved: StyleOptions, name: str) -> int | float:
    """The value the request asked for (even one the engine refused), else the resolved one."""
    if request.HasField("options") and request.options.HasField(name):  # type: ignore[arg-type]
        value: int | float = getattr(request.options, name)
        return value
    resolved_value: int | float = getattr(resolved, name)
    return resolved_value


def _check_options(
    request: pb.StylizeRequest, options: StyleOptions, limits: Limits, checks: _Checks
) -> None:
    """Server limits on size, evaluations and scales, quoting the server's ranges."""
    size = int(_effective(request, options, "size"))
    if size > limits.max_size:
        checks.limit(
            "options.size",
            f"{size} is over this server's limit: must be between {MIN_SIZE} and {limits.max_size}",
            "max_size",
            limits.max_size,
        )
    elif size < MIN_SIZE:
        checks.replace("options.size", f"must be between {MIN_SIZE} and {limits.max_size}")
    evaluations = int(_effective(request, options, "max_evaluations"))
    if evaluations > limits.max_evaluations:
        checks.limit(
            "options.max_evaluations",
            f"{evaluations} is over this server's limit: must be between 1 and "
            f"{limits.max_evaluations}",
            "max_evaluations",
            limits.max_evaluations,
        )
    elif evaluations < 1:
        checks.replace("options.max_evaluations", f"must be between 1 and {limits.max_evaluations}")
    scales = int(_effective(request, options, "scales"))
    if scales > limits.max_scales:
        checks.limit(
            "options.scales",
            f"{scales} is over this server's limit: must be between 1 and {limits.max_scales}",
            "max_scales",
            limits.max_scales,
        )


def _check_style_size(
    request: pb.StylizeRequest,
    options: StyleOptions,
    styles: list[tuple[int, int] | None],
    limits: Limits,
    checks: _Checks,
) -> None:
    """Each style pass (size x style_scale, as the engine sizes it) within --max-style-size."""
    size = int(_effective(request, options, "size"))
    scale = float(_effective(request, options, "style_scale"))
    if not MIN_SIZE <= size <= limits.max_size or not 0.1 <= scale <= 4.0:
        return  # already a violation; no meaningful style size
    limit = limits.max_style_size
    # The output's longest side is `size` whatever the content's shape.
    scaled = max(1, round(scale * size))
    if scaled > limit:
        checks.limit(
            "options.style_scale",
            f"style_scale {scale:g} x size {size} = {scaled} px per style pass, over this "
            f"server's limit of {limit} px: style_scale must be at most "
            f"{math.floor(limit / size * 100) / 100:g} at size {size} (or lower size)",
            "max_style_size",
            limit,
        )
        return
    for i, dims in enumerate(styles):
        if dims is None:
            continue
        height, width = geometry.style_size(dims[0], dims[1], (size, size), scale)
        if max(height, width) <= limit:
            continue
        # Only an elongated image gets here: its shorter side is raised to VGG16's minimum.
        checks.limit(
            f"style_images[{i}].image",
            f"a {dims[1]}x{dims[0]} style image is too elongated: raising its shorter side to "
            f"the {MIN_SIZE} px VGG16 needs makes it {width}x{height} px, over this server's "
            f"limit of {limit} px per style pass; its sides may differ at most "
            f"{limit // MIN_SIZE}:1 ({limit} / {MIN_SIZE}): crop it",
            "max_style_size",
            limit,
        )


def _check_device_memory(
    engine: Engine | None,
    content: tuple[int, int] | None,
    styles: list[tuple[int, int] | None],
    options: StyleOptions,
    checks: _Checks,
) -> None:
    """The engine's device-memory check (`Stylizer.check_fits`) from header sizes: a job that
    cannot fit the GPU even alone is refused now, naming the largest size that would."""
    if engine is None or content is None or any(s is None for s in styles):
        return
    try:
        engine.check_fits(content, [s for s in styles if s is not None], options)
    except DeviceMemoryExceeded as exc:
        checks.limit("options.size", exc.message, "max_size_for_device_memory", exc.max_size)


def inspect(request: pb.StylizeRequest, limits: Limits, engine: Engine | None = None) -> Inspection:
    """Validate options and image headers against every rule and limit; no pixel is decoded.

    With the loaded `engine`, also whether the job fits its device's memory. Raises
    InvalidRequest naming every bad field.
    """
    checks = _Checks()
    violations: list[FieldViolation] = []
    options = resolve_options(request, limits.base_options(), limits.default_preset, violations)
    checks.extend(violations)
    fmt, quality = _output(request, checks)
    count = len(request.style_images)
    if count == 0:
        checks.add("style_images", "at least one style image is required")
    content = _dimensions(request.content_image, "content_image", limits, checks)
    styles: list[tuple[int, int] | None] = []
    if count > limits.max_styles:
        # Refused on the count alone: none of their headers is even parsed.
        checks.limit(
            "style_images",
            f"{count} style images, more than this server's limit of {limits.max_styles}",
            "max_styles",
            limits.max_styles,
        )
    else:
        styles = [
            _dimensions(style.image, f"style_images[{i}].image", limits, checks)
            for i, style in enumerate(request.style_images)
        ]
    pixels = sum(h * w for dims in (content, *styles) if dims is not None for h, w in [dims])
    if pixels > limits.max_request_pixels:
        checks.limit(
            "style_images",
            f"the content and style images declare {pixels} pixels together, more than this "
            f"server's limit of {limits.max_request_pixels} per request",
            "max_request_pixels",
            limits.max_request_pixels,
        )
    _check_options(request, options, limits, checks)
    _check_style_size(request, options, styles, limits, checks)
    size = int(_effective(request, options, "size"))
    output_pixels = size * size
    if content is not None and MIN_SIZE <= size <= limits.max_size:
        try:
            out_h, out_w = geometry.output_size(content[0], content[1], size)
            output_pixels = out_h * out_w
        except InvalidOptions as exc:  # an output whose shorter side is under 16 px
            checks.replace("options.size", exc.message)
    checks.raise_if_any()
    _check_device_memory(engine, content, styles, options, checks)
    checks.raise_if_any()
    return Inspection(
        options=options,
        output_format=fmt,
        output_quality=quality,
        pixels=pixels,
        style_count=count,
        output_pixels=output_pixels,
    )


__all__ = ["Inspection", "Limits", "inspect", "output_encoding"]
