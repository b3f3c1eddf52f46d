"""One trace for every image shape on TensorFlow, and bounded caches (counted, never timed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from styletx import engine
from styletx.engine import Stylizer
from styletx.options import StyleOptions
from tests.support.engine_probes import keys_by_age
from tests.support.weights import tiny_image

FAST = StyleOptions(size=32, max_evaluations=4, seed=0)


@pytest.fixture(scope="module")
def stylizer(seeded_weights: Path) -> Stylizer:
    return Stylizer(seeded_weights)


def test_a_second_aspect_ratio_does_not_trace_again(stylizer: Stylizer) -> None:
    landscape = stylizer.stylize(tiny_image(48, 64), [tiny_image(40, 40)], FAST)
    step = stylizer.step(FAST)
    traced = step.compilations
    assert traced >= 1
    portrait = stylizer.stylize(tiny_image(64, 40, seed=3), [tiny_image(30, 50, seed=4)], FAST)
    assert landscape.image.shape[:2] != portrait.image.shape[:2]
    assert step.compilations == traced


def test_other_batch_sizes_scales_and_styles_reuse_the_trace(stylizer: Stylizer) -> None:
    options = FAST.replace(size=72, scales=2, style_scale=0.7)
    stylizer.stylize(tiny_image(40, 72), [tiny_image(50, 30, seed=6)], options)
    step = stylizer.step(options)
    traced = step.compilations
    stylizer.stylize(tiny_image(72, 50, seed=7), [tiny_image(33, 60, seed=8)], options)
    # A batch of two through the step, as the cross-job batcher will send it.
    content, grams = step.targets(np.zeros((2, 20, 28, 3), dtype=np.float32))
    assert content.shape[0] == 2 and all(g.shape[0] == 2 for g in grams)
    assert step.compilations == traced


# 256: a step larger than the warm-up's image, as the server's --shape-step allows.
@pytest.mark.parametrize("shape_step", [16, 256])
def test_warmup_leaves_nothing_to_trace_for_the_first_job(
    seeded_weights: Path, shape_step: int
) -> None:
    fresh = Stylizer(seeded_weights, shape_step=shape_step)
    fresh.warmup(size=32)
    step = fresh.step(StyleOptions())
    traced = step.compilations
    fresh.stylize(
        tiny_image(50, 90), [tiny_image(64, 64)], StyleOptions(size=48, max_evaluations=2)
    )
    assert step.compilations == traced


def test_layer_sets_live_in_a_bounded_lru(stylizer: Stylizer) -> None:
    layers = ["block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2", "block3_conv1"]
    for layer in layers:
        stylizer.stylize(
            tiny_image(32, 32),
            [tiny_image(32, 32)],
            FAST.replace(max_evaluations=1, style_layers=(layer,)),
        )
    assert len(stylizer._steps) == engine.STEPS_PER_STYLIZER < len(layers)
    kept = [key[2:] for key in keys_by_age(stylizer._steps)]  # (precision, content, *style)
    assert kept == [(layer,) for layer in layers[-engine.STEPS_PER_STYLIZER :]]
