"""The real ImageNet VGG16 weights (fetched by `make weights`) on ~96 px sample images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from styletx import images, vgg
from styletx.engine import Stylizer
from styletx.options import StyleOptions
from styletx.result import Progress

pytestmark = pytest.mark.real_weights
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def real() -> Stylizer:
    # No skip: CI fetches the weights first (`make test` runs `make weights`).
    return Stylizer()


def test_result_sits_between_content_and_style(real: Stylizer) -> None:
    content = images.decode_image(EXAMPLES / "content_chelsea.png")
    style = images.decode_image(EXAMPLES / "style_starry_night.jpg")
    options = StyleOptions(size=96, max_evaluations=60, seed=0)
    h, w = real.output_size(*content.shape[:2], options.size)
    start_x = np.random.default_rng(0).uniform(0, 255, (h, w, 3)) - 128.0  # the engine's init
    start = real.evaluate(content, [style], vgg.deprocess(start_x), options)

    events: list[Progress] = []
    result = real.stylize(content, [style], options, on_progress=events.append)
    assert result.evaluations == 60
    assert result.losses.style < 0.2 * start.style

    content_own = real.evaluate(content, [style], content, options)
    style_own = real.evaluate(content, [style], style, options)
    final = real.evaluate(content, [style], result.image, options)
    # More like the painting than the photo is, and more like the photo than the painting is.
    assert final.style < content_own.style
    assert final.content < style_own.content


def test_the_resolved_weights_are_the_pinned_imagenet_tensors(real: Stylizer) -> None:
    """What `make weights` fetched (either source) matches the digest the images are checked
    against, so a wrong pin fails here before it fails an image build."""
    from styletx import weights

    weights.check_imagenet(real.weights.path)
