"""StylizeRequest options -> engine options (every violation collected) and engine -> proto.

Images, limits and decoding are `intake.py`'s.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from google.protobuf import duration_pb2

from styletx import Losses, StyleOptions
from styletx.errors import InvalidOptions
from styletx.presets import preset_values
from styletx_api.schema import (
    OPTION_NAMES,
    enum_choices,
    enum_number,
    read_options,
    write_options,
)
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors.refusals import FieldViolation
from styletx_server.errors.statuses import request_field

#: proto ImageFormat number -> engine encoder name; UNSPECIFIED means PNG, as the proto says.
FORMATS: dict[int, str] = {
    0: "png",
    **{v: k for k, v in enum_choices(pb.ImageFormat.DESCRIPTOR).items()},
}


def resolve_options(
    request: pb.StylizeRequest,
    defaults: StyleOptions,
    default_preset: str,
    violations: list[FieldViolation],
) -> StyleOptions:
    """Engine options for `request`; appends violations of the engine's rules (the server's
    limits are intake's to check).

    Precedence, lowest first: `defaults` (the engine's with this server's overrides), the
    preset's values, the request's own fields. Each set field is checked on its own against the
    engine's rules, so one bad field does not hide another; cross-field rules are checked last. A
    field in violation keeps its default.
    """
    given = read_options(request.options)
    preset = given.pop("preset", default_preset)
    try:
        base = defaults.replace(**preset_values(preset), preset=preset)
    except InvalidOptions as exc:  # an unknown enum number
        violations.append(FieldViolation(request_field(exc.field), exc.message))
        base = defaults
    changes: dict[str, Any] = {}

    def accept(name: str, value: Any) -> None:
        try:
            base.replace(**{name: value})
        except InvalidOptions as exc:
            violations.append(FieldViolation(request_field(exc.field), exc.message))
        else:
            changes[name] = value

    for name, value in given.items():
        accept(name, value)
    if request.preview_every:
        accept("preview_every", request.preview_every)
    weights = _blend_weights(request, violations)
    if weights:
        changes["style_blend_weights"] = weights
    if "seed" not in changes:
        # Draw the seed here so StartedEvent reports it and the caller can reproduce the job.
        changes["seed"] = secrets.randbelow(2**32)
    try:
        resolved = base.replace(**changes)
    except InvalidOptions as exc:  # a cross-field rule, e.g. too many scales for the size
        violations.append(FieldViolation(request_field(exc.field), exc.message))
        return base
    return resolved


def _blend_weights(
    request: pb.StylizeRequest, violations: list[FieldViolation]
) -> tuple[float, ...]:
    """Blend weights of the style images; () when none was given (equal weights)."""
    if not any(style.HasField("weight") for style in request.style_images):
        return ()
    weights: list[float] = []
    for i, style in enumerate(request.style_images):
        weight = style.weight if style.HasField("weight") else 1.0
        if not math.isfinite(weight) or weight < 0:
            violations.append(
                FieldViolation(
                    f"style_images[{i}].weight", f"must be finite and >= 0, got {weight}"
                )
            )
            weight = 1.0
        weights.append(weight)
    if sum(weights) <= 0:
        violations.append(
            FieldViolation("style_images", "weights must not all be zero: at least one must be > 0")
        )
        return ()
    return tuple(weights)


def options_to_proto(options: StyleOptions) -> pb.StyleOptions:
    """Resolved options with every API field set, for StartedEvent."""
    message = pb.StyleOptions()
    write_options(message, {name: getattr(options, name) for name in OPTION_NAMES})
    return message


def format_to_proto(fmt: str) -> pb.ImageFormat.ValueType:
    """Engine encoder name -> proto ImageFormat."""
    return pb.ImageFormat.ValueType(enum_number(pb.ImageFormat.DESCRIPTOR, fmt, "output_format"))


def losses_to_proto(losses: Losses) -> pb.Losses:
    return pb.Losses(total=losses.total, content=losses.content, style=losses.style, tv=losses.tv)


def duration(seconds: float) -> duration_pb2.Duration:
    """Seconds -> google.protobuf.Duration."""
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(max(0.0, seconds) * 1e9))
    return out


__all__ = [
    "FORMATS",
    "duration",
    "format_to_proto",
    "losses_to_proto",
    "options_to_proto",
    "resolve_options",
]
