"""Mixed precision: VGG16's activations in 16 bits, losses and gradients summed wider.

A precision is a Keras dtype policy name. Under "mixed_bfloat16" / "mixed_float16" the conv
layers keep float32 weights and compute in 16 bits (tensor cores on a GPU, half the activation
memory); `styletx.losses` casts their outputs back to float32 before Gram matrices and
differences, and sums in float64, so only the network's own arithmetic is 16-bit. The gradient
reaching L-BFGS is the float32 gradient of the float32 input image (float64 at scipy).

`auto` (the default of `Stylizer`, both CLIs and the server) resolves per device and per job
(`PrecisionPolicy`): mixed_bfloat16 where the backend runs bfloat16 convolutions natively on the
device (a CPU with AVX512_BF16 or AMX-BF16 under TensorFlow's oneDNN; a GPU of compute
capability 8.0 or newer: Ampere's and later tensor cores), float32 elsewhere, and float32 for the
jobs where the quality guard (`bench/precision_bench.py`) measured bfloat16 more than 1 % off
float32's final loss (`float32_reason`). mixed_float16 is never chosen by `auto`: it needs a loss
scale, and the guard does not cover it.

float16 has 5 exponent bits (largest value 65504): the backward pass through the network can
overflow where bfloat16, with float32's range, cannot. `LossScale` is the engine's dynamic loss
scale for that case: the loss weights (hence every gradient in the network) are scaled down
after an overflow and the evaluation is repeated; terms and gradient are divided back exactly
(every loss term is linear in its weight).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from styletx.errors import InvalidOptions

if TYPE_CHECKING:
    from styletx.options import StyleOptions

log = logging.getLogger(__name__)

#: A precision a job runs at (a Keras dtype policy).
Precision = Literal["float32", "mixed_bfloat16", "mixed_float16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: What a caller may ask for: a precision, or `auto` (resolved per device and job).
PrecisionSetting = Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"]
PRECISION_SETTINGS: tuple[str, ...] = get_args(PrecisionSetting)
AUTO: Final = "auto"
DEFAULT_PRECISION: PrecisionSetting = "auto"

#: /proc/cpuinfo flags of x86 CPUs that compute bfloat16 dot products in hardware (oneDNN's
#: bfloat16 convolutions then run at up to twice float32's rate, AMX much faster still).
CPU_BFLOAT16_FLAGS: Final = ("avx512_bf16", "amx_bf16")
#: CUDA compute capability from which GPUs have bfloat16 tensor cores (Ampere, sm_80).
GPU_BFLOAT16_CAPABILITY: Final = (8, 0)
#: How much above float32's final loss (scored identically) bfloat16's may end for `auto` to
#: choose it (`bench/precision_bench.py`).
GUARD_TOLERANCE: Final = 0.01
#: Presets whose jobs `auto` keeps in float32: see `float32_reason`.
FLOAT32_PRESETS: Final = frozenset({"reference"})


def check_precision(name: str) -> Precision:
    """`name` when it is a supported precision; InvalidOptions (field `precision`) otherwise."""
    if name not in PRECISIONS:
        raise InvalidOptions("precision", f"must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name  # type: ignore[return-value]


def check_setting(name: str) -> PrecisionSetting:
    """`name` when it is `auto` or a supported precision; InvalidOptions otherwise."""
    if name not in PRECISION_SETTINGS:
        raise InvalidOptions(
            "precision", f"must be one of {', '.join(PRECISION_SETTINGS)}, got {name!r}"
        )
    return name  # type: ignore[return-value]


def cpu_bfloat16_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The bfloat16 flags (`CPU_BFLOAT16_FLAGS`) this CPU has, from `/proc/cpuinfo` (or the
    `cpuinfo` text given); empty where it cannot be read (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ()
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            found.update(value.split())
    return tuple(flag for flag in CPU_BFLOAT16_FLAGS if flag in found)


def gpu_bfloat16(capability: tuple[int, int] | None) -> bool:
    """Whether a CUDA GPU of `capability` (major, minor) has bfloat16 tensor cores."""
    return capability is not None and tuple(capability) >= GPU_BFLOAT16_CAPABILITY


def parse_capability(text: str | None) -> tuple[int, int] | None:
    """(major, minor) from a compute capability such as "8.0" or "sm_90"; None otherwise."""
    match = re.search(r"(\d+)\.?(\d)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def float32_reason(options: StyleOptions) -> str | None:
    """Why `auto` runs this job in float32 although the device has bfloat16; None: it may not.

    The quality guard (`bench/precision_bench.py`, bench/RESULTS.md, its rows in
    bench/precision_guard.json) compared both precisions' final losses, scored identically in
    float32, over three content/style pairs, every preset, colours as they are, both
    `preserve_colors` modes and style_scale 1.5. `fast` and `high` stayed within 1 % in every
    case. `reference` missed it in 2 of 12 (both with style_scale 1.5: +1.3 % and +1.05 %): its
    random start and unbounded pixels make a chaotic path that bfloat16's rounding moves to
    another end, and it is the tutorial's method, the yardstick of the others, so it keeps
    float32 (tests/unit/test_precision_auto.py holds every failing case to float32).
    """
    if options.preset in FLOAT32_PRESETS:
        return f"preset {options.preset!r}: the tutorial's method, kept in float32"
    return None


@dataclass(frozen=True)
class PrecisionPolicy:
    """How one device picks each job's precision: `setting` as asked, and what the device runs.

    `bfloat16_native`: the backend computes bfloat16 convolutions natively on the device;
    `why`: what that was decided from (CPU flags, compute capability), for logs and
    `styletx info`.
    """

    setting: PrecisionSetting
    bfloat16_native: bool = False
    why: str = ""

    def __post_init__(self) -> None:
        check_setting(self.setting)

    @property
    def default(self) -> Precision:
        """The precision of a job nothing excludes from bfloat16 (an explicit setting: itself)."""
        if self.setting != AUTO:
            return check_precision(self.setting)
        return "mixed_bfloat16" if self.bfloat16_native else "float32"

    def for_job(self, options: StyleOptions) -> Precision:
        """The precision `options`' job runs at on this device."""
        default = self.default
        if self.setting == AUTO and default != "float32" and float32_reason(options):
            return "float32"
        return default

    def precisions(self) -> tuple[Precision, ...]:
        """Every precision a job may run at under this policy, the default first."""
        if self.setting == AUTO and self.default != "float32":
            return (self.default, "float32")
        return (self.default,)

    def describe(self) -> str:
        """One line: the setting, what it resolves to, and why."""
        if self.setting != AUTO:
            return f"{self.setting} (as asked)"
        if not self.bfloat16_native:
            return f"auto: float32 ({self.why or 'no native bfloat16 on this device'})"
        keep = ", ".join(sorted(FLOAT32_PRESETS))
        return f"auto: mixed_bfloat16 ({self.why}); float32 for preset {keep}"


def with_policy(model: Any, precision: str) -> Any:
    """`model` with every layer but its input computing under `precision`'s dtype policy.

    Keras gives a layer the process-global policy when it is made, and
    `keras.applications.VGG16` takes no dtype; setting each layer's policy afterwards gives a
    model of this precision without touching that global (other Stylizers of the process may
    use another precision). The weights stay float32 variables (the mixed policies' variable
    dtype), cast to 16 bits as each layer runs. Changes `model` in place, and returns it:
    callers pass a model of their own (`vgg.build_vgg16` builds one per Stylizer).
    """
    precision = check_precision(precision)
    if precision == "float32":
        return model
    import keras

    policy = keras.DTypePolicy(precision)
    for layer in model.layers:
        if layer.__class__.__name__ != "InputLayer":
            layer.dtype_policy = policy
    return model


class LossScale:
    """Dynamic loss scale of one job under mixed_float16 (1.0, never used, otherwise).

    Starts at 1 (the tutorial's losses are large, so the gradients inside the network are far
    above float16's smallest normal); an overflow divides the scale by `FACTOR` and the caller
    evaluates again, up to `MAX_RETRIES` times. The scale never grows back within a job: growing
    would cost a wasted evaluation at every overflow, for no gain at these magnitudes.
    """

    FACTOR = 2.0**8
    MAX_RETRIES = 8

    def __init__(self, precision: str) -> None:
        self.precision = check_precision(precision)
        self.enabled = self.precision == "mixed_float16"
        self.value = 1.0
        self.overflows = 0

    def back_off(self) -> bool:
        """Lower the scale after a non-finite gradient; False (scale unchanged) when disabled or
        the retries are exhausted."""
        if not self.enabled or self.overflows >= self.MAX_RETRIES:
            return False
        self.overflows += 1
        self.value /= self.FACTOR
        log.debug("float16 overflow", extra={"loss_scale": self.value, "overflows": self.overflows})
        return True


__all__ = [
    "AUTO",
    "CPU_BFLOAT16_FLAGS",
    "DEFAULT_PRECISION",
    "FLOAT32_PRESETS",
    "GPU_BFLOAT16_CAPABILITY",
    "GUARD_TOLERANCE",
    "PRECISIONS",
    "PRECISION_SETTINGS",
    "LossScale",
    "Precision",
    "PrecisionPolicy",
    "PrecisionSetting",
    "check_precision",
    "check_setting",
    "cpu_bfloat16_flags",
    "float32_reason",
    "gpu_bfloat16",
    "parse_capability",
    "with_policy",
]
