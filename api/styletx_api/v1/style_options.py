"""Generated from protos/styletx/v1/style_transfer.proto by `make proto`: do not edit.

Python types and help texts of the API's stylization options (styletx.v1.StyleOptions)
and enums, derived from the proto's fields and comments so an option is declared once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal, TypeAlias, TypedDict

JobState: TypeAlias = Literal["queued", "running", "done", "failed", "cancelled"]
"""Where a job started with a request key is (see `GetJob`)."""

ImageFormat: TypeAlias = Literal["png", "jpeg", "webp"]
"""Encoding of an image the server returns."""

ColorPreservation: TypeAlias = Literal["swap", "luminance", "off"]
"""How the content image's colours are kept (values 1 and 2 are the two methods users know)."""

Preset: TypeAlias = Literal["reference", "fast", "high"]
"""A named set of options chosen from measurements; explicit option fields override it."""

InitMethod: TypeAlias = Literal["random", "content", "style", "content_matched"]
"""How the optimised image is initialised."""


class StyleOptionArgs(TypedDict, total=False):
    """Stylization options as keyword arguments; an omitted key takes the server's
    default (styletx.v1.StyleOptions)."""

    size: int
    """Longest side of the output in pixels; the content image's aspect ratio is kept."""

    content_weight: float
    """Weight of the content loss (0 to 1e12)."""

    style_weight: float
    """Total weight of the style loss, shared equally by the style layers (0 to 1e12)."""

    tv_weight: float
    """Weight of the total-variation (smoothness) loss (0 to 1e12)."""

    tv_power: float
    """Exponent of the total-variation loss (1 to 4)."""

    content_layer: str
    """VGG16 layer whose features the content loss compares, e.g. \"block2_conv2\"."""

    style_layers: Sequence[str]
    """VGG16 layers whose Gram matrices the style loss compares; empty means the default five."""

    max_evaluations: int
    """Budget of loss-and-gradient evaluations of the L-BFGS optimisation."""

    restart_every: int
    """Restart L-BFGS every N evaluations (20 reproduces the reference); 0 never restarts."""

    init: InitMethod
    """Initial image."""

    seed: int
    """Seed of the random initial image; the same seed gives the same result on the same device."""

    style_scale: float
    """Longest side of each style image as a multiple of the output's longest side (0.1-4); the style keeps its own aspect ratio (neural-style's -style_scale)."""

    preserve_colors: ColorPreservation
    """Keep the content image's colours: a post-hoc swap or luminance-only transfer."""

    scales: int
    """Number of coarse-to-fine scales (1-4); each doubles the size of the previous one."""

    preset: Preset
    """Named option set applied before the explicit fields above (which override it)."""

    lbfgs_memory: int
    """L-BFGS memory: correction pairs kept (scipy's m, 1-100)."""

    pixel_bounds: bool
    """Keep the pixels inside 0..255 while optimising (L-BFGS-B bounds). Off, as in the reference, they stray outside and the delivered picture is clipped, which undoes part of the style."""


@dataclass(frozen=True, slots=True)
class ResolvedOptions:
    """Options as the server resolved them (preset and defaults filled in), as the
    Started event reports them; a field this server did not report is None."""

    size: int | None = None
    """Longest side of the output in pixels; the content image's aspect ratio is kept."""

    content_weight: float | None = None
    """Weight of the content loss (0 to 1e12)."""

    style_weight: float | None = None
    """Total weight of the style loss, shared equally by the style layers (0 to 1e12)."""

    tv_weight: float | None = None
    """Weight of the total-variation (smoothness) loss (0 to 1e12)."""

    tv_power: float | None = None
    """Exponent of the total-variation loss (1 to 4)."""

    content_layer: str | None = None
    """VGG16 layer whose features the content loss compares, e.g. \"block2_conv2\"."""

    style_layers: tuple[str, ...] = ()
    """VGG16 layers whose Gram matrices the style loss compares; empty means the default five."""

    max_evaluations: int | None = None
    """Budget of loss-and-gradient evaluations of the L-BFGS optimisation."""

    restart_every: int | None = None
    """Restart L-BFGS every N evaluations (20 reproduces the reference); 0 never restarts."""

    init: InitMethod | None = None
    """Initial image."""

    seed: int | None = None
    """Seed of the random initial image; the same seed gives the same result on the same device."""

    style_scale: float | None = None
    """Longest side of each style image as a multiple of the output's longest side (0.1-4); the style keeps its own aspect ratio (neural-style's -style_scale)."""

    preserve_colors: ColorPreservation | None = None
    """Keep the content image's colours: a post-hoc swap or luminance-only transfer."""

    scales: int | None = None
    """Number of coarse-to-fine scales (1-4); each doubles the size of the previous one."""

    preset: Preset | None = None
    """Named option set applied before the explicit fields above (which override it)."""

    lbfgs_memory: int | None = None
    """L-BFGS memory: correction pairs kept (scipy's m, 1-100)."""

    pixel_bounds: bool | None = None
    """Keep the pixels inside 0..255 while optimising (L-BFGS-B bounds). Off, as in the reference, they stray outside and the delivered picture is clipped, which undoes part of the style."""



class ErrorReason(StrEnum):
    """Why a call failed. Every error status carries a google.rpc.ErrorInfo with domain \"styletx.v1\" whose `reason` is one of these names without the ERROR_REASON_ prefix (e.g. \"QUEUE_FULL\")."""

    QUEUE_FULL = "QUEUE_FULL"
    """RESOURCE_EXHAUSTED with RetryInfo: every queue slot is taken; retry later or elsewhere."""

    OVER_BUDGET = "OVER_BUDGET"
    """RESOURCE_EXHAUSTED with RetryInfo: the pixels of the calls in flight fill the server's budget."""

    TOO_MANY_CALLS = "TOO_MANY_CALLS"
    """RESOURCE_EXHAUSTED with RetryInfo: the server holds as many open calls as it takes."""

    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    """RESOURCE_EXHAUSTED without RetryInfo: the job ran out of memory; retrying will not help."""

    INVALID_INPUT = "INVALID_INPUT"
    """INVALID_ARGUMENT with BadRequest: a field is malformed or out of the API's range."""

    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    """INVALID_ARGUMENT with BadRequest: the job is beyond this server's limits (named in the metadata)."""

    KEY_REUSED = "KEY_REUSED"
    """ALREADY_EXISTS: the request key belongs to a job with a different request."""

    DRAINING = "DRAINING"
    """UNAVAILABLE: the server is shutting down and takes no new job; retry on another replica."""

    LOADING = "LOADING"
    """UNAVAILABLE: the model is still loading; retry shortly."""

    SHUTDOWN = "SHUTDOWN"
    """UNAVAILABLE: the job was stopped because the server shut down before it finished."""

    UNAUTHENTICATED = "UNAUTHENTICATED"
    """UNAUTHENTICATED: a missing, malformed or wrong bearer token."""

    INTERNAL = "INTERNAL"
    """INTERNAL: a server fault; the message names the request id to look up in the server's logs."""

    CANCELLED = "CANCELLED"
    """CANCELLED: the caller cancelled the call (seen in the server's logs and metrics)."""

    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    """DEADLINE_EXCEEDED: the call's deadline passed before the job finished."""

    NON_FINITE_LOSS = "NON_FINITE_LOSS"
    """INVALID_ARGUMENT with BadRequest: a loss or its gradient became inf or NaN while optimising; the field named is the weight to lower (or use a smaller image)."""

    STALLED = "STALLED"
    """CANCELLED: the caller accepted no bytes for the server's stall timeout, so the server ended the call; a job with a request key keeps running for a while: re-attach with the key."""

    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    """NOT_FOUND: no job with this request key on this replica: it never started here, or it ended longer ago than the server keeps outcomes (its `--result-ttl`), or its result was dropped."""

    TENANT_QUOTA = "TENANT_QUOTA"
    """RESOURCE_EXHAUSTED with RetryInfo: the caller's tenant holds as many waiting jobs or open calls as its share of the server allows (the metadata names the quota and its value); retry when one of its jobs or calls ends."""

    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    """UNAVAILABLE with RetryInfo: the job store the replicas share (Redis) did not answer in time; nothing was admitted. Retry after the delay, on this replica or another."""

    MAX_ATTEMPTS = "MAX_ATTEMPTS"
    """ABORTED: the job lost its worker (the replica running it died or stopped renewing its lease) as many times as the server allows (`--max-attempts`); it is not run again."""


#: One-line help of every option, from its proto comment (for CLIs).
OPTION_HELP: Final[dict[str, str]] = {
    "size": "Longest side of the output in pixels; the content image's aspect ratio is kept.",
    "content_weight": 'Weight of the content loss (0 to 1e12).',
    "style_weight": 'Total weight of the style loss, shared equally by the style layers (0 to 1e12).',
    "tv_weight": 'Weight of the total-variation (smoothness) loss (0 to 1e12).',
    "tv_power": 'Exponent of the total-variation loss (1 to 4).',
    "content_layer": 'VGG16 layer whose features the content loss compares, e.g. "block2_conv2".',
    "style_layers": 'VGG16 layers whose Gram matrices the style loss compares; empty means the default five.',
    "max_evaluations": 'Budget of loss-and-gradient evaluations of the L-BFGS optimisation.',
    "restart_every": 'Restart L-BFGS every N evaluations (20 reproduces the reference); 0 never restarts.',
    "init": 'Initial image.',
    "seed": 'Seed of the random initial image; the same seed gives the same result on the same device.',
    "style_scale": "Longest side of each style image as a multiple of the output's longest side (0.1-4); the style keeps its own aspect ratio (neural-style's -style_scale).",
    "preserve_colors": "Keep the content image's colours: a post-hoc swap or luminance-only transfer.",
    "scales": 'Number of coarse-to-fine scales (1-4); each doubles the size of the previous one.',
    "preset": 'Named option set applied before the explicit fields above (which override it).',
    "lbfgs_memory": "L-BFGS memory: correction pairs kept (scipy's m, 1-100).",
    "pixel_bounds": 'Keep the pixels inside 0..255 while optimising (L-BFGS-B bounds). Off, as in the reference, they stray outside and the delivered picture is clipped, which undoes part of the style.',
}
