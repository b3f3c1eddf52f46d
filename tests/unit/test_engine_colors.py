"""preserve_colors: "swap" (neural-style's post-hoc colour swap) and "luminance" (Gatys et al.'s
luminance-only transfer), each doing what its documentation says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from styletx import colors, vgg
from styletx.engine import Stylizer
from styletx.options import StyleOptions
from tests.support.weights import tiny_image

FAST = StyleOptions(size=32, max_evaluations=8, seed=0)


@pytest.fixture(scope="module")
def stylizer(seeded_weights: Path) -> Stylizer:
    return Stylizer(seeded_weights)


def _chroma(image: np.ndarray) -> np.ndarray:
    return colors.rgb_to_yiq(image.astype(np.float32))[..., 1:]


def _optimised_images(
    stylizer: Stylizer, options: StyleOptions, content: np.ndarray, style: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The result and every image VGG16 was shown during the optimisation (RGB, float)."""
    step = stylizer.step(options)
    seen: list[np.ndarray] = []
    real = step.loss_and_grad

    def spy(batch: np.ndarray, targets: Any) -> Any:
        seen.append((batch[0] + vgg.BGR_MEAN)[..., ::-1])
        return real(batch, targets)

    step.loss_and_grad = spy  # type: ignore[method-assign]
    try:
        result = stylizer.stylize(content, [style], options)
    finally:
        del step.loss_and_grad
    return result.image, seen


def test_swap_optimises_in_colour_then_restores_the_content_chroma(stylizer: Stylizer) -> None:
    content, style = tiny_image(32, 32, seed=21), tiny_image(32, 32, seed=22)
    image, seen = _optimised_images(stylizer, FAST.replace(preserve_colors="swap"), content, style)
    assert max(float(np.ptp(x, axis=-1).max()) for x in seen) > 10  # colour images optimised
    # Only clipping to 0..255 can move the chroma.
    assert np.mean(np.abs(_chroma(image) - _chroma(content))) < 3.0
    plain = stylizer.stylize(content, [style], FAST).image
    luminance = colors.rgb_to_yiq(image.astype(np.float32))[..., 0]
    plain_luminance = colors.rgb_to_yiq(plain.astype(np.float32))[..., 0]
    # The same optimisation, recoloured: the luminance is kept except where the content's
    # chroma pushes a pixel out of the RGB gamut and clipping moves it.
    assert np.mean(np.abs(luminance - plain_luminance)) < 2.0


def test_luminance_optimises_a_grey_image_and_gives_the_content_chroma(
    stylizer: Stylizer,
) -> None:
    content, style = tiny_image(32, 32, seed=23), tiny_image(32, 32, seed=24)
    options = FAST.replace(preserve_colors="luminance")
    image, seen = _optimised_images(stylizer, options, content, style)
    assert len(seen) == options.max_evaluations
    for x in seen:  # every image VGG16 saw had R = G = B
        np.testing.assert_allclose(x[..., 0], x[..., 1], atol=1e-3)
        np.testing.assert_allclose(x[..., 0], x[..., 2], atol=1e-3)
    assert np.mean(np.abs(_chroma(image) - _chroma(content))) < 3.0


def test_luminance_matches_the_style_luminance_to_the_content(stylizer: Stylizer) -> None:
    content = tiny_image(32, 32, seed=25)
    # A dark, low-contrast style: its own luminance statistics are far from the content's.
    style = (tiny_image(32, 32, seed=26) // 4).astype(np.uint8)
    options = FAST.replace(preserve_colors="luminance")
    matched = colors.match_luminance(style, colors.to_luminance(content))
    # The style target is the matched luminance: that image has (almost) no style loss...
    assert stylizer.evaluate(content, [style], matched, options).style < 1e-3 * (
        stylizer.evaluate(content, [style], colors.to_luminance(style), options).style
    )
    # ... and in colour the target would have been the style itself.
    assert stylizer.evaluate(content, [style], style, FAST).style < 1e-3 * (
        stylizer.evaluate(content, [style], matched, FAST).style
    )


def test_the_two_methods_and_off_give_different_pictures(stylizer: Stylizer) -> None:
    content, style = tiny_image(32, 32, seed=27), tiny_image(32, 32, seed=28)
    results = {
        mode: stylizer.stylize(content, [style], FAST.replace(preserve_colors=mode)).image
        for mode in ("off", "swap", "luminance")
    }
    assert np.mean(np.abs(_chroma(results["off"]) - _chroma(content))) > 3.0
    assert not np.array_equal(results["swap"], results["luminance"])


def test_previews_show_the_recoloured_picture(stylizer: Stylizer) -> None:
    content = tiny_image(32, 32, seed=29)
    previews = []
    stylizer.stylize(
        content,
        [tiny_image(32, 32, seed=30)],
        FAST.replace(preserve_colors="luminance", preview_every=1),
        on_progress=lambda p: previews.append(p.preview),
    )
    assert previews and all(p is not None for p in previews)
    for preview in previews:
        assert preview is not None
        assert np.mean(np.abs(_chroma(preview) - _chroma(content))) < 3.0
