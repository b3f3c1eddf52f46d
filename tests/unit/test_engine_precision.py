"""Mixed precision on the CPU (TensorFlow): 16-bit activations, losses close to float32's.

Tolerances: at the first evaluation (same image, same targets) every loss term is within 1%
of float32's (measured: 0.07% for bfloat16, 0.02% for float16 at 32 px); after a few L-BFGS
steps the trajectories drift apart a little, and the final total stays within 5% (measured 1%).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from styletx import precision
from styletx.engine import Stylizer
from styletx.errors import InvalidOptions, StyletxError
from styletx.objective import SCALED_WEIGHTS
from styletx.options import StyleOptions
from styletx.precision import PRECISIONS, LossScale
from tests.support.engine_probes import compute_dtype
from tests.support.weights import tiny_image

OPTIONS = StyleOptions(size=32, max_evaluations=6, seed=0)
FIRST_RTOL = 1e-2
FINAL_RTOL = 5e-2


def run(stylizer: Stylizer, options: StyleOptions = OPTIONS) -> tuple[list[Any], Any]:
    """The job's step calls (terms, whether the gradient was finite) and its result."""
    step = stylizer.step(options)
    real = step.loss_and_grad
    calls: list[tuple[np.ndarray, bool]] = []

    def record(images: Any, targets: Any) -> Any:
        terms, grad = real(images, targets)
        calls.append((terms[0].copy(), bool(np.isfinite(grad).all())))
        return terms, grad

    step.loss_and_grad = record  # type: ignore[method-assign]
    try:
        result = stylizer.stylize(tiny_image(48, 64, seed=1), [tiny_image(40, 40, seed=2)], options)
    finally:
        del step.loss_and_grad
    return calls, result


@pytest.fixture(scope="module")
def float32_run(seeded_weights: Path) -> tuple[list[Any], Any]:
    return run(Stylizer(seeded_weights))


@pytest.mark.parametrize("name", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs_in_16_bits_with_losses_close_to_float32(
    seeded_weights: Path, float32_run: tuple[list[Any], Any], name: str
) -> None:
    stylizer = Stylizer(seeded_weights, precision=name)
    assert stylizer.precision == name
    # The convolutions compute in 16 bits; their weights stay float32.
    conv = stylizer._vgg.get_layer("block1_conv1")
    assert conv.compute_dtype == compute_dtype(name) and conv.variable_dtype == "float32"
    calls, result = run(stylizer)
    reference_calls, reference = float32_run
    assert result.evaluations == OPTIONS.max_evaluations
    np.testing.assert_allclose(calls[0][0], reference_calls[0][0], rtol=FIRST_RTOL)
    final = [result.losses.total, result.losses.content, result.losses.style, result.losses.tv]
    assert np.isfinite(final).all()
    assert result.losses.total == pytest.approx(reference.losses.total, rel=FINAL_RTOL)
    assert np.isfinite(result.image.astype(np.float64)).all()


def test_float16_overflow_is_caught_by_the_loss_scale(seeded_weights: Path) -> None:
    # A huge content weight: the backward pass through float16 activations overflows.
    options = OPTIONS.replace(content_weight=1e6)
    calls, result = run(Stylizer(seeded_weights, precision="mixed_float16"), options)
    _, reference = run(Stylizer(seeded_weights), options)
    overflowed = [finite for _, finite in calls].count(False)
    assert overflowed >= 1
    # Every overflow was evaluated again (scaled down); L-BFGS only saw finite evaluations.
    assert len(calls) == options.max_evaluations + overflowed
    assert result.evaluations == options.max_evaluations
    assert result.losses.total == pytest.approx(reference.losses.total, rel=FINAL_RTOL)


def test_bfloat16_never_needs_a_loss_scale(seeded_weights: Path) -> None:
    options = OPTIONS.replace(content_weight=1e6)
    calls, _ = run(Stylizer(seeded_weights, precision="mixed_bfloat16"), options)
    assert all(finite for _, finite in calls) and len(calls) == options.max_evaluations


def test_loss_scale_lowers_only_under_float16_and_gives_up() -> None:
    assert not LossScale("float32").back_off() and not LossScale("mixed_bfloat16").back_off()
    scale = LossScale("mixed_float16")
    steps = 0
    while scale.back_off():
        steps += 1
    assert steps == LossScale.MAX_RETRIES
    assert scale.value == LossScale.FACTOR ** (-LossScale.MAX_RETRIES)


def test_the_loss_scale_leaves_the_tv_power_alone() -> None:
    from styletx import losses

    assert losses.WEIGHT_FIELDS.index("tv_power") == SCALED_WEIGHTS == len(losses.WEIGHT_FIELDS) - 1


def test_unknown_precision_is_an_option_error(seeded_weights: Path) -> None:
    with pytest.raises(InvalidOptions, match="precision: must be one of auto, float32"):
        Stylizer(seeded_weights, precision="float8")
    assert PRECISIONS == ("float32", "mixed_bfloat16", "mixed_float16")
    model = object()
    assert precision.with_policy(model, "float32") is model  # float32: no copy of the model


def test_float16_that_stays_non_finite_fails_clearly_after_the_retries(
    seeded_weights: Path,
) -> None:
    stylizer = Stylizer(seeded_weights, precision="mixed_float16")
    step = stylizer.step(OPTIONS)
    calls = []

    def overflowing(images: Any, targets: Any) -> Any:
        calls.append(np.asarray(targets.weights).copy())
        return np.full((1, 4), np.inf), np.full(images.shape, np.inf, np.float32)

    step.loss_and_grad = overflowing  # type: ignore[method-assign]
    try:
        with pytest.raises(StyletxError, match="not finite even with the loss scaled"):
            stylizer.stylize(tiny_image(32, 32), [tiny_image(32, 32, seed=2)], OPTIONS)
    finally:
        del step.loss_and_grad
    assert len(calls) == LossScale.MAX_RETRIES + 1
    # Each retry scaled the three loss weights down, never the TV power.
    first, last = calls[0][0], calls[-1][0]
    np.testing.assert_allclose(last[:3], first[:3] * LossScale.FACTOR**-LossScale.MAX_RETRIES)
    assert last[3] == first[3] == OPTIONS.tv_power
