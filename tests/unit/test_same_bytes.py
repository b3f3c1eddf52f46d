"""Same request, same bytes, whatever ran before: the first job at a shape and
every later one compute with the same arithmetic (the shape the network runs depends on the image
and --shape-step alone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from styletx.engine import Stylizer
from styletx.options import StyleOptions
from tests.support.weights import tiny_image


@pytest.mark.parametrize("shape_step", [16, 1])
def test_first_and_later_jobs_at_a_new_non_square_shape_give_the_same_bytes(
    seeded_weights: Path, shape_step: int
) -> None:
    engine = Stylizer(seeded_weights, shape_step=shape_step)
    engine.warmup(size=32)
    # 120x80 content at size 72 -> a 72x48 output: never seen, not on the 16 px step.
    content, style = tiny_image(80, 120, seed=11), tiny_image(80, 96, seed=12)
    options = StyleOptions(size=72, max_evaluations=25, seed=7)
    runs = [engine.stylize(content, [style], options).image for _ in range(3)]
    assert runs[0].shape == (48, 72, 3)
    assert np.array_equal(runs[0], runs[1]) and np.array_equal(runs[1], runs[2])
    # And a fresh engine (a restarted server) gives them too.
    again = Stylizer(seeded_weights, shape_step=shape_step).stylize(content, [style], options)
    assert np.array_equal(again.image, runs[0])
