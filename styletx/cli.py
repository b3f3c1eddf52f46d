"""`styletx` command line: stylize locally (no server) and manage the VGG16 weights."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from styletx import __version__, startup
from styletx.backends import SUPPORTED as BACKENDS
from styletx.errors import (
    BackendUnavailable,
    Cancelled,
    InvalidImage,
    InvalidOptions,
    StyletxError,
    WeightsError,
)
from styletx.geometry import DEFAULT_SHAPE_STEP
from styletx.images import DEFAULT_QUALITY
from styletx.options import StyleOptions
from styletx.precision import DEFAULT_PRECISION, PRECISION_SETTINGS
from styletx.presets import PRESETS

log = logging.getLogger("styletx.cli")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_WEIGHTS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `StyleOptions` field, named after it, default taken from the dataclass."""
    hints = typing.get_type_hints(StyleOptions)
    group = parser.add_argument_group("style options (defaults follow the reference tutorial)")
    for field in dataclasses.fields(StyleOptions):
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        text = f"{field.metadata['help']} (default: {field.default})"
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint
        if typing.get_origin(item) is typing.Literal and not _value_kind(item):
            text += f"; one of {', '.join(typing.get_args(item))}"
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif typing.get_origin(hint) is tuple:
            group.add_argument(flag, nargs="+", default=None, help=text, **_value_kind(item))
        else:
            group.add_argument(flag, default=None, help=text, **_value_kind(hint))


def _value_kind(hint: Any) -> dict[str, Any]:
    """argparse `type`/`metavar` for a field type. Choices are listed in the metavar but checked
    by `StyleOptions` itself, so a bad value fails with the engine's message naming the field."""
    if typing.get_origin(hint) is typing.Literal:
        choices = ",".join(typing.get_args(hint))
        # A long list (13 VGG16 layers) goes to the help text instead of every usage line.
        return {"type": str, "metavar": "{" + choices + "}"} if len(choices) < 40 else {}
    # `int | None` (an optional value) takes the non-None type.
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    return {"type": kinds[0]}


def _options_from(args: argparse.Namespace) -> StyleOptions:
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(StyleOptions):
        value = getattr(args, field.name)
        if value is not None:
            changes[field.name] = tuple(value) if isinstance(value, list) else value
    return StyleOptions.from_preset(**changes)


def _add_backend_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="Keras backend computing the model (default: $KERAS_BACKEND, else tensorflow)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISION_SETTINGS,
        default=DEFAULT_PRECISION,
        help="Keras dtype policy of the model: mixed_* run VGG16's activations in 16 bits, "
        "losses and gradients are summed in float32 or wider; auto: mixed_bfloat16 where the "
        "device computes bfloat16 natively (CPUs with AVX512_BF16/AMX-BF16, GPUs of compute "
        "capability >= 8.0), float32 elsewhere and for the reference preset "
        f"(default: {DEFAULT_PRECISION})",
    )
    parser.add_argument(
        "--shape-step",
        type=int,
        default=DEFAULT_SHAPE_STEP,
        help="pad the shorter side of what VGG16 runs up to a multiple of this many pixels "
        "(masked: the result is unchanged; fewer shapes for TensorFlow to keep kernels for); "
        "1 = off",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="styletx", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("STYLETX_LOG_LEVEL", "WARNING"))
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("stylize", help="stylize an image locally with the engine")
    run.add_argument("content", type=Path, help="content image")
    run.add_argument("styles", type=Path, nargs="+", help="style image(s)")
    run.add_argument(
        "-o", "--output", type=Path, required=True, help="output image (.png/.jpg/.webp)"
    )
    run.add_argument("--weights", help="VGG16 weights file (default: $STYLETX_WEIGHTS, the cache)")
    run.add_argument("--stats-json", type=Path, help="write timings and final losses as JSON")
    run.add_argument("--side-by-side", type=Path, help="write content | style | result")
    run.add_argument("--previews", type=Path, help="directory for preview images")
    run.add_argument(
        "--quality", type=int, default=DEFAULT_QUALITY, help="JPEG/WebP quality (1-100)"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_backend_flag(run)
    _add_option_flags(run)

    info = sub.add_parser(
        "info", help="print the backend, devices and weights the engine would use here"
    )
    info.add_argument("--weights", help="VGG16 weights file (default: $STYLETX_WEIGHTS, the cache)")
    _add_backend_flag(info)

    weights = sub.add_parser("weights", help="fetch or describe the VGG16 weights")
    wsub = weights.add_subparsers(dest="action", required=True)
    fetch = wsub.add_parser("fetch", help="download or convert the ImageNet weights into the cache")
    fetch.add_argument("--force", action="store_true", help="fetch even if the cache is valid")
    winfo = wsub.add_parser("info", help="print where the weights come from and their sha256")
    winfo.add_argument("--weights", help="describe this file instead of the resolved one")
    verify = wsub.add_parser(
        "verify",
        help="check that the resolved (or given) file holds exactly the ImageNet weights "
        "(pinned SHA-256 of its tensors); exit 3 if not",
    )
    verify.add_argument("--weights", help="check this file instead of the resolved one")
    export = wsub.add_parser(
        "export",
        help="write a copy of the weights (--float16: half the size, for carrying to a GPU "
        "machine; the engine loads it as float32)",
    )
    export.add_argument("path", type=Path, help="file to write (name ending in .weights.h5)")
    export.add_argument("--weights", help="copy this file instead of the resolved one")
    export.add_argument(
        "--float16", action="store_true", help="store the weights as float16 (~28 MiB)"
    )
    return parser


def _stylize(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from styletx import images
    from styletx.engine import Stylizer
    from styletx.result import Progress

    options = _options_from(args)
    content = images.decode_image(args.content, field="content")
    styles = [images.decode_image(p, field=f"styles[{i}]") for i, p in enumerate(args.styles)]
    stylizer = Stylizer(
        args.weights,
        backend=args.backend,
        precision=args.precision,
        shape_step=args.shape_step,
    )
    if args.previews:
        args.previews.mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        total=options.max_evaluations, unit="eval", disable=args.no_progress, file=sys.stderr
    )

    durations: list[float] = []

    def on_progress(p: Progress) -> None:
        durations.extend(p.evaluation_seconds)
        bar.update(p.evaluations - bar.n)
        bar.set_postfix(
            it=p.iteration,
            loss=f"{p.losses.total:.4g}",
            content=f"{p.losses.content:.3g}",
            style=f"{p.losses.style:.3g}",
            tv=f"{p.losses.tv:.3g}",
        )
        if p.preview is not None and args.previews:
            (args.previews / f"iter_{p.iteration:05d}.png").write_bytes(
                images.encode_image(p.preview)
            )

    try:
        result = stylizer.stylize(content, styles, options, on_progress=on_progress)
    finally:
        bar.close()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fmt = images.format_for_path(args.output)
    args.output.write_bytes(images.encode_image(result.image, fmt, quality=args.quality))
    if args.side_by_side:
        args.side_by_side.parent.mkdir(parents=True, exist_ok=True)
        panel = images.side_by_side(
            [content, styles[0], result.image], height=int(result.image.shape[0])
        )
        args.side_by_side.write_bytes(
            images.encode_image(panel, images.format_for_path(args.side_by_side))
        )
    stats = {
        "evaluations": result.evaluations,
        "iterations": result.iterations,
        "seconds": result.total_seconds,
        "setup_seconds": result.setup_seconds,
        "optimize_seconds": result.optimize_seconds,
        "seconds_per_evaluation": result.seconds_per_evaluation,
        # The loss-and-gradient step alone (no L-BFGS), robust to the first one's set-up.
        "evaluation_seconds_median": statistics.median(durations) if durations else None,
        "losses": dataclasses.asdict(result.losses),
        "width": int(result.image.shape[1]),
        "height": int(result.image.shape[0]),
        "options": options.as_dict(),
        "weights": {"path": str(stylizer.weights.path), "source": stylizer.weights.source},
        "backend": stylizer.backend,
        "device": stylizer.device,
        "precision": result.precision,
        "precision_setting": args.precision,
        "shape_step": stylizer.shape_step,
    }
    if args.stats_json:
        args.stats_json.parent.mkdir(parents=True, exist_ok=True)
        args.stats_json.write_text(json.dumps(stats, indent=2) + "\n")
    print(
        f"wrote {args.output} ({stats['width']}x{stats['height']}) in "
        f"{result.total_seconds:.1f} s, {result.evaluations} evaluations, "
        f"loss {result.losses.total:.4g}, {result.precision}"
    )
    return EXIT_OK


def _info(args: argparse.Namespace) -> int:
    """What the engine would run on here: backend, framework, devices, precision, weights."""
    from styletx import backends, weights
    from styletx.engine import Stylizer

    stylizer = Stylizer(
        args.weights,
        backend=args.backend,
        precision=args.precision,
        shape_step=args.shape_step,
    )
    found = backends.load()
    lines: dict[str, object] = {
        "backend": stylizer.backend,
        "framework_version": found.version(),
        "backends_available": ", ".join(backends.available()),
        "device": stylizer.device,
        "accelerators": ", ".join(found.accelerators()) or "none",
        "precision": stylizer.precision,
        "precision_policy": stylizer.precision_policy.describe(),
        "precision_by_preset": ", ".join(
            f"{p}={stylizer.precision_for(StyleOptions.from_preset(p))}" for p in PRESETS
        ),
        "shape_step": stylizer.shape_step,
        **{f"weights_{k}": v for k, v in weights.describe(stylizer.weights.path).items()},
    }
    lines["weights_source"] = stylizer.weights.source
    for key, value in lines.items():
        print(f"{key}: {value}")
    return EXIT_OK


def _weights(args: argparse.Namespace) -> int:
    from styletx import weights

    if args.action == "fetch":
        found = weights.fetch(force=args.force)
        print(f"weights ready: {found.path} (source: {found.source})")
        return EXIT_OK
    if args.action == "verify":
        resolved = weights.resolve_weights(args.weights)
        weights.check_imagenet(resolved.path)
        print(f"ImageNet VGG16 weights verified: {resolved.path}")
        return EXIT_OK
    if args.action == "export":
        if not args.path.name.endswith(".weights.h5"):
            raise InvalidOptions("path", "must end in .weights.h5 (Keras reads it by its name)")
        dtype: typing.Literal["float16", "float32"] = "float16" if args.float16 else "float32"
        written = weights.export_weights(args.path, source=args.weights, dtype=dtype)
        size = written.stat().st_size / 2**20
        print(f"wrote {written} ({dtype}, {size:.1f} MiB)")
        return EXIT_OK
    info = weights.describe(Path(args.weights) if args.weights else None)
    for key, value in info.items():
        print(f"{key}: {value}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `styletx` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # First thing: whatever command imports the framework later (the weights commands do so only
    # when they build a model), TensorFlow reads its log level at import.
    startup.quiet_environment()
    try:
        if getattr(args, "backend", None):
            # Before anything imports Keras: the backend is fixed at its first import.
            from styletx import backends

            backends.select(args.backend)
        if args.command in ("stylize", "info"):
            startup.load_framework()
        if args.command == "stylize":
            return _stylize(args)
        if args.command == "info":
            return _info(args)
        return _weights(args)
    except (InvalidOptions, InvalidImage, BackendUnavailable) as exc:
        print(f"styletx: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WeightsError as exc:
        print(f"styletx: error: {exc}", file=sys.stderr)
        return EXIT_WEIGHTS
    except (KeyboardInterrupt, Cancelled):
        print("styletx: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StyletxError as exc:
        print(f"styletx: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
