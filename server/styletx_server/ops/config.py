"""Server configuration from flags and `STYLETX_*` environment variables (a flag wins over env)."""

from __future__ import annotations

import argparse
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from styletx.backends import SUPPORTED as BACKENDS
from styletx.geometry import DEFAULT_SHAPE_STEP
from styletx.images import DEFAULT_MAX_PIXELS
from styletx.options import (
    MAX_EVALUATIONS,
    MAX_SCALES,
    MAX_SIZE,
    MIN_SIZE,
    StyleOptions,
)
from styletx.precision import DEFAULT_PRECISION, PRECISION_SETTINGS
from styletx.presets import PRESETS
from styletx_server.intake.inspection import Limits
from styletx_server.ops.env import ENV_PREFIX, apply_env, env_name
from styletx_server.security.tenants import check_tokens_file

MIB = 1024 * 1024
#: Largest --shape-step: a step past this pads more than it saves.
MAX_SHAPE_STEP = 256
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start; validated on construction (ValueError)."""

    address: str = "[::]:50051"
    metrics_port: int = 9090
    weights: Path | None = None
    workers: int = 0
    queue_size: int = 16
    max_message_bytes: int = 32 * MIB
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_request_pixels: int = 64_000_000
    max_inflight_pixels: int = 128_000_000
    max_styles: int = 8
    max_calls: int = 64
    #: Share of the call slots one caller (peer address) may hold at once.
    max_peer_share: float = 0.25
    #: Seconds a call's reader may accept no bytes before the call is ended (0: never).
    stall_timeout: float = 5.0
    decode_threads: int = 2
    #: Operator overrides of the engine's defaults (None: the engine's own).
    default_evaluations: int | None = None
    max_evaluations: int = 1000
    default_size: int | None = None
    default_preset: str = StyleOptions().preset
    max_size: int = 1024
    max_style_size: int = 1024
    max_scales: int = 4
    linger: float = 30.0
    result_ttl: float = 600.0
    max_stored_results: int = 64
    max_stored_result_bytes: int = 256 * MIB
    grace_period: float = 60.0
    max_connection_age: float = 300.0
    #: Seconds calls may go on past a connection's age before it is closed under them.
    max_connection_age_grace: float = 600.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_token: str | None = None
    #: TOML file of tenants: tokens, mTLS subjects and each tenant's share (re-read on change).
    auth_tokens_file: Path | None = None
    log_level: str = "INFO"
    warmup: bool = True
    require_gpu: bool = False
    #: Keras backend (None: $KERAS_BACKEND, else tensorflow), chosen before the engine loads.
    backend: str | None = None
    precision: str = DEFAULT_PRECISION
    #: Cross-job batching window in ms (None: 10 on a GPU, off on a CPU; 0: off).
    batch_window_ms: float | None = None
    #: Concurrent jobs per device (0: 4 on a GPU with batching on, else 1).
    jobs_per_device: int = 0
    #: Device memory jobs are planned against, bytes (0: what the backend reports, if anything).
    device_memory_bytes: int = 0
    #: Pad the shorter side of what VGG16 runs up to a multiple of this (exact; 1 = off).
    shape_step: int = DEFAULT_SHAPE_STEP

    def __post_init__(self) -> None:
        _validate(self)


def _validate(c: ServerConfig) -> None:
    if not c.address or ":" not in c.address:
        raise ValueError(f"--address must be HOST:PORT, got {c.address!r}")
    if not 0 <= c.metrics_port <= 65535:
        raise ValueError(f"--metrics-port must be 0-65535, got {c.metrics_port}")
    if c.workers < 0:
        raise ValueError(f"--workers must be >= 0 (0 = auto), got {c.workers}")
    if c.queue_size < 1:
        raise ValueError(f"--queue-size must be >= 1, got {c.queue_size}")
    if c.max_message_bytes < 1024:
        raise ValueError(f"--max-message-bytes must be >= 1024, got {c.max_message_bytes}")
    if c.max_pixels < 1:
        raise ValueError(f"--max-pixels must be >= 1, got {c.max_pixels}")
    if c.max_request_pixels < 1:
        raise ValueError(f"--max-request-pixels must be >= 1, got {c.max_request_pixels}")
    if c.max_inflight_pixels < c.max_request_pixels:
        # Otherwise a request within every limit could never be admitted.
        raise ValueError(
            f"--max-inflight-pixels ({c.max_inflight_pixels}) must be >= --max-request-pixels "
            f"({c.max_request_pixels})"
        )
    if c.max_styles < 1:
        raise ValueError(f"--max-styles must be >= 1, got {c.max_styles}")
    if c.max_calls < 1:
        raise ValueError(f"--max-calls must be >= 1, got {c.max_calls}")
    if not 0 < c.max_peer_share <= 1:
        raise ValueError(f"--max-peer-share must be in (0, 1], got {c.max_peer_share}")
    if not 0 <= c.stall_timeout <= 3600:
        raise ValueError(f"--stall-timeout must be 0-3600 (0 = never), got {c.stall_timeout}")
    if c.decode_threads < 1:
        raise ValueError(f"--decode-threads must be >= 1, got {c.decode_threads}")
    if not MIN_SIZE <= c.max_style_size <= MAX_SIZE:
        raise ValueError(f"--max-style-size must be {MIN_SIZE}-{MAX_SIZE}, got {c.max_style_size}")
    if not 1 <= c.max_scales <= MAX_SCALES:
        raise ValueError(f"--max-scales must be 1-{MAX_SCALES}, got {c.max_scales}")
    for name in ("linger", "result_ttl"):
        if getattr(c, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(c, name)}")
    if c.max_stored_results < 0 or c.max_stored_result_bytes < 0:
        raise ValueError("--max-stored-results and --max-stored-result-bytes must be >= 0")
    if not 1 <= c.max_evaluations <= MAX_EVALUATIONS:
        raise ValueError(f"--max-evaluations must be 1-{MAX_EVALUATIONS}, got {c.max_evaluations}")
    engine = StyleOptions()
    evaluations = engine.max_evaluations if c.default_evaluations is None else c.default_evaluations
    if not 1 <= evaluations <= c.max_evaluations:
        raise ValueError(
            f"--default-evaluations must be 1-{c.max_evaluations} (--max-evaluations), "
            f"got {evaluations}"
            + (" (the engine's default)" if c.default_evaluations is None else "")
        )
    if not MIN_SIZE <= c.max_size <= MAX_SIZE:
        raise ValueError(f"--max-size must be {MIN_SIZE}-{MAX_SIZE}, got {c.max_size}")
    size = engine.size if c.default_size is None else c.default_size
    if not MIN_SIZE <= size <= c.max_size:
        raise ValueError(
            f"--default-size must be {MIN_SIZE}-{c.max_size} (--max-size), got {size}"
            + (" (the engine's default)" if c.default_size is None else "")
        )
    if c.default_preset not in PRESETS:
        raise ValueError(f"--default-preset must be one of {', '.join(PRESETS)}")
    if c.max_connection_age < 0:
        raise ValueError(f"--max-connection-age must be >= 0, got {c.max_connection_age}")
    if c.max_connection_age_grace < 0:
        raise ValueError(
            f"--max-connection-age-grace must be >= 0, got {c.max_connection_age_grace}"
        )
    if c.grace_period < 0:
        raise ValueError(f"--grace-period must be >= 0, got {c.grace_period}")
    if (c.tls_cert is None) != (c.tls_key is None):
        raise ValueError("--tls-cert and --tls-key must be given together")
    if c.tls_client_ca is not None and c.tls_cert is None:
        raise ValueError("--tls-client-ca needs TLS: give --tls-cert and --tls-key too")
    if c.auth_token is not None and not c.auth_token.strip():
        raise ValueError("--auth-token must not be blank")
    if c.auth_tokens_file is not None:
        check_tokens_file(c.auth_tokens_file)
    if c.backend is not None and c.backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {c.backend!r}")
    if c.precision not in PRECISION_SETTINGS:
        raise ValueError(
            f"--precision must be one of {', '.join(PRECISION_SETTINGS)}, got {c.precision!r}"
        )
    if c.batch_window_ms is not None and not 0 <= c.batch_window_ms <= 1000:
        raise ValueError(f"--batch-window-ms must be 0-1000 (0 = off), got {c.batch_window_ms}")
    if c.jobs_per_device < 0:
        raise ValueError(f"--jobs-per-device must be >= 0 (0 = auto), got {c.jobs_per_device}")
    if not 1 <= c.shape_step <= MAX_SHAPE_STEP:
        raise ValueError(f"--shape-step must be 1-{MAX_SHAPE_STEP} (1 = off), got {c.shape_step}")
    if c.device_memory_bytes < 0:
        raise ValueError(
            f"--device-memory-bytes must be >= 0 (0 = auto), got {c.device_memory_bytes}"
        )
    if c.log_level.upper() not in _LOG_LEVELS:
        raise ValueError(f"--log-level must be one of {', '.join(_LOG_LEVELS)}, got {c.log_level}")


def _version_string() -> str:
    """The installed version and the API it serves (the engine ships in the same wheel)."""
    from styletx import __version__

    return f"{__version__} (API styletx.v1)"


def build_parser() -> argparse.ArgumentParser:
    """The `styletx-server` argument parser; every flag's help names its environment variable."""
    parser = argparse.ArgumentParser(
        prog="styletx-server",
        description="Neural style transfer gRPC server (styletx.v1.StyleTransferService). "
        "Every flag --foo-bar can also be set with the environment variable STYLETX_FOO_BAR; "
        "a flag on the command line wins.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version_string()}")
    d = ServerConfig()

    hints = typing.get_type_hints(ServerConfig)

    def add(flag: str, help_text: str, **kwargs: object) -> None:
        """One flag; its default and value type come from the ServerConfig field it sets."""
        name = flag.removeprefix("--").replace("-", "_")
        if name in hints and "action" not in kwargs:
            kwargs.setdefault("default", getattr(d, name))
            kinds = [k for k in typing.get_args(hints[name]) if k is not type(None)]
            kind = kinds[0] if kinds else hints[name]
            if kind in (int, float, Path):
                kwargs.setdefault("type", kind)
        parser.add_argument(flag, help=f"{help_text} [env {env_name(flag)}]", **kwargs)  # type: ignore[arg-type]

    add("--address", "gRPC listen address HOST:PORT (port 0 picks a free one)")
    add(
        "--metrics-port",
        "Prometheus /metrics HTTP port; 0 turns metrics off",
    )
    add(
        "--weights",
        "VGG16 .weights.h5 file (default: $STYLETX_WEIGHTS, then the cache)",
    )
    add(
        "--workers",
        "concurrent jobs; 0 = --jobs-per-device per GPU, 1 on CPU",
    )
    add(
        "--backend",
        "Keras backend running the model (default: $KERAS_BACKEND, else tensorflow)",
        choices=BACKENDS,
    )
    add(
        "--precision",
        "Keras dtype policy of the model: mixed_* run VGG16's activations in 16 bits, losses "
        "and gradients are summed in float32 or wider; auto: mixed_bfloat16 where the device "
        "computes bfloat16 natively (CPUs with AVX512_BF16/AMX-BF16, GPUs of compute "
        "capability >= 8.0), float32 elsewhere and for the reference preset",
        choices=PRECISION_SETTINGS,
    )
    add(
        "--batch-window-ms",
        "cross-job batching: evaluations of concurrent jobs of the same shape on one device go "
        "through VGG16 as one batch, gathered for at most this long; 0 = off (default: 10 on "
        "a GPU, off on a CPU)",
    )
    add(
        "--jobs-per-device",
        "jobs running at once on each device (their evaluations batch together); 0 = 4 on a "
        "GPU with batching on, else 1",
    )
    add(
        "--device-memory-bytes",
        "GPU memory jobs are planned against: a job predicted not to fit is refused "
        "(INVALID_ARGUMENT naming the largest size that fits), jobs that do not fit together "
        "wait; 0 = what the backend reports (JAX does, TensorFlow does not: then unchecked)",
    )
    add(
        "--shape-step",
        "VGG16 runs each image with its shorter side padded up to a multiple of this many "
        "pixels (masked: losses, gradients and pictures are unchanged), so photos of many "
        "aspect ratios share a few shapes and the kernels TensorFlow keeps per shape stay "
        "few; costs up to that many rows or columns of compute; 1 = off (TensorFlow only)",
    )
    add(
        "--queue-size",
        "jobs that may wait for a worker; more get RESOURCE_EXHAUSTED",
    )
    add(
        "--max-message-bytes",
        "largest gRPC message received or sent",
    )
    add(
        "--max-pixels",
        "largest input image (width x height), checked before decoding",
    )
    add(
        "--max-request-pixels",
        "largest sum of the content's and style images' pixels in one request (header sizes, "
        "checked before decoding)",
    )
    add(
        "--max-inflight-pixels",
        "budget of input pixels (header sizes) of every call being decoded, queued or running; "
        "a call beyond it gets RESOURCE_EXHAUSTED (OVER_BUDGET) before any decoding",
    )
    add("--max-styles", "most style images per request")
    add(
        "--max-calls",
        "most concurrent Stylize calls (streams, attached ones included); more get "
        "RESOURCE_EXHAUSTED (TOO_MANY_CALLS)",
    )
    add(
        "--max-peer-share",
        "share of the --max-calls slots one caller (peer address) may hold at once; more get "
        "RESOURCE_EXHAUSTED (TOO_MANY_CALLS); 1 = no per-caller bound (behind a proxy that "
        "hides client addresses every call is one peer)",
    )
    add(
        "--stall-timeout",
        "seconds a call's reader may accept no bytes (plus the time a slow reader needs for a "
        "large message at 64 KiB/s) before the call is ended (CANCELLED, STALLED) and frees "
        "its slot; a job with a request key keeps running for --linger; 0 = never",
    )
    add(
        "--decode-threads",
        "threads decoding admitted images (off the event loop)",
    )
    engine = StyleOptions()
    add(
        "--default-preset",
        "preset of requests that name none (its values apply under the request's own options)",
        choices=PRESETS,
    )
    add(
        "--default-evaluations",
        "L-BFGS evaluation budget when neither the request nor its preset sets one "
        f"(default: the engine's, {engine.max_evaluations})",
    )
    add(
        "--max-evaluations",
        "largest evaluation budget a request may ask for",
    )
    add(
        "--default-size",
        "output size (longest side, px) when neither the request nor its preset sets one "
        f"(default: the engine's, {engine.size})",
    )
    add("--max-size", "largest output size a request may ask for")
    add(
        "--max-style-size",
        "largest style pass (longest side, px = size x style_scale) a request may cause",
    )
    add("--max-scales", "most coarse-to-fine scales")
    add(
        "--linger",
        "seconds a job with a request_key keeps running after its last caller left, so a "
        "reconnecting caller can re-attach (jobs without a key stop at once; CancelJob stops "
        "a keyed one)",
    )
    add(
        "--result-ttl",
        "seconds the result of a job with a request_key is kept for callers re-attaching, and "
        "how any keyed job ended for GetJob and WatchJob",
    )
    add(
        "--max-stored-results",
        "most results kept for re-attaching callers (oldest dropped first)",
    )
    add(
        "--max-stored-result-bytes",
        "most bytes of results kept for re-attaching callers (oldest dropped first)",
    )
    add(
        "--grace-period",
        "seconds running jobs may finish after SIGTERM/SIGINT before they are cancelled; queued "
        "jobs that cannot finish within it are refused at once (UNAVAILABLE, DRAINING)",
    )
    add(
        "--max-connection-age",
        "seconds after which a client connection is asked to reconnect (GOAWAY), so clients "
        "doing round robin over DNS find new replicas; calls in flight finish; 0 = never",
    )
    add(
        "--max-connection-age-grace",
        "seconds calls may go on past a connection's maximum age before the connection is "
        "closed under them (which also ends calls whose reader stalled); size it from the "
        "longest job the limits allow",
    )
    add("--tls-cert", "PEM certificate chain; enables TLS with --tls-key")
    add("--tls-key", "PEM private key; enables TLS with --tls-cert")
    add(
        "--tls-client-ca",
        "PEM CA bundle: require client certificates signed by it (mutual TLS; needs --tls-cert)",
    )
    add(
        "--auth-token",
        "require metadata 'authorization: Bearer TOKEN' on API calls (health "
        "and reflection stay open)",
    )
    add(
        "--auth-tokens-file",
        "TOML file naming tenants: each [tenants.NAME] lists its bearer tokens, its mTLS "
        "certificate subjects (common name or subject alternative name) and its share (weight, "
        "max_queued, max_running, max_calls); re-read when it changes, a bad new file keeps the "
        "old mapping (see README); callers it does not name are refused unless --auth-token "
        "matches (the default tenant)",
    )
    add("--log-level", "log level", choices=_LOG_LEVELS, type=str.upper)
    add(
        "--no-warmup",
        "skip the warm-up job at start (SERVING sooner, first job slower)",
        action="store_true",
        default=False,
    )
    add(
        "--require-gpu",
        "exit 1 at start when no usable GPU is visible (for the GPU image)",
        action="store_true",
        default=False,
    )
    return parser


def limits_of(config: ServerConfig) -> Limits:
    """The intake limits named like ServerConfig fields, taken from `config`."""
    return Limits(**{f.name: getattr(config, f.name) for f in fields(Limits)})


def load_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> ServerConfig:
    """Parse `argv` (default sys.argv[1:]) over `env` (default os.environ); exits 2 on bad input."""
    parser = build_parser()
    apply_env(parser, os.environ if env is None else env)
    args = parser.parse_args(argv)
    try:
        # Every flag's dest is the field's name, except --no-warmup (the negation of `warmup`).
        values = {f.name: getattr(args, f.name) for f in fields(ServerConfig) if f.name != "warmup"}
        return ServerConfig(**values, warmup=not args.no_warmup)
    except ValueError as exc:
        parser.error(str(exc))


__all__ = ["ENV_PREFIX", "ServerConfig", "build_parser", "env_name", "limits_of", "load_config"]
