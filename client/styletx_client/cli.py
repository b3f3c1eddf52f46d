"""`styletx-client`: stylize images, look at, watch and cancel jobs by their request key, and
check health from a shell, with a progress bar. Ctrl-C during `stylize` cancels the job.

Exit codes: 0 ok, 1 other failure, 2 usage or invalid argument, 3 server unavailable or busy,
4 deadline exceeded, 5 authentication, 6 the server ran out of memory for the job (retrying will
not help: ask for less work), 7 no job with that request key, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from styletx_api.schema import OPTION_FIELDS, OPTION_NAMES, enum_choices
from styletx_api.v1.style_options import OPTION_HELP

from . import __version__
from ._channel import ChannelOption, TlsConfig
from ._convert import IMAGE_FORMATS, build_request, format_for_path
from ._core import new_request_key
from ._progress import ProgressReporter, format_losses
from ._retry import RetryPolicy
from ._side_by_side import PILLOW_HINT, compose, pillow_available
from .client import StyleTransferClient
from .errors import (
    AuthenticationError,
    DeadlineExceededError,
    InvalidRequestError,
    JobNotFoundError,
    OutOfMemoryError,
    RequestKeyReusedError,
    ServerBusyError,
    ServiceError,
    UnavailableError,
)
from .events import Result
from .health import ServingStatus
from .jobs import JobInfo
from .options import Style, StylizeOptions

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_DEADLINE = 4
EXIT_AUTH = 5
EXIT_OUT_OF_MEMORY = 6
EXIT_NOT_FOUND = 7
EXIT_INTERRUPTED = 130

DEFAULT_SERVER = "localhost:50051"
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


class UsageError(Exception):
    """A problem with the command line or local files the user can fix; exit code 2."""


def _err(message: str) -> None:
    sys.stderr.write(f"styletx-client: {message}\n")


def _comma_list(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _float_list(value: str) -> list[float]:
    try:
        return [float(item) for item in _comma_list(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {value!r}"
        ) from None


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return number


def _connection_parser() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--server",
        default=os.environ.get("STYLETX_SERVER", DEFAULT_SERVER),
        help="host:port, dns:///name:port or ip:port,ip:port (round robin); "
        "env STYLETX_SERVER (default %(default)s)",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("STYLETX_TOKEN"),
        help="bearer token for a server started with --auth-token; env STYLETX_TOKEN",
    )
    group.add_argument("--tls", action="store_true", help="connect with TLS (system CAs)")
    group.add_argument(
        "--ca-cert", type=Path, metavar="PEM", help="CA certificate to trust (implies --tls)"
    )
    group.add_argument(
        "--tls-server-name", metavar="NAME", help="name to verify in the server's certificate"
    )
    group.add_argument(
        "--client-cert",
        type=Path,
        metavar="PEM",
        help="this client's certificate chain, for a server that requires mutual TLS "
        "(with --client-key; implies --tls)",
    )
    group.add_argument(
        "--client-key", type=Path, metavar="PEM", help="private key of --client-cert"
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="total deadline of the call, retries included (default: none)",
    )
    group.add_argument(
        "--max-attempts",
        type=int,
        metavar="N",
        default=RetryPolicy().max_attempts,
        help="attempts in a row when the server is unavailable or busy, or a broken stream "
        "re-attaches (default %(default)s)",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="log retries and more")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `styletx-client` (also used to render --help)."""
    parser = argparse.ArgumentParser(
        prog="styletx-client",
        description="Client of the styletx neural style transfer service.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connection = _connection_parser()
    _add_stylize(commands, connection)
    health = commands.add_parser(
        "health", parents=[connection], help="check the server's gRPC health"
    )
    health.add_argument(
        "--service",
        default="",
        help='service name to check ("" = the whole server, or styletx.v1.StyleTransferService)',
    )
    health.set_defaults(handler=_health)
    _add_job(commands, connection)
    return parser


def _add_job(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    connection: argparse.ArgumentParser,
) -> None:
    job = commands.add_parser(
        "job",
        help="look at, watch or cancel a job by its request key",
        description="Jobs are named by the request key they were started with (stylize prints "
        "it when a call fails; --request-key chooses it).",
    )
    actions = job.add_subparsers(dest="action", required=True, metavar="ACTION")
    get = actions.add_parser(
        "get", parents=[connection], help="print the job's state; -o writes its result"
    )
    get.add_argument("key", metavar="KEY", help="the job's request key")
    get.add_argument("-o", "--output", type=Path, help="write the result here when the job is done")
    get.set_defaults(handler=_job_get)
    watch = actions.add_parser(
        "watch",
        parents=[connection],
        help="follow the job's progress until it ends; -o writes its result",
    )
    watch.add_argument("key", metavar="KEY", help="the job's request key")
    watch.add_argument("-o", "--output", type=Path, help="where to write the result")
    watch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    watch.set_defaults(handler=_job_watch)
    cancel = actions.add_parser(
        "cancel", parents=[connection], help="cancel the job (idempotent); prints its state"
    )
    cancel.add_argument("key", metavar="KEY", help="the job's request key")
    cancel.set_defaults(handler=_job_cancel)


def _add_stylize(
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
    _add_option_flags(p.add_argument_group("style options (styletx.v1.StyleOptions)"))
    o = p.add_argument_group("style blending")
    o.add_argument(
        "--style-weights",
        type=_float_list,
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
    p.set_defaults(handler=_stylize)


def _client(args: argparse.Namespace) -> StyleTransferClient:
    tls = _tls(args)
    options: list[ChannelOption] = []
    if args.tls_server_name:
        options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    if args.max_attempts < 1:
        raise UsageError("--max-attempts must be >= 1")
    try:
        return StyleTransferClient(
            args.server,
            tls=tls,
            token=args.token,
            timeout=args.timeout,
            retry=RetryPolicy(max_attempts=args.max_attempts),
            options=options,
        )
    except ValueError as error:
        raise UsageError(f"--server {args.server!r}: {error}") from None


def _tls(args: argparse.Namespace) -> bool | TlsConfig:
    """TLS settings from --tls, --ca-cert, --client-cert and --client-key."""
    if (args.client_cert is None) != (args.client_key is None):
        raise UsageError("--client-cert and --client-key go together (mutual TLS)")
    if args.ca_cert is None and args.client_cert is None:
        return bool(args.tls)
    try:
        return TlsConfig(
            root_certificates=_read(args.ca_cert, "CA certificate") if args.ca_cert else None,
            certificate_chain=_read(args.client_cert, "client certificate")
            if args.client_cert
            else None,
            private_key=_read(args.client_key, "client key") if args.client_key else None,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def _read(path: Path, role: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {role} {str(path)!r}: {error.strerror or error}") from None


def _option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_option_flags(group: argparse._ArgumentGroup) -> None:
    """One flag per field of the proto's StyleOptions: type, choices and help from the proto."""
    for field in OPTION_FIELDS:
        kwargs: dict[str, Any] = {"help": OPTION_HELP[field.name], "dest": field.name}
        if field.enum_type is not None:
            kwargs["choices"] = list(enum_choices(field.enum_type))
        elif field.is_repeated:
            kwargs.update(type=_comma_list, metavar="A,B")
        elif field.type == FieldDescriptor.TYPE_BOOL:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kind = _FLAG_TYPES[field.type]
            kwargs.update(type=kind, metavar=kind.__name__.upper())
        group.add_argument(_option_flag(field.name), **kwargs)


def _stylize_options(args: argparse.Namespace) -> StylizeOptions:
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


def _stylize(args: argparse.Namespace) -> int:
    if args.side_by_side is not None and not pillow_available():
        raise UsageError(f"--side-by-side needs Pillow, which is not installed: {PILLOW_HINT}")
    if args.style_weights is not None and len(args.style_weights) != len(args.styles):
        raise UsageError(
            f"--style-weights has {len(args.style_weights)} value(s) "
            f"for {len(args.styles)} style image(s)"
        )
    options = _stylize_options(args)
    content = _read(args.content, "content image")
    style_bytes = [_read(path, "style image") for path in args.styles]
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
        with _client(args) as client:
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
    written = [_write(result.save, args.output)]
    if args.side_by_side is not None:
        strip = [content, *style_bytes, result.image_bytes]
        written.append(_write(lambda path: compose(strip, path), args.side_by_side))
    _err(
        f"wrote {', '.join(map(str, written))} ({result.width}x{result.height}, "
        f"{result.evaluations} evaluations, {result.compute_time:.1f}s compute, "
        f"{format_losses(result.losses)})"
    )
    return EXIT_OK


#: How long Ctrl-C waits for the server to confirm the cancellation before exiting anyway.
CANCEL_TIMEOUT = 10.0


def cancel_after_interrupt(client: StyleTransferClient, request_key: str) -> int:
    """Ctrl-C during a call: cancel its job on the server (a keyed job would otherwise keep
    computing for the server's --linger after the stream closed), say so, and exit 130."""
    try:
        state = client.cancel_job(request_key, timeout=CANCEL_TIMEOUT)
    except JobNotFoundError:
        _err("interrupted; the call was cancelled before the server started a job")
    except ServiceError as error:
        _err(
            f"interrupted; could not cancel job {request_key} ({error}); it stops after the "
            f"server's --linger, or run: styletx-client job cancel {request_key}"
        )
    else:
        if state == "cancelled":
            _err(f"interrupted; job {request_key} was cancelled")
        else:
            _err(f"interrupted; job {request_key} had already ended ({state})")
    return EXIT_INTERRUPTED


def describe_job(info: JobInfo) -> str:
    """One line a shell user reads: the job's state and where it stands."""
    parts = [f"{info.request_key}: {info.state}"]
    if info.state == "queued":
        parts.append(f"position {info.position}, waited {info.queue_time:.1f}s")
    if info.progress is not None and info.state != "done":
        p = info.progress
        parts.append(
            f"iteration {p.iteration}, {p.evaluations}/{p.max_evaluations} evaluations, "
            f"{format_losses(p.losses)}"
        )
    if info.state in ("running", "failed", "cancelled") and info.started is not None:
        parts.append(f"queued {info.queue_time:.1f}s, computing {info.compute_time:.1f}s")
    if info.result is not None:
        r = info.result
        parts.append(
            f"{r.width}x{r.height} {r.format}, {r.evaluations} evaluations, queued "
            f"{r.queue_time:.1f}s, computed {r.compute_time:.1f}s, {format_losses(r.losses)}"
        )
    if info.error is not None:
        parts.append(f"{info.error.code.name}: {info.error.message}")
    return "; ".join(parts)


def _job_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.get_job(args.key, include_image=args.output is not None)
    sys.stdout.write(describe_job(info) + "\n")
    if args.output is not None:
        if info.result is None:
            _err(f"nothing written: the job is {info.state}")
            return EXIT_FAILURE
        _err(f"wrote {_write(info.result.save, args.output)}")
    return EXIT_OK


def _job_watch(args: argparse.Namespace) -> int:
    reporter = ProgressReporter(sys.stderr, enabled=not args.quiet, previews=None)
    result: Result | None = None
    succeeded = False
    try:
        with _client(args) as client, client.watch_job(args.key) as events:
            for event in events:
                reporter(event)
                if isinstance(event, Result):
                    result = event
        succeeded = True
    finally:
        reporter.close(keep=succeeded)
    if result is None:
        _err("the stream ended without a result")
        return EXIT_FAILURE
    if args.output is not None:
        _err(f"wrote {_write(result.save, args.output)}")
    sys.stdout.write(f"{args.key}: done; {format_losses(result.losses)}\n")
    return EXIT_OK


def _job_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        state = client.cancel_job(args.key)
    sys.stdout.write(f"{args.key}: {state}\n")
    return EXIT_OK


def _write(save: Callable[[Path], Path], path: Path) -> Path:
    try:
        return save(path)
    except OSError as error:
        raise _WriteError(f"cannot write {str(path)!r}: {error.strerror or error}") from None


class _WriteError(Exception):
    """The result arrived but could not be written; exit code 1."""


def _health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.health(args.service, timeout=args.timeout or 10.0)
    sys.stdout.write(f"{status}\n")
    if status is ServingStatus.SERVING:
        return EXIT_OK
    if status is ServingStatus.SERVICE_UNKNOWN:
        _err(f"the server does not know the service {args.service!r}")
        return EXIT_USAGE
    _err(f"{args.server} is not serving yet (loading weights or draining); try again shortly")
    return EXIT_UNAVAILABLE


def describe(error: ServiceError, server: str) -> tuple[int, str]:
    """Exit code and a message a shell user can act on, for an SDK error."""
    rid = f" (request id {error.request_id})" if error.request_id else ""
    resume = (
        f" The job may still run: re-run with --request-key {error.request_key} to attach to it."
        if error.request_key
        else ""
    )
    if isinstance(error, OutOfMemoryError):
        return EXIT_OUT_OF_MEMORY, (
            f"the server ran out of memory for this job{rid}: {error.message}. Retrying will not "
            "help: lower --size, --style-scale or --scales, or send fewer or smaller style images"
        )
    if isinstance(error, JobNotFoundError):
        return EXIT_NOT_FOUND, f"no such job on {server}: {error.message}{rid}"
    if isinstance(error, RequestKeyReusedError):
        return EXIT_USAGE, (
            f"the request key {error.request_key or ''} already belongs to a different request"
            f"{rid}; send this one with a new --request-key (or none)"
        )
    if isinstance(error, InvalidRequestError):
        lines = [f"the server rejected the request: {error.message}{rid}"]
        lines += [f"  {v.field}: {v.description}" for v in error.field_violations]
        return EXIT_USAGE, "\n".join(lines)
    if isinstance(error, ServerBusyError):
        wait = (
            f"retry in {error.retry_after:g}s" if error.retry_after is not None else "retry later"
        )
        return EXIT_UNAVAILABLE, (
            f"the server at {server} is busy (its queue is full); {wait}, "
            f"raise --max-attempts or add replicas{rid}: {error.message}"
        )
    if isinstance(error, UnavailableError) and _is_tls_failure(error.message):
        return EXIT_UNAVAILABLE, (
            f"the TLS handshake with {server} failed: {error.message}. Check --ca-cert, "
            f"--tls-server-name, and --client-cert/--client-key if the server requires them.{rid}"
        )
    if isinstance(error, UnavailableError):
        return EXIT_UNAVAILABLE, (
            f"cannot reach a styletx server at {server}: {error.message}. Is it running and "
            "listening there? Set --server or STYLETX_SERVER (and --tls or --ca-cert if it uses "
            f"TLS, --client-cert and --client-key if it requires mutual TLS).{rid}{resume}"
        )
    if isinstance(error, DeadlineExceededError):
        return EXIT_DEADLINE, (
            f"the call did not finish within its deadline{rid}; raise --timeout, "
            f"or lower --size or --max-evaluations.{resume}"
        )
    if isinstance(error, AuthenticationError):
        return EXIT_AUTH, (
            f"the server refused the credentials ({error.code.name}: {error.message}); "
            f"pass --token or set STYLETX_TOKEN{rid}"
        )
    return EXIT_FAILURE, f"the call failed: {error}"


def _is_tls_failure(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in ("handshake", "ssl", "certificate", "tls"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="styletx-client: %(message)s",
    )
    try:
        return int(args.handler(args))
    except UsageError as error:
        _err(f"error: {error}")
        return EXIT_USAGE
    except ServiceError as error:
        code, message = describe(error, args.server)
        _err(f"error: {message}")
        return code
    except _WriteError as error:
        _err(f"error: {error}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _err("interrupted; the call was cancelled")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
