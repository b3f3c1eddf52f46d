"""Conversions between the SDK's Python types and the generated `styletx.v1` messages."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, cast, get_args

from google.protobuf import duration_pb2
from google.protobuf.message import Message

from styletx_api.schema import OPTION_NAMES, enum_choice, enum_number, read_options, write_options
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1.style_options import JobState

from .errors import ServiceError, from_status
from .events import (
    EncodedImage,
    Event,
    Losses,
    Progress,
    Queued,
    ResolvedOptions,
    Result,
    Started,
)
from .jobs import JobInfo
from .options import (
    ImageFormat,
    ImageInput,
    Style,
    StyleInput,
    Styles,
    StylizeOptions,
)

IMAGE_FORMATS: Final[tuple[ImageFormat, ...]] = get_args(ImageFormat)
#: File extensions spelled differently from their format's name.
_EXTENSION_OF: Final[Mapping[str, str]] = {"jpeg": "jpg"}


def format_for_path(path: str | os.PathLike[str]) -> ImageFormat | None:
    """The output format a file name asks for (`x.jpg` -> jpeg), None for an unknown suffix."""
    suffix = Path(path).suffix.lower().lstrip(".")
    for fmt in IMAGE_FORMATS:
        if suffix in (fmt, _EXTENSION_OF.get(fmt)):
            return fmt
    return None


def extension_for(fmt: ImageFormat) -> str:
    """The usual file extension of a format (jpeg -> jpg)."""
    return _EXTENSION_OF.get(fmt, fmt)


_REQUEST_OPTIONS: Final = ("output_format", "quality", "preview_every")
KNOWN_OPTIONS: Final = frozenset((*OPTION_NAMES, *_REQUEST_OPTIONS))


def read_image(image: ImageInput, role: str) -> bytes:
    """Encoded bytes of an image given as a path, bytes or a PIL image (encoded losslessly)."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        return Path(image).read_bytes()
    if _is_pil_image(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    raise TypeError(f"{role} must be a path, bytes or a PIL image, not {type(image).__name__}")


def _is_pil_image(value: object) -> bool:
    """True for a PIL image without importing Pillow: whoever made one has imported it already."""
    module = sys.modules.get("PIL.Image")
    image_class = getattr(module, "Image", None)
    return isinstance(image_class, type) and isinstance(value, image_class)


def style_list(styles: Styles) -> list[Style]:
    """Normalise one style or a sequence of styles (plain images or `Style`) to `Style`s."""
    # str and bytes are Sequences too, but each is one image; mypy cannot narrow this union.
    if isinstance(styles, Sequence) and not isinstance(
        styles, str | bytes | bytearray | memoryview
    ):
        items = list(styles)
    else:
        items = [cast("StyleInput", styles)]
    result = [item if isinstance(item, Style) else Style(item) for item in items]
    if not result:
        raise ValueError("at least one style image is required")
    return result


def build_request(
    content: ImageInput, styles: Styles, options: StylizeOptions
) -> pb.StylizeRequest:
    """The `StylizeRequest` for these inputs; unknown option names raise TypeError."""
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise TypeError(f"unknown stylize option(s): {', '.join(unknown)}")
    request = pb.StylizeRequest(content_image=read_image(content, "content"))
    for index, style in enumerate(style_list(styles)):
        item = request.style_images.add(image=read_image(style.image, f"styles[{index}]"))
        if style.weight is not None:
            item.weight = style.weight
    write_options(request.options, options)
    if "output_format" in options:
        request.output_format = pb.ImageFormat.ValueType(
            enum_number(pb.ImageFormat.DESCRIPTOR, options["output_format"], "output_format")
        )
    if "quality" in options:
        _set(request, "output_quality", options["quality"], "quality")
    if "preview_every" in options:
        _set(request, "preview_every", options["preview_every"], "preview_every")
    return request


def _set(target: Message, field: str, value: object, option: str) -> None:
    """Set a scalar field, naming the option when protobuf rejects the value (type or range)."""
    try:
        setattr(target, field, value)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{option}: {error}") from None


def event_from_proto(message: pb.StylizeResponse | pb.WatchJobResponse) -> Event | None:
    """The typed event of one stream message; None for an event kind this SDK does not know."""
    kind = message.WhichOneof("event")
    if kind == "queued":
        return Queued(position=message.queued.position, request_id=message.queued.request_id)
    if kind == "started":
        s = message.started
        return Started(
            options=options_from_proto(s.options),
            width=s.width,
            height=s.height,
            queue_time=_seconds(s.queue_time),
            request_id=s.request_id,
            backend=s.backend,
            precision=s.precision,
            device=s.device,
        )
    if kind == "progress":
        p = message.progress
        return Progress(
            iteration=p.iteration,
            evaluations=p.evaluations,
            max_evaluations=p.max_evaluations,
            losses=_losses(p.losses),
            elapsed=_seconds(p.elapsed),
            scale=p.scale,
            preview=_image(p.preview) if p.HasField("preview") else None,
        )
    if kind == "result":
        r = message.result
        return Result(
            image=_image(r.image),
            losses=_losses(r.losses),
            iterations=r.iterations,
            evaluations=r.evaluations,
            queue_time=_seconds(r.queue_time),
            compute_time=_seconds(r.compute_time),
            request_id=r.request_id,
        )
    return None


JOB_STATES: Final[tuple[JobState, ...]] = get_args(JobState)


def job_state(number: int) -> JobState:
    """The SDK's name of a `styletx.v1.JobState` ("queued", ...); ValueError for an unknown one."""
    name = enum_choice(pb.JobState.DESCRIPTOR, number)
    for state in JOB_STATES:
        if state == name:
            return state
    raise ValueError(f"the server answered an unknown job state ({number})")


def job_from_proto(message: pb.GetJobResponse) -> JobInfo:
    """The typed `JobInfo` of a GetJob answer."""
    error: ServiceError | None = None
    if message.HasField("error"):
        e = message.error
        reason = enum_choice(pb.ErrorReason.DESCRIPTOR, e.reason) if e.reason else None
        error = from_status(
            e.code, e.message, reason.upper() if reason else None, message.request_id
        )
        error.request_key = message.request_key
    started = event_from_proto(pb.StylizeResponse(started=message.started))
    progress = event_from_proto(pb.StylizeResponse(progress=message.progress))
    result = event_from_proto(pb.StylizeResponse(result=message.result))
    return JobInfo(
        request_key=message.request_key,
        state=job_state(message.state),
        request_id=message.request_id,
        position=message.queue_position,
        options=options_from_proto(message.options) if message.HasField("options") else None,
        started=started if isinstance(started, Started) and message.HasField("started") else None,
        progress=progress
        if isinstance(progress, Progress) and message.HasField("progress")
        else None,
        queue_time=_seconds(message.queue_time),
        compute_time=_seconds(message.compute_time),
        result=result if isinstance(result, Result) and message.HasField("result") else None,
        error=error,
    )


def options_from_proto(options: pb.StyleOptions) -> ResolvedOptions:
    """`ResolvedOptions` from a `StyleOptions` message; unset fields become None."""
    known = set(ResolvedOptions.__dataclass_fields__)
    return ResolvedOptions(**{k: v for k, v in read_options(options).items() if k in known})


def _losses(losses: pb.Losses) -> Losses:
    return Losses(total=losses.total, content=losses.content, style=losses.style, tv=losses.tv)


def _image(image: pb.EncodedImage) -> EncodedImage:
    return EncodedImage(
        data=image.data,
        format=_image_format(image.format),
        width=image.width,
        height=image.height,
    )


def _image_format(number: int) -> ImageFormat:
    """The format of an encoded image (png when unset or unknown to this SDK)."""
    name = enum_choice(pb.ImageFormat.DESCRIPTOR, number)
    return next((fmt for fmt in IMAGE_FORMATS if fmt == name), "png")


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9
