"""`StyleOptions`: every knob of a stylization, with the reference tutorial's defaults."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Self, get_args

from styletx.errors import InvalidOptions
from styletx.geometry import MIN_SIDE
from styletx.presets import PRESET_FIELDS, PRESET_VALUES, PRESETS, Preset

InitMethod = Literal["random", "content", "style", "content_matched"]
INIT_METHODS: tuple[str, ...] = get_args(InitMethod)
ColorPreservation = Literal["off", "swap", "luminance"]
COLOR_PRESERVATIONS: tuple[str, ...] = get_args(ColorPreservation)

#: Convolution layers of the Keras VGG16 conv base, in network order.
LayerName = Literal[
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
]
VGG16_LAYERS: tuple[str, ...] = get_args(LayerName)

DEFAULT_STYLE_LAYERS: tuple[LayerName, ...] = (
    "block1_conv2",
    "block2_conv2",
    "block3_conv3",
    "block4_conv3",
    "block5_conv3",
)

#: Hard ceilings that protect a worker from absurd jobs; the server may set tighter ones.
MAX_SIZE = 4096
#: The longest side can be no shorter than the shortest side VGG16 takes.
MIN_SIZE = MIN_SIDE
MAX_EVALUATIONS = 100_000
#: Most coarse-to-fine levels; levels under MIN_SIDE are left out (`geometry.scale_sizes`).
MAX_SCALES = 4
#: Largest content, style and TV weight: far above any useful one (PyTorch's tutorial weighs its
#: style by 1e6) and far below where the float32 loss weights or gradients overflow; a job whose
#: loss still turns non-finite stops with `NonFiniteLoss`.
MAX_LOSS_WEIGHT = 1e12
#: Largest TV exponent: beyond it the TV term of a noisy image overflows float32.
MAX_TV_POWER = 4.0


def _help(text: str) -> dict[str, str]:
    """Field metadata carrying the option's help text: the one place its description is written."""
    return {"help": text}


@dataclass(frozen=True)
class StyleOptions:
    """Every option of one stylization; the defaults reproduce the reference tutorial.

    `preset` fills the fields a call leaves out with that preset's values (`styletx.presets`):
    `StyleOptions(preset="fast", size=512)` is the fast run at 512 px, and `replace(preset=...)`
    switches an existing set of options to another preset the same way. A call that names a
    field keeps its value, so `dataclasses.replace`, which names them all, only relabels. Each
    field's `metadata["help"]` is its description, shown by the CLIs' --help.
    """

    size: int = field(
        default=260, metadata=_help("longest side of the output in pixels (aspect ratio kept)")
    )
    content_weight: float = field(default=0.02, metadata=_help("weight of the content loss"))
    style_weight: float = field(
        default=4.5, metadata=_help("total weight of the style loss, shared by the style layers")
    )
    tv_weight: float = field(default=0.995, metadata=_help("weight of the total-variation loss"))
    tv_power: float = field(
        default=1.25, metadata=_help("exponent of the total-variation loss (1-4)")
    )
    content_layer: LayerName = field(
        default="block2_conv2", metadata=_help("VGG16 layer of the content loss")
    )
    style_layers: tuple[LayerName, ...] = field(
        default=DEFAULT_STYLE_LAYERS, metadata=_help("VGG16 layers of the style loss")
    )
    max_evaluations: int = field(
        default=200,
        metadata=_help("loss-and-gradient evaluation budget of L-BFGS, all scales together"),
    )
    restart_every: int = field(
        default=0,
        metadata=_help(
            "restart L-BFGS every N evaluations (20 = the reference's schedule); 0 = never"
        ),
    )
    init: InitMethod = field(default="random", metadata=_help("initial image"))
    seed: int | None = field(
        default=None, metadata=_help("seed of the random init (same seed, same bytes on CPU)")
    )
    style_blend_weights: tuple[float, ...] = field(
        default=(),
        metadata=_help("blend weights of the style images, one per style (normalised to sum 1)"),
    )
    style_scale: float = field(
        default=1.0,
        metadata=_help("style images' longest side as a multiple of the output's longest side"),
    )
    preserve_colors: ColorPreservation = field(
        default="off",
        metadata=_help(
            "keep the content's colours: 'swap' recolours the result (neural-style's "
            "-original_colors), 'luminance' transfers luminance only (Gatys et al. 2016)"
        ),
    )
    scales: int = field(
        default=1,
        metadata=_help("coarse-to-fine scales, each doubling the size of the previous one"),
    )
    preview_every: int = field(
        default=0, metadata=_help("attach a preview image to every N-th progress event; 0 = never")
    )
    lbfgs_memory: int = field(
        default=10, metadata=_help("L-BFGS memory (correction pairs kept, scipy's m)")
    )
    pixel_bounds: bool = field(
        default=False,
        metadata=_help(
            "keep the pixels inside 0..255 while optimising (L-BFGS-B bounds); off, as in the "
            "reference, they stray and the picture is clipped at the end"
        ),
    )
    preset: Preset = field(
        default="reference",
        metadata=_help("named option set the other options were resolved from (see presets)"),
    )

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        """Note the fields the call names, for `__post_init__` to fill the others from the
        preset (a copy or an unpickling names none and is not filled)."""
        self = super().__new__(cls)
        if args or kwargs:
            names = [f.name for f in dataclasses.fields(cls)]
            object.__setattr__(self, _NAMED, frozenset(names[: len(args)]) | kwargs.keys())
        return self

    def __post_init__(self) -> None:
        named: frozenset[str] = self.__dict__.pop(_NAMED, frozenset())
        # An unknown preset fills nothing; `_validate` names it.
        values = PRESET_VALUES.get(self.preset) if isinstance(self.preset, str) else None
        for name, value in (values or {}).items():
            if name not in named:
                object.__setattr__(self, name, value)
        _validate(self)

    @classmethod
    def from_preset(cls, preset: str = "reference", **overrides: Any) -> StyleOptions:
        """The options of `preset` (see `styletx.presets`), with `overrides` on top."""
        _check_preset(preset)
        return cls(**{**overrides, "preset": preset})

    def replace(self, **changes: Any) -> StyleOptions:
        """Return a copy with `changes` applied (and validated).

        A `preset` other than this one is applied, not just relabelled, as the constructor and
        the server apply one: every option a preset decides (`presets.PRESET_FIELDS`: init,
        max_evaluations, pixel_bounds) takes the new preset's value, or the `StyleOptions`
        default (the reference's) where it sets none, then the other `changes` apply on top. So
        `StyleOptions().replace(preset="fast")` is the fast run (40 evaluations), and
        `StyleOptions(preset="fast", size=512).replace(preset="reference", seed=1)` the
        tutorial's method at 512 px with seed 1. Options no preset decides (size, seed, weights,
        ...) are kept; values given earlier for the decided ones are not, unless named again in
        the same call. Naming the preset the options already have changes nothing, and an
        unknown preset is refused (InvalidOptions on `preset`).
        """
        preset = changes.get("preset", self.preset)
        if preset != self.preset:
            _check_preset(preset)
            changes = {**_preset_fields(preset), **changes}
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable view (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


#: Instance attribute, present only while a call constructs the options: the fields it named.
_NAMED = "_named_by_call"


def _preset_fields(preset: str) -> dict[str, Any]:
    """Every option a preset decides (`PRESET_FIELDS`), at `preset`'s value or the default."""
    defaults = {f.name: f.default for f in dataclasses.fields(StyleOptions)}
    return {name: PRESET_VALUES[preset].get(name, defaults[name]) for name in PRESET_FIELDS}


def _check_preset(preset: object) -> None:
    if not isinstance(preset, str) or preset not in PRESETS:
        raise InvalidOptions("preset", f"must be one of {', '.join(PRESETS)}, got {preset!r}")


def _number_in(name: str, value: float, low: float, high: float) -> None:
    """A real number in [low, high]; the message always states the allowed range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOptions(name, f"must be a number between {low:g} and {high:g}, got {value!r}")
    if not low <= value <= high:  # also false for NaN
        raise InvalidOptions(name, f"must be between {low:g} and {high:g}, got {value:g}")


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
        _number_in(name, getattr(o, name), 0.0, MAX_LOSS_WEIGHT)
    # Below 1 the TV term is not differentiable at zero differences; L-BFGS then stalls.
    _number_in("tv_power", o.tv_power, 1.0, MAX_TV_POWER)
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
    if o.preserve_colors not in COLOR_PRESERVATIONS:
        raise InvalidOptions(
            "preserve_colors",
            f"must be one of {', '.join(COLOR_PRESERVATIONS)}, got {o.preserve_colors!r}",
        )
    _check_preset(o.preset)
    # Any count up to MAX_SCALES suits any size: the pyramid leaves out levels too small for
    # VGG16, so a preset's scales never make a small request fail.
    _int_in("scales", o.scales, 1, MAX_SCALES)
    _int_in("preview_every", o.preview_every, 0, MAX_EVALUATIONS)
    _int_in("lbfgs_memory", o.lbfgs_memory, 1, 100)
    if not isinstance(o.pixel_bounds, bool):
        raise InvalidOptions("pixel_bounds", f"must be true or false, got {o.pixel_bounds!r}")


__all__ = [
    "COLOR_PRESERVATIONS",
    "ColorPreservation",
    "DEFAULT_STYLE_LAYERS",
    "INIT_METHODS",
    "InitMethod",
    "LayerName",
    "MAX_LOSS_WEIGHT",
    "MAX_TV_POWER",
    "StyleOptions",
    "VGG16_LAYERS",
]
