"""`StyleOptions`: every knob of a stylization, with the reference tutorial's defaults."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from styletx.errors import InvalidOptions

InitMethod = Literal["random", "content", "style"]
INIT_METHODS: tuple[str, ...] = get_args(InitMethod)

#: Convolution layers of the Keras VGG16 conv base, in network order.
VGG16_LAYERS: tuple[str, ...] = (
    "block1_conv1",
    "block1_conv2",
    "block2_conv1",
    "block2_conv2",
    "block3_conv1",
    "block3_conv2",
    "block3_conv3",
    "block4_conv1",
    "block4_conv2",
    "block4_conv3",
    "block5_conv1",
    "block5_conv2",
    "block5_conv3",
)

DEFAULT_STYLE_LAYERS: tuple[str, ...] = (
    "block1_conv2",
    "block2_conv2",
    "block3_conv3",
    "block4_conv3",
    "block5_conv3",
)

#: Hard ceilings that protect a worker from absurd jobs; the server may set tighter ones.
MAX_SIZE = 4096
MIN_SIZE = 16
MAX_EVALUATIONS = 100_000


@dataclass(frozen=True)
class StyleOptions:
    """Every option of one stylization; the defaults reproduce the reference tutorial."""

    #: Longest side of the output in pixels; the aspect ratio of the content image is kept.
    size: int = 260
    content_weight: float = 0.02
    #: Total style weight, shared equally by the style layers (4.5 / 5 each by default).
    style_weight: float = 4.5
    tv_weight: float = 0.995
    tv_power: float = 1.25
    content_layer: str = "block2_conv2"
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    #: Loss-and-gradient evaluations of the one L-BFGS run (the reference's 10 x 20 = 200).
    max_evaluations: int = 200
    #: Restart L-BFGS (discarding its history) every N evaluations; 20 reproduces the
    #: reference's schedule, 0 (default) runs one uninterrupted L-BFGS.
    restart_every: int = 0
    init: InitMethod = "random"
    #: Seed of the random init; the same seed gives the same bytes on CPU. None = fresh entropy.
    seed: int | None = None
    #: Blend weights of the style images (normalised to sum 1); empty = equal weights.
    style_blend_weights: tuple[float, ...] = ()
    #: Style images are resized to `style_scale` times the output size before feature extraction.
    style_scale: float = 1.0
    #: Keep the content image's colours: transfer luminance only (neural-style's -original_colors).
    preserve_colors: bool = False
    #: Coarse-to-fine: optimise at size / 2**(scales-1) first, then upsample and refine.
    scales: int = 1
    #: Attach a preview image to every N-th progress event; 0 = never.
    preview_every: int = 0
    #: L-BFGS memory (number of correction pairs kept), scipy's `m`.
    lbfgs_memory: int = 10

    def __post_init__(self) -> None:
        _validate(self)

    def replace(self, **changes: Any) -> StyleOptions:
        """Return a copy with `changes` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable view (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


def _finite_non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOptions(name, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidOptions(name, f"must be finite, got {value}")
    if value < 0:
        raise InvalidOptions(name, f"must be >= 0, got {value}")


def _int_in(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOptions(name, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidOptions(name, f"must be between {low} and {high}, got {value}")


def _validate(o: StyleOptions) -> None:
    _int_in("size", o.size, MIN_SIZE, MAX_SIZE)
    for name in ("content_weight", "style_weight", "tv_weight"):
        _finite_non_negative(name, getattr(o, name))
    _finite_non_negative("tv_power", o.tv_power)
    if o.tv_power < 1.0:
        # Below 1 the TV term is not differentiable at zero differences; L-BFGS then stalls.
        raise InvalidOptions("tv_power", f"must be >= 1, got {o.tv_power}")
    if o.content_layer not in VGG16_LAYERS:
        raise InvalidOptions(
            "content_layer",
            f"unknown layer {o.content_layer!r}; choose one of {', '.join(VGG16_LAYERS)}",
        )
    if not isinstance(o.style_layers, tuple) or not o.style_layers:
        raise InvalidOptions("style_layers", "must be a non-empty tuple of layer names")
    for layer in o.style_layers:
        if layer not in VGG16_LAYERS:
            raise InvalidOptions(
                "style_layers",
                f"unknown layer {layer!r}; choose from {', '.join(VGG16_LAYERS)}",
            )
    if len(set(o.style_layers)) != len(o.style_layers):
        raise InvalidOptions("style_layers", "layers must not repeat")
    _int_in("max_evaluations", o.max_evaluations, 1, MAX_EVALUATIONS)
    _int_in("restart_every", o.restart_every, 0, MAX_EVALUATIONS)
    if o.init not in INIT_METHODS:
        raise InvalidOptions("init", f"must be one of {', '.join(INIT_METHODS)}, got {o.init!r}")
    if o.seed is not None:
        _int_in("seed", o.seed, 0, 2**32 - 1)
    if not isinstance(o.style_blend_weights, tuple):
        raise InvalidOptions("style_blend_weights", "must be a tuple of numbers")
    for weight in o.style_blend_weights:
        _finite_non_negative("style_blend_weights", weight)
    if o.style_blend_weights and sum(o.style_blend_weights) <= 0:
        raise InvalidOptions("style_blend_weights", "must not all be zero")
    _finite_non_negative("style_scale", o.style_scale)
    if not 0.1 <= o.style_scale <= 4.0:
        raise InvalidOptions("style_scale", f"must be between 0.1 and 4, got {o.style_scale}")
    if not isinstance(o.preserve_colors, bool):
        raise InvalidOptions("preserve_colors", "must be a boolean")
    _int_in("scales", o.scales, 1, 4)
    if o.size >> (o.scales - 1) < MIN_SIZE:
        raise InvalidOptions(
            "scales", f"{o.scales} scales make the coarsest size smaller than {MIN_SIZE} px"
        )
    _int_in("preview_every", o.preview_every, 0, MAX_EVALUATIONS)
    _int_in("lbfgs_memory", o.lbfgs_memory, 1, 100)


__all__ = [
    "DEFAULT_STYLE_LAYERS",
    "INIT_METHODS",
    "InitMethod",
    "StyleOptions",
    "VGG16_LAYERS",
]
