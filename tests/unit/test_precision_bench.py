"""bench/precision_bench.py's pure parts: the FLOPs count and the guard's cases (no timing)."""

from __future__ import annotations

import pytest

from bench.precision.cases import PAIRS, VARIANTS, auto_choice, case_options
from bench.precision.compute import evaluation_flops
from styletx.options import StyleOptions


def _conv(cin: int, cout: int, side: int) -> int:
    return 2 * 9 * cin * cout * side * side


def test_one_evaluation_counts_the_convolutions_forward_and_back() -> None:
    only_first = StyleOptions(content_layer="block1_conv1", style_layers=("block1_conv1",))
    assert evaluation_flops((32, 32), only_first) == 2 * _conv(3, 64, 32)
    # The default layers reach block5_conv3: every convolution, each block at half the side
    # (odd sides floor, as 2x2 pooling does).
    forward = (
        _conv(3, 64, 65)
        + _conv(64, 64, 65)
        + _conv(64, 128, 32)
        + _conv(128, 128, 32)
        + _conv(128, 256, 16)
        + 2 * _conv(256, 256, 16)
        + _conv(256, 512, 8)
        + 2 * _conv(512, 512, 8)
        + 3 * _conv(512, 512, 4)
    )
    assert evaluation_flops((65, 65), StyleOptions()) == 2 * forward
    # 260 px: about 82 GFLOP per evaluation.
    assert evaluation_flops((260, 260), StyleOptions()) / 1e9 == pytest.approx(81.7, abs=0.1)


def test_the_guard_cases_cover_what_the_issue_asks_and_use_existing_pictures() -> None:
    assert len(PAIRS) >= 3 and all(p.exists() for pair in PAIRS.values() for p in pair)
    modes = {case_options("fast", v, 260, None).preserve_colors for v in VARIANTS}
    assert {"swap", "luminance"} <= modes
    assert any(case_options("high", v, 260, None).style_scale != 1.0 for v in VARIANTS)
    assert case_options("high", "plain", 260, 100).max_evaluations == 100
    assert case_options("fast", "plain", 260, 100).max_evaluations == 40  # a cap, not a budget
    assert auto_choice(case_options("reference", "plain", 260, None)) == "float32"
    assert auto_choice(case_options("fast", "swap", 260, None)) == "mixed_bfloat16"
