"""Shape benchmark: the engine's shape-polymorphic step versus the old per-shape tf.function.

Side by side in one run, real weights, the Chelsea photo and Starry Night:
(a) seconds per loss-and-gradient evaluation at one fixed 260 px shape (warm, interleaved
    repeats, median): the old way (`OldEngine`, a faithful copy of the engine's former step:
    `tf.function` traced per shape, float32 sums) versus the new `Stylizer` step: exact
    (`shape_step` 1, the fixed-shape case) and as the server runs it (`shape_step` 16: the
    photo's 173 x 260 runs padded to 176 x 260, masked, on every job, so that a
    request gives the same bytes whatever ran before). Goal: exact within 5 % of the old; padded
    over exact is what the same-bytes guarantee costs at this shape.
(b) time of the first job (targets + a few evaluations) at a never-seen aspect ratio minus the
    same job run a third time, now warm: the extra cost of a new shape. Goal: <= 0.3 s at 260 px
    on CPU. Also shown: what the second job costs extra (nothing should: every job at a shape
    runs it the same way).
(c) resident memory (VmRSS) of a fresh process after jobs at 50 distinct aspect ratios minus
    after the first (the largest, so the others need no more activation memory): the old engine,
    the new one as the server runs it (warmed up at start; `shape_step` 16) and the new one
    without padding (`shape_step` 1). Goal: within 100 MiB.
(d) what (c) costs: the new engine in fresh processes with TensorFlow's oneDNN (MKL) kernels on
    (the default) and off (`TF_ENABLE_ONEDNN_OPTS=0`): seconds per evaluation (processes
    interleaved) and the RSS growth of (c). oneDNN keeps a per-thread cache of primitives for
    every shape it has seen, which is where the growth of (c) comes from.
(e) TensorFlow's CPU tensors from the C heap (`TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1`, the engine's
    default, `styletx.heap`) versus its oneDNN BFC pool (`=0`): seconds per
    evaluation (fresh processes, interleaved) and the RSS growth of (c).

Usage: python bench/shape_bench.py [--weights PATH] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from styletx import heap, images, vgg  # noqa: E402
from styletx.engine import Stylizer  # noqa: E402
from styletx.geometry import DEFAULT_SHAPE_STEP  # noqa: E402
from styletx.objective import make_objective  # noqa: E402
from styletx.optimize import Vector, minimize  # noqa: E402
from styletx.options import StyleOptions  # noqa: E402
from styletx.space import Space  # noqa: E402
from styletx.targets import style_targets  # noqa: E402
from tests.support.rss import current_rss  # noqa: E402

CONTENT = ROOT / "examples" / "content_chelsea.png"
STYLE = ROOT / "examples" / "style_starry_night.jpg"
SIZE = 260
Objective = Callable[[Vector], tuple[tuple[float, ...], Vector]]


# --- the old way: the engine's former per-shape step (commit 3eb1b92), kept verbatim ----------


def _old_gram_matrix(features: tf.Tensor) -> tf.Tensor:
    channels = tf.shape(features)[-1]
    flat = tf.reshape(features, (-1, channels))
    return tf.matmul(flat, flat, transpose_a=True)


def _old_content_loss(features: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.square(features - target))


def _old_style_layer_loss(gram: tf.Tensor, target_gram: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.square(target_gram - gram)) / (4.0 * 9.0 * tf.square(pixels))


def _old_total_variation_loss(image: tf.Tensor, power: tf.Tensor) -> tf.Tensor:
    corner = image[:, :-1, :-1, :]
    dy = tf.square(corner - image[:, 1:, :-1, :])
    dx = tf.square(corner - image[:, :-1, 1:, :])
    return tf.reduce_sum(tf.pow(dx + dy, power))


class _OldLayerSet:
    """Feature extractor and compiled loss/gradient, traced once per image shape."""

    def __init__(self, vgg16: Any, content_layer: str, style_layers: tuple[str, ...]) -> None:
        self.layers = (content_layer, *style_layers)
        self.extractor = vgg.feature_extractor(vgg16, self.layers)
        self.features = tf.function(self._features, reduce_retracing=False)
        self.loss_and_grad = tf.function(self._loss_and_grad, reduce_retracing=False)

    def _features(self, image: tf.Tensor) -> list[tf.Tensor]:
        return [f[0] for f in self.extractor(image[tf.newaxis], training=False)]

    def _loss_and_grad(
        self,
        x: tf.Tensor,
        content_target: tf.Tensor,
        target_grams: tuple[tf.Tensor, ...],
        weights: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        pixels = tf.cast(tf.shape(x)[0] * tf.shape(x)[1], tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(x)
            feats = self._features(x)
            content = weights[0] * _old_content_loss(feats[0], content_target)
            style = tf.add_n(
                [
                    _old_style_layer_loss(_old_gram_matrix(f), g, pixels)
                    for f, g in zip(feats[1:], target_grams, strict=True)
                ]
            )
            style = weights[1] * style
            tv = weights[2] * _old_total_variation_loss(x[tf.newaxis], weights[3])
            total = content + style + tv
        grad = tape.gradient(total, x)
        return total, content, style, tv, grad


@dataclass(frozen=True)
class _OldTargets:
    content: tf.Tensor
    grams: tuple[tf.Tensor, ...]


class OldEngine:
    """The old engine's compute path for one job: targets (style at the content's shape, as it
    was), then one L-BFGS run over the per-shape objective."""

    def __init__(self, vgg16: Any, options: StyleOptions) -> None:
        self.options = options
        self.layer_set = _OldLayerSet(vgg16, options.content_layer, options.style_layers)
        self.weights = tf.constant(
            [
                options.content_weight,
                options.style_weight / len(options.style_layers),
                options.tv_weight,
                options.tv_power,
            ],
            dtype=tf.float32,
        )

    def targets(self, base: np.ndarray, style: np.ndarray) -> _OldTargets:
        h, w = base.shape[:2]
        content = self.layer_set.features(tf.constant(vgg.preprocess(base)))[0]
        feats = self.layer_set.features(tf.constant(vgg.preprocess(images.resize_to(style, h, w))))
        return _OldTargets(content, tuple(_old_gram_matrix(f) for f in feats[1:]))

    def objective(self, targets: _OldTargets, h: int, w: int) -> Objective:
        def objective(x: Vector) -> tuple[tuple[float, ...], Vector]:
            image = tf.constant(x.reshape(h, w, 3), dtype=tf.float32)
            total, content, style, tv, grad = self.layer_set.loss_and_grad(
                image, targets.content, targets.grams, self.weights
            )
            terms = (float(total), float(content), float(style), float(tv))
            return terms, grad.numpy().astype(np.float64).ravel()

        return objective

    def job(self, content: np.ndarray, style: np.ndarray, evaluations: int) -> None:
        h, w = Stylizer.output_size(content.shape[0], content.shape[1], self.options.size)
        base = images.resize_to(content, h, w)
        objective = self.objective(self.targets(base, style), h, w)
        x0 = np.random.default_rng(0).uniform(0, 255, (h, w, 3)) - 128.0
        minimize(objective, x0.ravel(), max_evaluations=evaluations)


# --- measurements ---------------------------------------------------------------------------


def _pictures() -> tuple[np.ndarray, np.ndarray]:
    return images.decode_image(CONTENT), images.decode_image(STYLE)


def aspect_ratios(count: int, offset: int = 0) -> list[tuple[int, int]]:
    """`count` distinct content shapes giving distinct outputs at 260 px, landscape and portrait
    in turn (with offset >= 25, none is the warm shape: the Chelsea photo's 173 x 260)."""
    shapes = []
    for i in range(offset, offset + count):
        short = 131 + 2 * (i // 2)  # 131, 133, ...: never 195
        shapes.append((short, SIZE) if i % 2 == 0 else (SIZE, short))
    return shapes


def _new_objective(stylizer: Stylizer, options: StyleOptions, base: np.ndarray, style: Any) -> Any:
    step = stylizer.step(options)
    targets = style_targets(step, base, [style], [1.0], options)
    return make_objective(step, targets, Space(base.shape[0], base.shape[1], grey=False))


def _timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of `work()`. On a shared machine
    the CPU time is the steadier figure: waiting for a core does not count."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def per_evaluation(
    stylizer: Stylizer, exact: Stylizer, old: OldEngine, evaluations: int, repeats: int
) -> dict[str, Any]:
    """(a) Median seconds per evaluation at one fixed 260 px shape, warm, interleaved."""
    content, style = _pictures()
    h, w = Stylizer.output_size(content.shape[0], content.shape[1], SIZE)
    base = images.resize_to(content, h, w)
    x = np.random.default_rng(0).uniform(0, 255, (h, w, 3)).ravel() - 128.0
    objectives: dict[str, Objective] = {
        # The old engine resized the style to the output's shape; that does not change the
        # cost of an evaluation, which never touches the style image.
        "old": old.objective(old.targets(base, style), h, w),
        "padded": _new_objective(stylizer, old.options, base, style),
        "exact": _new_objective(exact, old.options, base, style),
    }
    shapes = {
        "padded": stylizer.step(old.options).run_shape(h, w),
        "exact": exact.step(old.options).run_shape(h, w),
    }
    assert shapes == {"padded": (176, 260), "exact": (h, w)}, shapes
    for objective in objectives.values():
        objective(x)  # trace / warm up outside the timing
    timed: dict[str, list[tuple[float, float]]] = {name: [] for name in objectives}
    order = list(objectives.items())
    for i in range(repeats):
        for name, objective in order[i % len(order) :] + order[: i % len(order)]:

            def run(f: Objective = objective) -> None:
                for _ in range(evaluations):
                    f(x)

            wall, cpu = _timed(run)
            timed[name].append((wall / evaluations, cpu / evaluations))
    out: dict[str, Any] = {"shape": [h, w], "padded_shape": list(shapes["padded"])}
    for k, label in enumerate(("wall", "cpu")):
        row = {name: statistics.median(t[k] for t in runs) for name, runs in timed.items()}
        row["exact_ratio"] = row["exact"] / row["old"]
        row["padded_ratio"] = row["padded"] / row["old"]
        row["padded_over_exact"] = row["padded"] / row["exact"]
        out[label] = row
    return out


def new_shape_cost(
    stylizer: Stylizer, old: OldEngine, shapes: list[tuple[int, int]], evaluations: int
) -> dict[str, Any]:
    """(b) First job at each never-seen shape minus the same job again, now warm (medians).

    Both runs do the same work at the same shape, so the difference is what a new shape costs
    (tracing, kernel set-up), not what bigger or smaller images cost.
    """
    content, style = _pictures()
    options = old.options.replace(max_evaluations=evaluations, seed=0)
    jobs: dict[str, Callable[[np.ndarray], object]] = {
        "old": lambda picture: old.job(picture, style, evaluations),
        "new": lambda picture: stylizer.stylize(picture, [style], options),
    }
    out: dict[str, Any] = {}
    for name, job in jobs.items():
        first, second, warm = [], [], []
        for shape in shapes:
            picture = images.resize_to(content, *shape)

            def run(p: np.ndarray = picture, j: Callable[[np.ndarray], object] = job) -> None:
                j(p)

            first.append(_timed(run))
            second.append(_timed(run))
            warm.append(_timed(run))
        row: dict[str, float] = {}
        for k, label in enumerate(("wall", "cpu")):
            extras = [f[k] - a[k] for f, a in zip(first, warm, strict=True)]
            row[f"{label}_warm_job"] = statistics.median(a[k] for a in warm)
            row[f"{label}_extra_median"] = statistics.median(extras)
            row[f"{label}_extra_max"] = max(extras)
            row[f"{label}_second_extra_median"] = statistics.median(
                s[k] - a[k] for s, a in zip(second, warm, strict=True)
            )
        out[name] = row
    return out


def _rss_mib() -> float:
    return current_rss() / 2**20


def rss_probe(kind: str, count: int, weights: str | None) -> None:
    """In a fresh process: RSS after the first job and after `count` distinct aspect ratios.

    The first job is the largest (a square output): later shapes then need no more memory for
    their activations than the first did, so what RSS gains after it is what each new shape
    leaves behind (traces, caches), not bigger images.
    """
    stylizer = Stylizer(weights, shape_step=1 if kind == "unpadded" else DEFAULT_SHAPE_STEP)
    content, style = _pictures()
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
    cmd = [sys.executable, __file__, "--rss-probe", kind, "--shapes", str(count)]
    if weights:
        cmd += ["--weights", weights]
    env = _env(onednn, system_allocator)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    figures["growth"] = figures["last"] - figures["first"]
    return figures


def speed_probe(evaluations: int, weights: str | None) -> None:
    """In a fresh process: median seconds per evaluation of a warm 260 px job."""
    stylizer = Stylizer(weights)
    content, style = _pictures()
    # At least a few L-BFGS iterations, each of which reports its evaluations' durations.
    options = StyleOptions(size=SIZE, max_evaluations=max(8, evaluations), seed=0)
    stylizer.stylize(content, [style], options.replace(max_evaluations=2))
    seconds: list[float] = []
    stylizer.stylize(
        content, [style], options, on_progress=lambda p: seconds.extend(p.evaluation_seconds)
    )
    print(json.dumps({"median": statistics.median(seconds)}))


def onednn_cost(
    evaluations: int, repeats: int, shapes: int, weights: str | None
) -> dict[str, dict[str, float]]:
    """(d) Per-evaluation seconds (interleaved fresh processes) and RSS growth, oneDNN on/off."""
    cmd = [sys.executable, __file__, "--speed-probe", "--evaluations", str(evaluations)]
    if weights:
        cmd += ["--weights", weights]
    runs: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for onednn in (True, False):
            out = subprocess.run(
                cmd, check=True, capture_output=True, text=True, env=_env(onednn)
            ).stdout
            runs[onednn].append(json.loads(out.strip().splitlines()[-1])["median"])
    return {
        ("on" if onednn else "off"): {
            "seconds": statistics.median(runs[onednn]),
            "rss_growth": rss_growth("new", shapes, weights, onednn)["growth"],
        }
        for onednn in (True, False)
    }


def allocator_cost(
    evaluations: int, repeats: int, shapes: int, weights: str | None
) -> dict[str, dict[str, float]]:
    """(e) Per-evaluation seconds (interleaved fresh processes) and RSS growth, TensorFlow's CPU
    tensors from the C heap (the engine's default) or from its oneDNN BFC pool."""
    cmd = [sys.executable, __file__, "--speed-probe", "--evaluations", str(evaluations)]
    if weights:
        cmd += ["--weights", weights]
    runs: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for system in (True, False):
            env = _env(None, system)
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            runs[system].append(json.loads(out.strip().splitlines()[-1])["median"])
    return {
        ("c_heap" if system else "bfc_pool"): {
            "seconds": statistics.median(runs[system]),
            "rss_growth": rss_growth("new", shapes, weights, None, system)["growth"],
        }
        for system in (True, False)
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", help="VGG16 weights (default: resolved like the engine)")
    parser.add_argument("--quick", action="store_true", help="smoke run: few shapes and repeats")
    parser.add_argument("--evaluations", type=int, default=None, help="per timing run (a)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved runs (a)")
    parser.add_argument("--shapes", type=int, default=None, help="new shapes (b) / RSS (c)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--parts", default="abcde", help="which measurements (default abcde)")
    parser.add_argument("--rss-probe", choices=["old", "new", "unpadded"], help=argparse.SUPPRESS)
    parser.add_argument("--speed-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_probe:
        speed_probe(args.evaluations or 20, args.weights)
        return 0
    if args.rss_probe:
        rss_probe(args.rss_probe, args.shapes or 50, args.weights)
        return 0
    evaluations = args.evaluations or (3 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 5)
    new_shapes = args.shapes or (2 if args.quick else 10)
    rss_shapes = args.shapes or (4 if args.quick else 50)

    stylizer = Stylizer(args.weights)
    stylizer.warmup()
    exact = Stylizer(args.weights, shape_step=1)
    old = OldEngine(stylizer._vgg, StyleOptions(size=SIZE))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    print(f"weights: {stylizer.weights.path} ({stylizer.weights.source})")
    print(f"backend: {stylizer.backend} on {stylizer.device}, tensorflow {tf.__version__}")
    report: dict[str, Any] = {}

    if "a" in args.parts:
        _part_a(report, stylizer, exact, old, evaluations, repeats)
    if "b" in args.parts:
        _part_b(report, stylizer, old, new_shapes)
    if "c" in args.parts:
        _part_c(report, rss_shapes, args.weights)
    if "d" in args.parts:
        _part_d(report, evaluations, repeats, rss_shapes, args.weights)
    if "e" in args.parts:
        _part_e(report, evaluations, repeats, rss_shapes, args.weights)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _part_a(
    report: dict[str, Any],
    stylizer: Stylizer,
    exact: Stylizer,
    old: OldEngine,
    evaluations: int,
    repeats: int,
) -> None:
    a = per_evaluation(stylizer, exact, old, evaluations, repeats)
    report["per_evaluation"] = a
    (h, w), (ph, pw) = a["shape"], a["padded_shape"]
    print(f"\n(a) seconds per evaluation at {h}x{w} (median of {repeats})")
    print(
        f"{'':>5} {'old (per-shape)':>16} {'new exact':>10} {'exact/old':>10} "
        f"{f'new padded ({ph}x{pw})':>21} {'padded/old':>11} {'padded/exact':>13}"
    )
    for label in ("wall", "cpu"):
        row = a[label]
        print(
            f"{label:>5} {row['old']:>16.4f} {row['exact']:>10.4f} {row['exact_ratio']:>10.3f} "
            f"{row['padded']:>21.4f} {row['padded_ratio']:>11.3f} "
            f"{row['padded_over_exact']:>13.3f}"
        )
    print("goal: new exact / old <= 1.05; padded / exact: what the same bytes cost here")


def _part_b(report: dict[str, Any], stylizer: Stylizer, old: OldEngine, new_shapes: int) -> None:
    b = new_shape_cost(stylizer, old, aspect_ratios(new_shapes, offset=100), 3)
    report["new_shape"] = b
    print(f"\n(b) extra seconds of a job at a new aspect ratio ({new_shapes} shapes, 3 evals)")
    print(
        f"{'':>10} {'warm job s':>11} {'extra median':>13} {'extra max':>10} {'2nd job extra':>14}"
    )
    for name in ("old", "new"):
        for label in ("wall", "cpu"):
            row = b[name]
            print(
                f"{name + ' ' + label:>10} {row[label + '_warm_job']:>11.3f} "
                f"{row[label + '_extra_median']:>13.3f} {row[label + '_extra_max']:>10.3f} "
                f"{row[label + '_second_extra_median']:>14.3f}"
            )
    print("goal: new extra (the first job's) <= 0.3 s")


def _part_c(report: dict[str, Any], rss_shapes: int, weights: str | None) -> None:
    print(f"\n(c) RSS (MiB) of a fresh process: after 1 job, after {rss_shapes} aspect ratios")
    print(f"{'':>8} {'first':>8} {'last':>8} {'growth':>8}")
    report["rss_mib"] = {}
    for name in ("old", "new", "unpadded"):
        c = rss_growth(name, rss_shapes, weights)
        report["rss_mib"][name] = c
        print(f"{name:>8} {c['first']:>8.0f} {c['last']:>8.0f} {c['growth']:>8.0f}")
    print("goal: new growth <= 100 MiB")


def _part_d(
    report: dict[str, Any], evaluations: int, repeats: int, rss_shapes: int, weights: str | None
) -> None:
    d = onednn_cost(evaluations, max(1, repeats // 2), rss_shapes, weights)
    report["onednn"] = d
    print("\n(d) the new engine with TensorFlow's oneDNN kernels on (default) and off")
    print(f"{'oneDNN':>6} {'s/eval':>8} {'RSS growth MiB':>15}")
    for name, row in d.items():
        print(f"{name:>6} {row['seconds']:>8.4f} {row['rss_growth']:>15.0f}")
    print(f"off/on seconds: {d['off']['seconds'] / d['on']['seconds']:.2f}")


def _part_e(
    report: dict[str, Any], evaluations: int, repeats: int, rss_shapes: int, weights: str | None
) -> None:
    e = allocator_cost(evaluations, max(1, repeats // 2), rss_shapes, weights)
    report["allocator"] = e
    print("\n(e) TensorFlow's CPU tensors from the C heap (default) or its oneDNN BFC pool")
    print(f"{'allocator':>9} {'s/eval':>8} {'RSS growth MiB':>15}")
    for name, row in e.items():
        print(f"{name:>9} {row['seconds']:>8.4f} {row['rss_growth']:>15.0f}")
    print(f"C heap / BFC pool seconds: {e['c_heap']['seconds'] / e['bfc_pool']['seconds']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
