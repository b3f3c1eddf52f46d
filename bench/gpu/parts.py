"""The parts of `bench/gpu_bench.py`, each run in a process of its own (the Keras backend and
JAX's peak-memory counter are per process): they print RESULT records for the parent.
The framework is imported inside each part, never by the parent."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.support.rss import peak_rss

ROOT = Path(__file__).resolve().parents[2]
CONTENT = ROOT / "examples" / "content_chelsea.png"
STYLE = ROOT / "examples" / "style_starry_night.jpg"
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
MIB = 1024**2
#: Batching window of the batched run (the engine's GPU default; on a CPU it is off by default).
BATCH_WINDOW = 0.010


def emit(record: dict[str, Any]) -> None:
    """One result line on stdout (the parent reads these), flushed at once."""
    print("RESULT " + json.dumps(record), flush=True)


def _pictures(size: int) -> tuple[np.ndarray, np.ndarray]:
    from styletx import images

    content = images.resize_to(images.decode_image(CONTENT), size, size)
    style = images.resize_to(images.decode_image(STYLE), size, size)
    return content, style


def _stylizer(args: argparse.Namespace, precision: str, device: str | None, window: float) -> Any:
    from styletx.engine import Stylizer

    return Stylizer(args.weights, device=device, precision=precision, batch_window=window)


def part_precision(args: argparse.Namespace, precision: str, device: str | None) -> None:
    """Sizes in increasing order: the process-wide peak counters then belong to each size."""
    from styletx.options import StyleOptions

    stylizer = _stylizer(args, precision, device, 0.0)
    accelerated = not stylizer.device.startswith("CPU")
    baseline = peak_rss()
    evaluations = args.cpu_evaluations if args.cpu_rows else args.evaluations
    sizes = args.cpu_sizes if args.cpu_rows else args.sizes
    previous: tuple[int, float] | None = None
    for size in sizes:
        if previous is not None:
            # Skip a size predicted (pixels x previous pace) to run past the deadline.
            pixels, seconds = previous
            if time.time() + seconds * (size * size) / pixels * 1.5 > args.deadline:
                emit({"part": "precision", "precision": precision, "size": size, "skipped": 1})
                continue
        content, style = _pictures(size)
        began = time.time()
        # `high`'s options (its start, its bounds), the budget set here: what auto resolves
        # for the service's quality jobs (the reference preset stays float32 under auto).
        options = StyleOptions.from_preset("high", size=size, max_evaluations=evaluations, seed=0)
        # Compiles every executable of this shape (JAX) before the timed job.
        stylizer.stylize(content, [style], options.replace(max_evaluations=2))
        durations: list[float] = []

        def record(progress: Any, into: list[float] = durations) -> None:
            into.extend(progress.evaluation_seconds)

        result = stylizer.stylize(content, [style], options, on_progress=record)
        peak = stylizer.peak_memory() if accelerated else peak_rss() - baseline
        emit(
            {
                "part": "precision",
                "backend": stylizer.backend,
                "device": stylizer.device,
                "precision": precision,
                "resolved": result.precision,
                "size": size,
                "pixels": size * size,
                "evaluations": result.evaluations,
                "seconds_per_evaluation": float(np.mean(durations)) if durations else None,
                "job_seconds": result.optimize_seconds,
                "peak_bytes": peak,
                "peak_kind": "device" if accelerated else "rss growth",
                "final_loss": result.losses.total,
            }
        )
        previous = (size * size, time.time() - began)


def part_batching(args: argparse.Namespace, device: str | None) -> None:
    """`batch_jobs` jobs of one shape: one after another, then all at once (batched)."""
    from styletx.options import StyleOptions

    content, style = _pictures(args.batch_size)
    options = [
        StyleOptions(size=args.batch_size, max_evaluations=args.batch_evaluations, seed=seed)
        for seed in range(args.batch_jobs)
    ]
    warm = [o.replace(max_evaluations=3) for o in options]
    sequential = _stylizer(args, "float32", device, 0.0)
    batched = _stylizer(args, "float32", device, BATCH_WINDOW)

    def one_at_a_time(opts: Sequence[Any]) -> float:
        began = time.perf_counter()
        for o in opts:
            sequential.stylize(content, [style], o)
        return time.perf_counter() - began

    def together(opts: Sequence[Any]) -> float:
        errors: list[BaseException] = []

        def run(o: Any) -> None:
            try:
                batched.stylize(content, [style], o)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(o,)) for o in opts]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return time.perf_counter() - began

    one_at_a_time(warm[:1])
    together(warm)  # compiles the batch shapes
    before = batched.batch_stats
    seconds = {"sequential": one_at_a_time(options), "batched": together(options)}
    after = batched.batch_stats
    rows = after.evaluations - before.evaluations
    for mode, elapsed in seconds.items():
        emit(
            {
                "part": "batching",
                "backend": batched.backend,
                "device": batched.device,
                "mode": mode,
                "jobs": args.batch_jobs,
                "size": args.batch_size,
                "evaluations": args.batch_evaluations,
                "seconds": elapsed,
                "jobs_per_minute": 60.0 * args.batch_jobs / elapsed,
                "mean_batch": rows / max(1, after.batches - before.batches)
                if mode == "batched"
                else 1.0,
            }
        )


def part_xla_memory(args: argparse.Namespace) -> None:
    """XLA's buffer assignment of the compiled step per precision and size (JAX only)."""
    from styletx.engine import Stylizer
    from styletx.memory import MemoryModel
    from styletx.options import StyleOptions

    for precision in PRECISIONS:
        if precision == "auto":
            continue  # one of the others, per device: nothing of its own to measure
        stylizer = Stylizer(args.weights, precision=precision)
        step: Any = stylizer.step(StyleOptions())
        points = []
        for size in args.sizes:
            image = np.zeros((1, size, size, 3), np.float32)
            content, grams = step.targets(image)
            targets = step.put(content, grams, np.ones((1, 4), np.float32))
            lowered = step._loss_and_grad._jitted.lower(
                step._put(image),
                step._trainable,
                step._frozen,
                targets.content,
                list(targets.grams),
                targets.weights,
            )
            analysis = lowered.compile().memory_analysis()
            used = (
                analysis.argument_size_in_bytes
                + analysis.output_size_in_bytes
                + analysis.temp_size_in_bytes
                - analysis.alias_size_in_bytes
            )
            points.append((size * size, float(used)))
            print(f"{stylizer.device} {precision} {size}px: {used / MIB:.0f} MiB", flush=True)
        model = MemoryModel.fit(points)
        print(f"  {precision}: a = {model.per_pixel:.0f} B/px, b = {model.fixed / 1e6:.0f} MB")
