"""Fresh-process measurements of `bench/shape_bench.py`: (c) RSS growth over many shapes,
(d) oneDNN on and off, (e) the C heap against the BFC pool. Each probe runs the script again
(`--rss-probe`, `--speed-probe`) in a child process with the environment it is about."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.shapes.measure import SIZE, aspect_ratios, pictures
from bench.shapes.old_engine import OldEngine
from bench.support.rss import current_rss
from styletx import heap, images
from styletx.engine import Stylizer
from styletx.geometry import DEFAULT_SHAPE_STEP
from styletx.options import StyleOptions

#: The script each probe runs in a fresh process.
SCRIPT = Path(__file__).resolve().parents[1] / "shape_bench.py"


def _rss_mib() -> float:
    return current_rss() / 2**20


def rss_probe(kind: str, count: int, weights: str | None) -> None:
    """In a fresh process: RSS after the first job and after `count` distinct aspect ratios.

    The first job is the largest (a square output): later shapes then need no more memory for
    their activations than the first did, so what RSS gains after it is what each new shape
    leaves behind (traces, caches), not bigger images.
    """
    stylizer = Stylizer(weights, shape_step=1 if kind == "unpadded" else DEFAULT_SHAPE_STEP)
    content, style = pictures()
    options = StyleOptions(size=SIZE, max_evaluations=2, seed=0)
    old = OldEngine(stylizer._vgg, options) if kind == "old" else None
    if old is None:
        stylizer.warmup()  # as the server does before its first job
    rss = []
    for i, shape in enumerate([(SIZE, SIZE), *aspect_ratios(count - 1)]):
        picture = images.resize_to(content, *shape)
        if old is not None:
            old.job(picture, style, options.max_evaluations)
        else:
            stylizer.stylize(picture, [style], options)
        if i == 0:
            rss.append(_rss_mib())
        if (i + 1) % 10 == 0:  # the curve, for a look at where it levels off
            print(f"after {i + 1} shapes: {_rss_mib():.0f} MiB", file=sys.stderr, flush=True)
    rss.append(_rss_mib())
    print(json.dumps({"first": rss[0], "last": rss[-1]}))


def _env(onednn: bool | None, system_allocator: bool | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn else "0"
    if system_allocator is not None:
        env[heap.SYSTEM_ALLOCATOR_ENV] = "1" if system_allocator else "0"
    return env


def rss_growth(
    kind: str,
    count: int,
    weights: str | None,
    onednn: bool | None = None,
    system_allocator: bool | None = None,
) -> dict[str, float]:
    """(c) Run `rss_probe` in a fresh process and return its figures."""
    cmd = [sys.executable, str(SCRIPT), "--rss-probe", kind, "--shapes", str(count)]
    if weights:
        cmd += ["--weights", weights]
    env = _env(onednn, system_allocator)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    figures["growth"] = figures["last"] - figures["first"]
    return figures


def speed_probe(evaluations: int, weights: str | None, size: int = SIZE) -> None:
    """In a fresh process: median wall seconds per evaluation of a warm `size` px job, and the
    process's CPU seconds over the job per evaluation."""
    stylizer = Stylizer(weights)
    content, style = pictures()
    # At least a few L-BFGS iterations, each of which reports its evaluations' durations.
    options = StyleOptions(size=size, max_evaluations=max(8, evaluations), seed=0)
    stylizer.stylize(content, [style], options.replace(max_evaluations=2))
    seconds: list[float] = []
    cpu_started = time.process_time()
    result = stylizer.stylize(
        content, [style], options, on_progress=lambda p: seconds.extend(p.evaluation_seconds)
    )
    cpu = (time.process_time() - cpu_started) / result.evaluations
    print(json.dumps({"median": statistics.median(seconds), "cpu": cpu}))


def _speed_runs(
    envs: dict[str, dict[str, str]],
    evaluations: int,
    repeats: int,
    weights: str | None,
    size: int,
) -> dict[str, dict[str, float]]:
    """`speed_probe` in fresh processes, one per environment in turn, `repeats` rounds: the
    median of the runs' wall seconds per evaluation and of their CPU seconds per evaluation."""
    cmd = [sys.executable, str(SCRIPT), "--speed-probe", "--evaluations", str(evaluations)]
    cmd += ["--speed-size", str(size)]
    if weights:
        cmd += ["--weights", weights]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in envs}
    for _ in range(repeats):
        for name, env in envs.items():
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    return {
        name: {
            "seconds": statistics.median(r["median"] for r in rows),
            "cpu_seconds": statistics.median(r["cpu"] for r in rows),
            "runs": len(rows),
        }
        for name, rows in runs.items()
    }


def onednn_cost(
    evaluations: int, repeats: int, shapes: int, weights: str | None, size: int = SIZE
) -> dict[str, dict[str, float]]:
    """(d) Per-evaluation seconds (interleaved fresh processes) and RSS growth, oneDNN on/off."""
    envs = {"on": _env(True), "off": _env(False)}
    speed = _speed_runs(envs, evaluations, repeats, weights, size)
    for name, onednn in (("on", True), ("off", False)):
        speed[name]["rss_growth"] = rss_growth("new", shapes, weights, onednn)["growth"]
    return speed


def allocator_cost(
    evaluations: int, repeats: int, shapes: int, weights: str | None, size: int = SIZE
) -> dict[str, dict[str, float]]:
    """(e) Per-evaluation seconds (interleaved fresh processes) and RSS growth, TensorFlow's CPU
    tensors from the C heap (the engine's default) or from its oneDNN BFC pool."""
    envs = {"c_heap": _env(None, True), "bfc_pool": _env(None, False)}
    speed = _speed_runs(envs, evaluations, repeats, weights, size)
    for name, system in (("c_heap", True), ("bfc_pool", False)):
        speed[name]["rss_growth"] = rss_growth("new", shapes, weights, None, system)["growth"]
    return speed
