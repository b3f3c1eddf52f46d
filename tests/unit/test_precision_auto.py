"""`--precision auto`: bfloat16 where the device has it natively, float32 elsewhere and for the
jobs the quality guard keeps in float32; per-job models, memory models and reports."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from styletx import memory
from styletx.backends.base import Backend
from styletx.backends.tensorflow import TensorFlowBackend
from styletx.engine import Stylizer
from styletx.errors import DeviceMemoryExceeded, InvalidOptions
from styletx.options import StyleOptions
from styletx.precision import (
    FLOAT32_PRESETS,
    GUARD_TOLERANCE,
    PrecisionPolicy,
    cpu_bfloat16_flags,
    float32_reason,
    gpu_bfloat16,
    parse_capability,
)
from styletx.presets import PRESETS
from tests.support.engine_probes import keys_by_age
from tests.support.weights import tiny_image

ROOT = Path(__file__).resolve().parents[2]
GUARD = ROOT / "bench" / "precision_guard.json"
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx2 avx512f {extra} avx512_vnni
"""


# --- deciding ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("avx512_bf16", ("avx512_bf16",)),
        ("amx_bf16 amx_tile", ("amx_bf16",)),
        ("avx512_bf16 amx_bf16", ("avx512_bf16", "amx_bf16")),
        ("avx512_fp16", ()),  # float16 arithmetic is not bfloat16
    ],
)
def test_cpu_flags_are_read_from_cpuinfo(extra: str, expected: tuple[str, ...]) -> None:
    assert cpu_bfloat16_flags(CPUINFO.format(extra=extra)) == expected


def test_cpu_flags_need_the_flags_line() -> None:
    assert cpu_bfloat16_flags("processor : 0\nmodel name : avx512_bf16 inside\n") == ()


@pytest.mark.parametrize(
    ("text", "capability", "native"),
    [
        ("8.0", (8, 0), True),  # A100
        ("9.0", (9, 0), True),  # H100
        ("8.6", (8, 6), True),
        ("sm_90", (9, 0), True),
        ("7.5", (7, 5), False),  # T4: float16 tensor cores only
        ("7.0", (7, 0), False),
        ("", None, False),
        (None, None, False),
    ],
)
def test_gpus_have_bfloat16_from_compute_capability_8(
    text: str | None, capability: tuple[int, int] | None, native: bool
) -> None:
    assert parse_capability(text) == capability
    assert gpu_bfloat16(capability) is native


def test_auto_resolves_per_device_and_job() -> None:
    native = PrecisionPolicy("auto", True, "test")
    plain = PrecisionPolicy("auto", False, "test")
    for preset in PRESETS:
        options = StyleOptions.from_preset(preset)
        kept = preset in FLOAT32_PRESETS
        assert native.for_job(options) == ("float32" if kept else "mixed_bfloat16")
        assert plain.for_job(options) == "float32"
        assert (float32_reason(options) is not None) is kept
    assert native.default == "mixed_bfloat16" and plain.default == "float32"
    assert native.precisions() == ("mixed_bfloat16", "float32")
    assert plain.precisions() == ("float32",)
    assert "reference" in native.describe() and "test" in native.describe()


@pytest.mark.parametrize("setting", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_an_explicit_precision_is_taken_as_asked_for_every_job(setting: str) -> None:
    for native in (True, False):
        policy = PrecisionPolicy(setting, native)  # type: ignore[arg-type]
        assert {policy.for_job(StyleOptions.from_preset(p)) for p in PRESETS} == {setting}
        assert policy.precisions() == (setting,)


def test_auto_never_picks_float16_and_bad_settings_are_refused() -> None:
    chosen = {
        PrecisionPolicy("auto", native).for_job(StyleOptions.from_preset(p))
        for native in (True, False)
        for p in PRESETS
    }
    assert "mixed_float16" not in chosen
    with pytest.raises(InvalidOptions, match="precision"):
        PrecisionPolicy("bfloat16")  # type: ignore[arg-type]


def test_tensorflow_on_a_cpu_is_native_with_the_flags_and_onednn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from styletx.backends import tensorflow as tf_backend

    backend = TensorFlowBackend()
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(tf_backend, "cpu_bfloat16_flags", lambda: ("avx512_bf16",))
    native, why = backend.bfloat16_native("CPU:0")
    assert native and "avx512_bf16" in why
    monkeypatch.setattr(tf_backend, "cpu_bfloat16_flags", lambda: ())
    assert backend.bfloat16_native("CPU:0")[0] is False
    monkeypatch.setattr(tf_backend, "cpu_bfloat16_flags", lambda: ("amx_bf16",))
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    native, why = backend.bfloat16_native("CPU:0")
    assert not native and "oneDNN" in why


@pytest.mark.parametrize(
    ("capability", "native"), [((8, 0), True), ((9, 0), True), ((7, 5), False), (None, False)]
)
def test_a_gpu_is_native_from_its_compute_capability(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int] | None, native: bool
) -> None:
    monkeypatch.setattr(TensorFlowBackend, "compute_capability", lambda self, device: capability)
    found, why = TensorFlowBackend().bfloat16_native("GPU:0")
    assert found is native and "GPU:0" in why
    # The generic rule every backend inherits: no CPU is native unless the backend says so.
    assert Backend.bfloat16_native(TensorFlowBackend(), "CPU:0")[0] is False


# --- the engine under auto ---------------------------------------------------------------------


def _stylizer(
    seeded_weights: Path, monkeypatch: pytest.MonkeyPatch, native: bool, **kwargs: object
) -> Stylizer:
    """A Stylizer under auto on a device that has (or has not) native bfloat16."""
    monkeypatch.setattr(
        TensorFlowBackend, "bfloat16_native", lambda self, device: (native, "test device")
    )
    return Stylizer(seeded_weights, **kwargs)  # type: ignore[arg-type]


FAST = StyleOptions.from_preset("fast", size=32, max_evaluations=3, seed=0)
REFERENCE = StyleOptions.from_preset("reference", size=32, max_evaluations=3, seed=0)


def _compute_dtype(stylizer: Stylizer, options: StyleOptions) -> str:
    extractor = stylizer.step(options)._extractor  # type: ignore[attr-defined]
    return str(extractor.get_layer("block1_conv1").compute_dtype)


def test_auto_runs_bfloat16_jobs_and_keeps_the_reference_in_float32(
    seeded_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stylizer = _stylizer(seeded_weights, monkeypatch, native=True)
    assert stylizer.precision == "mixed_bfloat16"
    assert stylizer.precision_policy.setting == "auto"
    assert list(stylizer._models) == ["mixed_bfloat16"]  # float32's is built when needed
    content, style = tiny_image(32, 32, seed=1), tiny_image(32, 32, seed=2)
    fast = stylizer.stylize(content, [style], FAST)
    reference = stylizer.stylize(content, [style], REFERENCE)
    assert (fast.precision, reference.precision) == ("mixed_bfloat16", "float32")
    assert _compute_dtype(stylizer, FAST) == "bfloat16"
    assert _compute_dtype(stylizer, REFERENCE) == "float32"
    assert sorted(stylizer._models) == ["float32", "mixed_bfloat16"]
    # Scoring a picture (evaluate) runs at the options' precision too: the reference's float32.
    assert stylizer.evaluate(content, [style], fast.image, REFERENCE).total > 0


def test_auto_without_native_bfloat16_is_float32_everywhere(
    seeded_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stylizer = _stylizer(seeded_weights, monkeypatch, native=False)
    assert stylizer.precision == "float32"
    result = stylizer.stylize(tiny_image(32, 32, seed=1), [tiny_image(32, 32, seed=2)], FAST)
    assert result.precision == "float32" and _compute_dtype(stylizer, FAST) == "float32"
    assert list(stylizer._models) == ["float32"]


def test_warmup_warms_every_precision_auto_may_run(
    seeded_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stylizer = _stylizer(seeded_weights, monkeypatch, native=True)
    stylizer.warmup(32)
    warmed = {key[0] for key in keys_by_age(stylizer._steps)}
    assert warmed == {"mixed_bfloat16", "float32"}


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_same_seed_same_bytes_within_a_precision(seeded_weights: Path, precision: str) -> None:
    content, style = tiny_image(32, 32, seed=1), tiny_image(32, 32, seed=2)
    options = StyleOptions.from_preset("fast", size=32, max_evaluations=5, seed=3)
    random = options.replace(init="random")
    first, second = (Stylizer(seeded_weights, precision=precision) for _ in range(2))
    for job in (options, random):
        a = first.stylize(content, [style], job)
        b = second.stylize(content, [style], job)
        c = first.stylize(content, [style], job)
        assert a.precision == precision
        assert a.image.tobytes() == b.image.tobytes() == c.image.tobytes()


def test_the_memory_model_counts_two_byte_activations(
    seeded_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    float32 = memory.default_model("float32")
    bfloat16 = memory.default_model("mixed_bfloat16", two_bytes=True)
    assert bfloat16.per_pixel == pytest.approx(
        float32.per_pixel * (1 - memory.SIXTEEN_BIT_SHARE / 2)
    )
    assert bfloat16.per_pixel < float32.per_pixel
    # Where activations are widened back (XLA on a CPU), the measured XLA figures stand.
    widened = memory.default_model("mixed_bfloat16", two_bytes=False)
    assert widened == memory.DEFAULT_MODELS["mixed_bfloat16"]
    # A device where a 600 px job fits in bfloat16 only: auto admits fast, refuses reference.
    pixels = 600 * 600
    capacity = int(
        (float32.fixed + (float32.per_pixel + bfloat16.per_pixel) / 2 * pixels) / memory.HEADROOM
    )
    stylizer = _stylizer(seeded_weights, monkeypatch, native=True, memory_capacity=capacity)
    assert stylizer.memory_model_for(FAST) == bfloat16
    assert stylizer.memory_model_for(REFERENCE) == float32
    shapes = ((600, 600), [(600, 600)])
    assert stylizer.check_fits(*shapes, FAST.replace(size=600)) == pixels
    with pytest.raises(DeviceMemoryExceeded) as refused:
        stylizer.check_fits(*shapes, REFERENCE.replace(size=600))
    assert 0 < refused.value.max_size < 600


def test_jobs_of_two_precisions_never_share_a_batch(
    seeded_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stylizer = _stylizer(seeded_weights, monkeypatch, native=True, batch_window=0.2)
    content, style = tiny_image(32, 32, seed=1), tiny_image(32, 32, seed=2)
    results = {}

    def run(name: str, options: StyleOptions) -> None:
        results[name] = stylizer.stylize(content, [style], options)

    threads = [
        threading.Thread(target=run, args=(name, options))
        for name, options in (("fast", FAST), ("reference", REFERENCE))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert {r.precision for r in results.values()} == {"mixed_bfloat16", "float32"}
    assert stylizer.batch_stats.largest == 1
    # The same two jobs at one precision do share batches (so the test can see it).
    results.clear()
    threads = [
        threading.Thread(target=run, args=(name, FAST.replace(seed=i)))
        for i, name in enumerate(("a", "b"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert stylizer.batch_stats.largest == 2


# --- the quality guard's measurements ----------------------------------------------------------


def _guard_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(GUARD.read_text())["guard"]
    return rows


def test_the_guard_covers_three_pairs_every_preset_both_colour_modes_and_a_style_scale() -> None:
    rows = _guard_rows()
    assert len({r["pair"] for r in rows}) >= 3
    assert {r["preset"] for r in rows} == set(PRESETS)
    modes = {r["options"]["preserve_colors"] for r in rows}  # type: ignore[index]
    assert {"swap", "luminance"} <= modes
    assert any(r["options"]["style_scale"] != 1.0 for r in rows)  # type: ignore[index]


def test_auto_keeps_float32_for_every_case_where_bfloat16_missed_the_guard() -> None:
    policy = PrecisionPolicy("auto", True, "guard")
    for row in _guard_rows():
        fields = dict(row["options"])  # type: ignore[call-overload]
        fields["style_layers"] = tuple(fields["style_layers"])
        fields["style_blend_weights"] = tuple(fields["style_blend_weights"])
        options = StyleOptions(**fields)
        loss = row["loss"]
        passed = loss["mixed_bfloat16"] <= (1 + GUARD_TOLERANCE) * loss["float32"]  # type: ignore[index]
        assert passed == row["passed"]
        if not passed:
            assert policy.for_job(options) == "float32", row
