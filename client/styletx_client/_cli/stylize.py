"""`styletx-client stylize`: one flag per field of the proto's StyleOptions, the call with its
progress bar, the result (and a side-by-side strip) written; Ctrl-C cancels the job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from styletx_api.schema import OPTION_FIELDS, OPTION_NAMES, enum_choices
from styletx_api.v1.style_options import OPTION_HELP
from styletx_client._convert import IMAGE_FORMATS, build_request, format_for_path
from styletx_client._core import new_request_key
from styletx_client._progress import ProgressReporter, format_losses
from styletx_client._side_by_side import PILLOW_HINT, compose, pillow_available
from styletx_client.client import StyleTransferClient
from styletx_client.errors import JobNotFoundError, ServiceError
from styletx_client.options import Style, StylizeOptions

from .common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    comma_list,
    err,
    float_list,
    open_client,
    read,
    write,
)

#: Python types of the proto's scalar field types, for option flags.
_FLAG_TYPES: dict[int, type] = {
    FieldDescriptor.TYPE_DOUBLE: float,
    FieldDescriptor.TYPE_FLOAT: float,
    FieldDescriptor.TYPE_INT32: int,
    FieldDescriptor.TYPE_INT64: int,
    FieldDescriptor.TYPE_UINT32: int,
    FieldDescriptor.TYPE_UINT64: int,
    FieldDescriptor.TYPE_STRING: str,
}

#: How long Ctrl-C waits for the server to confirm the cancellation before exiting anyway.
CANCEL_TIMEOUT = 10.0


def add_stylize(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    connection: argparse.ArgumentParser,
) -> None:
    p = commands.add_parser(
        "stylize",
        parents=[connection],
        help="stylize CONTENT after one or more STYLE images",
        description="Unset options take the server's defaults.",
    )
    p.add_argument("content", type=Path, help="content image")
    p.add_argument("styles", type=Path, nargs="+", metavar="style", help="style image(s)")
    p.add_argument("-o", "--output", type=Path, required=True, help="where to write the result")
    add_option_flags(p.add_argument_group("style options (styletx.v1.StyleOptions)"))
    o = p.add_argument_group("style blending")
    o.add_argument(
        "--style-weights",
        type=float_list,
        metavar="W1,W2",
        help="blend weights of the style images, one per STYLE",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--format",
        choices=IMAGE_FORMATS,
        help="output encoding (default: from the --output extension, else png)",
    )
    out.add_argument("--quality", type=int, metavar="Q", help="JPEG/WebP quality 1-100")
    out.add_argument(
        "--preview-every",
        type=int,
        metavar="N",
        help="preview every N iterations (with --previews)",
    )
    out.add_argument(
        "--previews", type=Path, metavar="DIR", help="write previews here (every 10 by default)"
    )
    out.add_argument(
        "--side-by-side", type=Path, metavar="PATH", help="also write content|style|result (Pillow)"
    )
    out.add_argument(
        "--request-id", metavar="ID", help="x-request-id to send (default: a random one)"
    )
    out.add_argument(
        "--request-key",
        metavar="KEY",
        help="idempotency key (default: a random UUID). Re-running with the key of a call that "
        "failed or was killed attaches to its job, running or recently finished",
    )
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=stylize)


def option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_option_flags(group: argparse._ArgumentGroup) -> None:
    """One flag per field of the proto's StyleOptions: type, choices and help from the proto."""
    for field in OPTION_FIELDS:
        kwargs: dict[str, Any] = {"help": OPTION_HELP[field.name], "dest": field.name}
        if field.enum_type is not None:
            kwargs["choices"] = list(enum_choices(field.enum_type))
        elif field.is_repeated:
            kwargs.update(type=comma_list, metavar="A,B")
        elif field.type == FieldDescriptor.TYPE_BOOL:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kind = _FLAG_TYPES[field.type]
            kwargs.update(type=kind, metavar=kind.__name__.upper())
        group.add_argument(option_flag(field.name), **kwargs)


def stylize_options(args: argparse.Namespace) -> StylizeOptions:
    options = StylizeOptions()
    given: dict[str, Any] = {}
    for name in (*OPTION_NAMES, "quality", "preview_every"):
        value = getattr(args, name)
        if value is not None:
            given[name] = value
    options.update(given)  # type: ignore[typeddict-item]  # names and types come from the proto
    output_format = args.format or format_for_path(args.output)
    if output_format is not None:
        options["output_format"] = output_format
    if args.previews is not None and args.preview_every is None:
        options["preview_every"] = 10
    if args.preview_every is not None and args.previews is None:
        raise UsageError("--preview-every needs --previews DIR to write the previews to")
    return options


def stylize(args: argparse.Namespace) -> int:
    if args.side_by_side is not None and not pillow_available():
        raise UsageError(f"--side-by-side needs Pillow, which is not installed: {PILLOW_HINT}")
    if args.style_weights is not None and len(args.style_weights) != len(args.styles):
        raise UsageError(
            f"--style-weights has {len(args.style_weights)} value(s) "
            f"for {len(args.styles)} style image(s)"
        )
    options = stylize_options(args)
    content = read(args.content, "content image")
    style_bytes = [read(path, "style image") for path in args.styles]
    weights = args.style_weights or [None] * len(style_bytes)
    styles = [Style(data, weight) for data, weight in zip(style_bytes, weights, strict=True)]
    try:
        build_request(content, styles, options)  # fail on bad values before connecting
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    reporter = ProgressReporter(sys.stderr, enabled=not args.quiet, previews=args.previews)
    succeeded = False
    # Chosen here rather than by the SDK so that a failure can tell the user how to re-attach.
    request_key = args.request_key if args.request_key is not None else new_request_key()
    try:
        with open_client(args) as client:
            try:
                result = client.stylize(
                    content,
                    styles,
                    request_id=args.request_id,
                    request_key=request_key,
                    on_event=reporter,
                    **options,
                )
            except KeyboardInterrupt:
                reporter.close(keep=False)
                return cancel_after_interrupt(client, request_key)
        succeeded = True
    finally:
        reporter.close(keep=succeeded)
    written = [write(result.save, args.output)]
    if args.side_by_side is not None:
        strip = [content, *style_bytes, result.image_bytes]
        written.append(write(lambda path: compose(strip, path), args.side_by_side))
    err(
        f"wrote {', '.join(map(str, written))} ({result.width}x{result.height}, "
        f"{result.evaluations} evaluations, {result.compute_time:.1f}s compute, "
        f"{format_losses(result.losses)})"
    )
    return EXIT_OK


def cancel_after_interrupt(client: StyleTransferClient, request_key: str) -> int:
    """Ctrl-C during a call: cancel its job on the server (a keyed job would otherwise keep
    computing for the server's --linger after the stream closed), say so, and exit 130."""
    try:
        state = client.cancel_job(request_key, timeout=CANCEL_TIMEOUT)
    except JobNotFoundError:
        err("interrupted; the call was cancelled before the server started a job")
    except ServiceError as error:
        err(
            f"interrupted; could not cancel job {request_key} ({error}); it stops after the "
            f"server's --linger, or run: styletx-client job cancel {request_key}"
        )
    else:
        if state == "cancelled":
            err(f"interrupted; job {request_key} was cancelled")
        else:
            err(f"interrupted; job {request_key} had already ended ({state})")
    return EXIT_INTERRUPTED
