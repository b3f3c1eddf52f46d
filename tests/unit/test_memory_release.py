"""A big job's memory goes back to the system after it.

TensorFlow's oneDNN build keeps CPU tensors in a BFC pool that never shrinks; the engine has
TensorFlow use the C heap instead (`styletx.heap.prefer_system_allocator`) and trims it after
every job. Measured in a fresh process, where nothing ran before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
from pathlib import Path
from styletx import StyleOptions
from styletx.engine import Stylizer
from tests.support.rss import current_rss, peak_rss
from tests.support.weights import tiny_image

engine = Stylizer(Path(sys.argv[1]))
small = StyleOptions(size=64, max_evaluations=2, seed=0)
engine.stylize(tiny_image(64, 48, 1), [tiny_image(64, 64, 2)], small)
before = current_rss()
big = StyleOptions(size=384, max_evaluations=1, seed=0)
engine.stylize(tiny_image(384, 384, 1), [tiny_image(384, 384, 2)], big)
engine.stylize(tiny_image(64, 48, 1), [tiny_image(64, 64, 2)], small)
print(json.dumps({"before": before, "peak": peak_rss(), "after": current_rss()}))
"""


@pytest.mark.slow
def test_resident_memory_returns_after_a_big_job(seeded_weights: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(seeded_weights)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    grew = figures["peak"] - figures["before"]
    kept = figures["after"] - figures["before"]
    mib = 1024 * 1024
    assert grew > 200 * mib, figures  # the big job did need memory (about 550 MiB)
    # Measured: 14 MiB kept (oneDNN's kernels for the new shape); 453 MiB with the BFC pool.
    assert kept < 0.25 * grew, figures
