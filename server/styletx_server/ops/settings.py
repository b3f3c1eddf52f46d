"""Every setting of the server, declared once: a field of `ServerConfig`.

Each field's `setting(...)` says its default, help, range or choices; its name gives the flag
(`--queue-size`) and the environment variable (`STYLETX_QUEUE_SIZE`; a flag wins over it). The
parser, the reading of the environment, validation and the README's table of settings all derive
from these declarations (ops/settings_schema.py, ops/config.py, tools/settings_table.py); only
the checks across fields are written out, at the end.
"""

# ruff: noqa: RUF009 (`setting(...)` returns a dataclasses.field, not a shared default value)

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from styletx.backends import SUPPORTED as BACKENDS
from styletx.geometry import DEFAULT_SHAPE_STEP
from styletx.images import DEFAULT_MAX_PIXELS
from styletx.options import MAX_EVALUATIONS, MAX_SCALES, MAX_SIZE, MIN_SIZE, StyleOptions
from styletx.precision import DEFAULT_PRECISION, PRECISION_SETTINGS
from styletx.presets import PRESETS
from styletx_server.ops import settings_schema
from styletx_server.ops.settings_schema import Setting, setting
from styletx_server.security.tenants import check_tokens_file
from styletx_server.store.url import check_store_url

MIB = 1024 * 1024
#: Largest --shape-step: a step past this pads more than it saves.
MAX_SHAPE_STEP = 256
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The engine's own defaults, which the server's apply over unless the operator sets them.
_ENGINE = StyleOptions()


def _host_port(address: str) -> str | None:
    return None if ":" in address else f"must be HOST:PORT, got {address!r}"


def _not_blank(token: str) -> str | None:
    return None if token.strip() else "must not be blank"


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start; validated on construction (ValueError)."""

    # -- The process: ports, weights, workers, the model on its devices.
    address: str = setting(
        "[::]:50051",
        "gRPC listen address HOST:PORT (port 0 picks a free one)",
        note="HOST:PORT",
        check=_host_port,
    )
    metrics_port: int = setting(
        9090, "Prometheus /metrics HTTP port; 0 turns metrics off", low=0, high=65535
    )
    weights: Path | None = setting(
        None, "VGG16 .weights.h5 file (default: $STYLETX_WEIGHTS, then the cache)"
    )
    workers: int = setting(
        0, "concurrent jobs; 0 = --jobs-per-device per GPU, 1 on CPU", low=0, note="0 = auto"
    )
    backend: str | None = setting(
        None,
        "Keras backend running the model (default: $KERAS_BACKEND, else tensorflow)",
        choices=BACKENDS,
    )
    precision: str = setting(
        DEFAULT_PRECISION,
        "Keras dtype policy of the model: mixed_* run VGG16's activations in 16 bits, losses "
        "and gradients are summed in float32 or wider; auto: mixed_bfloat16 where the device "
        "computes bfloat16 natively (CPUs with AVX512_BF16/AMX-BF16, GPUs of compute "
        "capability >= 8.0), float32 elsewhere and for the reference preset",
        choices=PRECISION_SETTINGS,
    )
    batch_window_ms: float | None = setting(
        None,
        "cross-job batching: evaluations of concurrent jobs of the same shape on one device go "
        "through VGG16 as one batch, gathered for at most this long; 0 = off (default: 10 on "
        "a GPU, off on a CPU)",
        low=0,
        high=1000,
        note="0 = off",
    )
    jobs_per_device: int = setting(
        0,
        "jobs running at once on each device (their evaluations batch together); 0 = 4 on a "
        "GPU with batching on, else 1",
        low=0,
        note="0 = auto",
    )
    device_memory_bytes: int = setting(
        0,
        "GPU memory jobs are planned against: a job predicted not to fit is refused "
        "(INVALID_ARGUMENT naming the largest size that fits), jobs that do not fit together "
        "wait; 0 = what the backend reports (JAX does, TensorFlow does not: then unchecked)",
        low=0,
        note="0 = auto",
    )
    shape_step: int = setting(
        DEFAULT_SHAPE_STEP,
        "VGG16 runs each image with its shorter side padded up to a multiple of this many "
        "pixels (masked: losses, gradients and pictures are unchanged), so photos of many "
        "aspect ratios share a few shapes and the kernels TensorFlow keeps per shape stay "
        "few; costs up to that many rows or columns of compute; 1 = off (TensorFlow only)",
        low=1,
        high=MAX_SHAPE_STEP,
        note="1 = off",
    )
    # -- Admission: what may wait, arrive and be decoded at once.
    queue_size: int = setting(
        16,
        "jobs that may wait for a worker; more get RESOURCE_EXHAUSTED (with --store redis://: "
        "the jobs the whole fleet may hold, waiting or running)",
        low=1,
    )
    max_message_bytes: int = setting(32 * MIB, "largest gRPC message received or sent", low=1024)
    max_pixels: int = setting(
        DEFAULT_MAX_PIXELS,
        "largest input image (width x height), checked before decoding",
        low=1,
    )
    max_request_pixels: int = setting(
        64_000_000,
        "largest sum of the content's and style images' pixels in one request (header sizes, "
        "checked before decoding)",
        low=1,
    )
    max_inflight_pixels: int = setting(
        128_000_000,
        "budget of input pixels (header sizes) of every call being decoded, queued or running; "
        "a call beyond it gets RESOURCE_EXHAUSTED (OVER_BUDGET) before any decoding",
        low=1,
    )
    max_styles: int = setting(8, "most style images per request", low=1)
    max_calls: int = setting(
        64,
        "most concurrent Stylize calls (streams, attached ones included); more get "
        "RESOURCE_EXHAUSTED (TOO_MANY_CALLS)",
        low=1,
    )
    max_peer_share: float = setting(
        0.25,
        "share of the --max-calls slots one caller (peer address) may hold at once; more get "
        "RESOURCE_EXHAUSTED (TOO_MANY_CALLS); 1 = no per-caller bound (behind a proxy that "
        "hides client addresses every call is one peer)",
        low=0,
        high=1,
        above=True,
    )
    stall_timeout: float = setting(
        5.0,
        "seconds a call's reader may accept no bytes (plus the time a slow reader needs for a "
        "large message at 64 KiB/s) before the call is ended (CANCELLED, STALLED) and frees "
        "its slot; a job with a request key keeps running for --linger; 0 = never",
        low=0,
        high=3600,
        note="0 = never",
    )
    decode_threads: int = setting(2, "threads decoding admitted images (off the event loop)", low=1)
    # -- Options: the operator's defaults over the engine's, and the largest a request may ask.
    default_preset: str = setting(
        _ENGINE.preset,
        "preset of requests that name none (its values apply under the request's own options)",
        choices=PRESETS,
    )
    default_evaluations: int | None = setting(
        None,
        "L-BFGS evaluation budget when neither the request nor its preset sets one "
        f"(default: the engine's, {_ENGINE.max_evaluations})",
        low=1,
    )
    max_evaluations: int = setting(
        1000, "largest evaluation budget a request may ask for", low=1, high=MAX_EVALUATIONS
    )
    default_size: int | None = setting(
        None,
        "output size (longest side, px) when neither the request nor its preset sets one "
        f"(default: the engine's, {_ENGINE.size})",
        low=MIN_SIZE,
    )
    max_size: int = setting(
        1024, "largest output size a request may ask for", low=MIN_SIZE, high=MAX_SIZE
    )
    max_style_size: int = setting(
        1024,
        "largest style pass (longest side, px = size x style_scale) a request may cause",
        low=MIN_SIZE,
        high=MAX_SIZE,
    )
    max_scales: int = setting(4, "most coarse-to-fine scales", low=1, high=MAX_SCALES)
    # -- Keyed jobs and their stored results.
    linger: float = setting(
        30.0,
        "seconds a job with a request_key keeps running after its last caller left, so a "
        "reconnecting caller can re-attach (jobs without a key stop at once; CancelJob stops "
        "a keyed one)",
        low=0,
    )
    result_ttl: float = setting(
        600.0,
        "seconds the result of a job with a request_key is kept for callers re-attaching, and "
        "how any keyed job ended for GetJob and WatchJob",
        low=0,
    )
    max_stored_results: int = setting(
        64, "most results kept for re-attaching callers (oldest dropped first)", low=0
    )
    max_stored_result_bytes: int = setting(
        256 * MIB,
        "most bytes of results kept for re-attaching callers (oldest dropped first)",
        low=0,
    )
    store: str = setting(
        "memory://",
        "where jobs, their queue, events and results are kept: memory:// (this process) or a "
        "Redis 7 that replicas share, redis://[user:password@]host[:port][/db] (rediss:// for "
        "TLS; ?prefix=NAME sets the hash tag of its keys, ?timeout=SECONDS bounds each call); "
        "the password is never logged. With Redis, the replicas share one queue (--queue-size "
        "then bounds the fleet's jobs, waiting or running), run any job and answer for any "
        "request key",
        note="memory:// or redis[s]://...",
        check=check_store_url,
    )
    lease_seconds: float = setting(
        10.0,
        "with a shared store: seconds a replica holds a job it runs without renewing its lease "
        "(it renews every third of it); a replica silent for longer loses its jobs to the others",
        low=0,
        above=True,
        high=15,
    )
    max_attempts: int = setting(
        3,
        "with a shared store: attempts a job may lose to replicas that died or stopped renewing "
        "before it fails (ABORTED, MAX_ATTEMPTS)",
        low=1,
        high=100,
    )
    # -- Connections and shutdown.
    grace_period: float = setting(
        60.0,
        "seconds running jobs may finish after SIGTERM/SIGINT before they are cancelled; queued "
        "jobs that cannot finish within it are refused at once (UNAVAILABLE, DRAINING)",
        low=0,
    )
    max_connection_age: float = setting(
        300.0,
        "seconds after which a client connection is asked to reconnect (GOAWAY), so clients "
        "doing round robin over DNS find new replicas; calls in flight finish; 0 = never",
        low=0,
        note="0 = never",
    )
    max_connection_age_grace: float = setting(
        600.0,
        "seconds calls may go on past a connection's maximum age before the connection is "
        "closed under them (which also ends calls whose reader stalled); size it from the "
        "longest job the limits allow",
        low=0,
    )
    # -- Security.
    tls_cert: Path | None = setting(None, "PEM certificate chain; enables TLS with --tls-key")
    tls_key: Path | None = setting(None, "PEM private key; enables TLS with --tls-cert")
    tls_client_ca: Path | None = setting(
        None,
        "PEM CA bundle: require client certificates signed by it (mutual TLS; needs --tls-cert)",
    )
    auth_token: str | None = setting(
        None,
        "require metadata 'authorization: Bearer TOKEN' on API calls (health and reflection "
        "stay open)",
        note="not blank",
        check=_not_blank,
    )
    auth_tokens_file: Path | None = setting(
        None,
        "TOML file naming tenants: each [tenants.NAME] lists its bearer tokens, its mTLS "
        "certificate subjects (common name or subject alternative name) and its share (weight, "
        "max_queued, max_running, max_calls); re-read when it changes, a bad new file keeps the "
        "old mapping (see README); callers it does not name are refused unless --auth-token "
        "matches (the default tenant)",
    )
    # -- Logs and start-up.
    log_level: str = setting("INFO", "log level", choices=_LOG_LEVELS, parse=str.upper)
    #: A switch that defaults on: its flag (and variable) is --no-warmup, so the help is its own.
    warmup: bool = setting(True, "skip the warm-up job at start (SERVING sooner, first job slower)")
    require_gpu: bool = setting(
        False, "exit 1 at start when no usable GPU is visible (for the GPU image)"
    )

    def __post_init__(self) -> None:
        settings_schema.check(self, SETTINGS)
        _check_together(self)


#: Every setting of the server, in the order of --help and of the README's table.
SETTINGS: tuple[Setting, ...] = settings_schema.settings_of(ServerConfig)


def _check_together(c: ServerConfig) -> None:
    """The checks that involve more than one setting (or the file system)."""
    if c.max_inflight_pixels < c.max_request_pixels:
        # Otherwise a request within every limit could never be admitted.
        raise ValueError(
            f"--max-inflight-pixels ({c.max_inflight_pixels}) must be >= --max-request-pixels "
            f"({c.max_request_pixels})"
        )
    evaluations = (
        _ENGINE.max_evaluations if c.default_evaluations is None else c.default_evaluations
    )
    if not 1 <= evaluations <= c.max_evaluations:
        raise ValueError(
            f"--default-evaluations must be 1-{c.max_evaluations} (--max-evaluations), "
            f"got {evaluations}"
            + (" (the engine's default)" if c.default_evaluations is None else "")
        )
    size = _ENGINE.size if c.default_size is None else c.default_size
    if not MIN_SIZE <= size <= c.max_size:
        raise ValueError(
            f"--default-size must be {MIN_SIZE}-{c.max_size} (--max-size), got {size}"
            + (" (the engine's default)" if c.default_size is None else "")
        )
    if (c.tls_cert is None) != (c.tls_key is None):
        raise ValueError("--tls-cert and --tls-key must be given together")
    if c.tls_client_ca is not None and c.tls_cert is None:
        raise ValueError("--tls-client-ca needs TLS: give --tls-cert and --tls-key too")
    if c.auth_tokens_file is not None:
        check_tokens_file(c.auth_tokens_file)


__all__ = ["MAX_SHAPE_STEP", "MIB", "SETTINGS", "ServerConfig"]
