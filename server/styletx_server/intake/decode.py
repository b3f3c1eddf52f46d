"""Decoding of an admitted request: its images into pixels, on a decode thread.

Runs after admission, for requests already holding their pixel reservation (intake read only the
headers). Data the header promised but the body does not deliver (truncated, corrupt) is refused
with InvalidRequest naming the field; MemoryError propagates (OUT_OF_MEMORY).
"""

from __future__ import annotations

from dataclasses import dataclass

from styletx import Image, StyleOptions, geometry
from styletx.errors import InvalidImage, InvalidOptions
from styletx.images import decode_image
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors.refusals import FieldViolation, InvalidRequest
from styletx_server.intake.inspection import Inspection


@dataclass(frozen=True)
class JobSpec:
    """A decoded request: images, resolved options, output encoding."""

    content: Image
    styles: tuple[Image, ...]
    options: StyleOptions
    output_format: str
    output_quality: int


def _decode(
    data: bytes, field: str, max_pixels: int, violations: list[FieldViolation]
) -> Image | None:
    try:
        return decode_image(data, max_pixels=max_pixels, field=field)
    except InvalidImage as exc:
        violations.append(FieldViolation(exc.field, exc.message))
        return None


def decode(request: pb.StylizeRequest, inspection: Inspection, max_pixels: int) -> JobSpec:
    """Decode the images of an inspected request (blocking: run it on a decode thread)."""
    violations: list[FieldViolation] = []
    content = _decode(request.content_image, "content_image", max_pixels, violations)
    styles = [
        _decode(style.image, f"style_images[{i}].image", max_pixels, violations)
        for i, style in enumerate(request.style_images)
    ]
    if content is not None:
        try:  # EXIF orientation may turn the image; the shorter side is the same
            geometry.output_size(content.shape[0], content.shape[1], inspection.options.size)
        except InvalidOptions as exc:
            violations.append(FieldViolation("options.size", exc.message))
    if violations:
        raise InvalidRequest(violations)
    assert content is not None
    return JobSpec(
        content=content,
        styles=tuple(s for s in styles if s is not None),
        options=inspection.options,
        output_format=inspection.output_format,
        output_quality=inspection.output_quality,
    )


__all__ = ["JobSpec", "decode"]
