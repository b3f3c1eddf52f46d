"""GPU benchmark: precision x size, peak device memory and its model, batched versus sequential.

Prints ONE table, every ratio measured side by side in this run (same weights, images, seeds):

- per precision (auto, float32, mixed_bfloat16, mixed_float16; auto's row names what it
  resolved to) and size (260, 512, 1024 px, square content and style; the `high` preset's
  options with N evaluations, so that auto runs them in bfloat16 where the GPU has it):
  seconds per evaluation (the loss-and-gradient step as L-BFGS calls it,
  host transfers included), the job's optimisation seconds for all its evaluations (L-BFGS on
  the host included), the peak device memory of the job (on a CPU: the growth of the process's
  peak RSS) and the final total loss after N evaluations (500 by default);
- 4 concurrent 256 px jobs, one at a time (batching off) versus together (batched), in jobs
  per minute;
- where the main device is a GPU, the same step on the CPU backend at smaller settings, so the
  GPU/CPU ratio comes from the same run.

Under the table: the memory model fitted per precision from the peaks (bytes ~ a * pixels + b)
and the largest square output it lets one job have on a 16 GiB and an 80 GiB card.

Each precision, the batching run and the CPU rows run in their own process (the Keras backend
and JAX's peak-memory counter are per process), in that order of importance, within a time
budget (`--budget-seconds`); a part cut short prints what it finished. `--cpu-smoke` scales
sizes and evaluation counts down so the whole run completes on a small CPU.

Usage: KERAS_BACKEND=jax python bench/gpu_bench.py [--weights W] [--cpu-smoke] [--json out.json]
       python bench/gpu_bench.py --xla-memory [--sizes 128 256 384 512]   (XLA buffer sizes)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tests.support.rss import peak_rss  # noqa: E402

CONTENT = ROOT / "examples" / "content_chelsea.png"
STYLE = ROOT / "examples" / "style_starry_night.jpg"
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
MIB = 1024**2
GIB = 1024**3

#: Full settings (a GPU) and the `--cpu-smoke` ones (2 shared CPU cores, a few minutes).
FULL = {
    "sizes": [260, 512, 1024],
    "evaluations": 500,
    "batch_jobs": 4,
    "batch_size": 256,
    "batch_evaluations": 200,
    "cpu_sizes": [260, 512],
    "cpu_evaluations": 20,
}
SMOKE = {
    "sizes": [64, 96, 128],
    "evaluations": 30,
    "batch_jobs": 4,
    "batch_size": 64,
    "batch_evaluations": 20,
    "cpu_sizes": [64],
    "cpu_evaluations": 5,
}
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


# -- parts (each in its own process) ------------------------------------------------------------


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


# -- the parent: runs the parts, prints the table -----------------------------------------------


def _run_part(argv: list[str], timeout: float) -> tuple[list[dict[str, Any]], str]:
    """Run one part in a subprocess; its RESULT records, and a note when it did not finish."""
    command = [sys.executable, str(Path(__file__).resolve()), *argv]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=max(1.0, timeout), check=False
        )
        out, note = proc.stdout, "" if proc.returncode == 0 else proc.stderr.strip()[-800:]
    except subprocess.TimeoutExpired as exc:
        raw = exc.stdout or b""
        out = raw.decode() if isinstance(raw, bytes) else raw
        note = f"cut at the time budget ({timeout:.0f} s)"
    records = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    return records, note


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(records: list[dict[str, Any]]) -> list[str]:
    header = (
        "backend",
        "device",
        "precision",
        "size",
        "evals",
        "s/eval",
        "job s",
        "peak MiB",
        "final loss",
        "jobs/min",
    )
    rows: list[tuple[str, ...]] = []
    for r in records:
        if r["part"] == "precision" and not r.get("skipped"):
            peak = r["peak_bytes"]
            rows.append(
                (
                    r["backend"],
                    r["device"],
                    r["precision"]
                    + (
                        f" ({r['resolved']})"
                        if r.get("resolved", r["precision"]) != r["precision"]
                        else ""
                    ),
                    str(r["size"]),
                    str(r["evaluations"]),
                    _fmt(r["seconds_per_evaluation"], ".4f"),
                    _fmt(r["job_seconds"], ".1f"),
                    _fmt(None if peak is None else peak / MIB, ".0f")
                    + ("" if r["peak_kind"] == "device" else " (rss)"),
                    _fmt(r["final_loss"], ".4g"),
                    "",
                )
            )
    sequential = next((r for r in records if r.get("mode") == "sequential"), None)
    for r in records:
        if r["part"] == "batching":
            ratio = ""
            if r["mode"] == "batched" and sequential is not None:
                ratio = f" ({r['jobs_per_minute'] / sequential['jobs_per_minute']:.2f}x)"
            rows.append(
                (
                    r["backend"],
                    r["device"],
                    "float32",
                    f"{r['jobs']}x{r['size']} {r['mode']}",
                    str(r["evaluations"]),
                    "",
                    f"{r['seconds']:.1f}",
                    "",
                    "",
                    f"{r['jobs_per_minute']:.1f}{ratio}"
                    + (f" batch~{r['mean_batch']:.1f}" if r["mode"] == "batched" else ""),
                )
            )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return lines


def _memory_lines(records: list[dict[str, Any]]) -> list[str]:
    """The memory model fitted per device and precision: from the device's peak on a GPU, from
    the growth of the peak RSS on a CPU (there the whole process grows, the host's share)."""
    from styletx.memory import HEADROOM, MemoryModel

    groups: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for r in records:
        if r["part"] != "precision" or r.get("skipped") or not r.get("peak_bytes"):
            continue
        key = (r["device"], r["precision"], r["peak_kind"])
        groups.setdefault(key, []).append((r["pixels"], float(r["peak_bytes"])))
    lines = []
    for (device, precision, kind), points in groups.items():
        if len({p for p, _ in points}) < 2:
            continue
        model = MemoryModel.fit(points)
        fits = ", ".join(
            f"{model.largest_square(card * GIB * HEADROOM)} px in {card} GiB" for card in (16, 80)
        )
        lines.append(
            f"memory model {device} {precision} ({kind}): {model.per_pixel:.0f} B/px + "
            f"{model.fixed / MIB:.0f} MiB -> largest square job alone: {fits}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="VGG16 weights file (float16 copy ok)")
    parser.add_argument("--cpu-smoke", action="store_true", help="small sizes and counts")
    parser.add_argument("--budget-seconds", type=float, default=420.0)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--sizes", nargs="+", type=int)
    parser.add_argument("--evaluations", type=int)
    parser.add_argument("--batch-jobs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--batch-evaluations", type=int)
    parser.add_argument("--cpu-sizes", nargs="+", type=int)
    parser.add_argument("--cpu-evaluations", type=int)
    parser.add_argument("--json", type=Path, help="write every record as JSON")
    parser.add_argument("--xla-memory", action="store_true", help=part_xla_memory.__doc__)
    # Internal: run one part in this process.
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--cpu-rows", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=float("inf"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    for key, value in (SMOKE if args.cpu_smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.xla_memory:
        part_xla_memory(args)
        return 0
    if args.part:
        if args.cpu_rows:
            from styletx import backends

            if not backends.load().accelerators():
                return 0  # the main rows ran on the CPU already
        device = "CPU:0" if args.cpu_rows else None
        if args.part == "batching":
            part_batching(args, device)
        else:
            part_precision(args, args.part, device)
        return 0
    return orchestrate(args)


def orchestrate(args: argparse.Namespace) -> int:
    started = time.time()
    deadline = started + args.budget_seconds
    common = [
        *(["--weights", args.weights] if args.weights else []),
        *(["--cpu-smoke"] if args.cpu_smoke else []),
        *["--sizes", *map(str, args.sizes)],
        *["--evaluations", str(args.evaluations)],
        *["--batch-jobs", str(args.batch_jobs), "--batch-size", str(args.batch_size)],
        *["--batch-evaluations", str(args.batch_evaluations)],
        *["--cpu-sizes", *map(str, args.cpu_sizes), "--cpu-evaluations", str(args.cpu_evaluations)],
    ]
    # The parent never imports the framework: JAX would take most of the GPU's memory from the
    # parts. The CPU-rows part itself checks whether the main device is an accelerator.
    # float32 first (the baseline every ratio needs), then batching, then the others.
    first = "float32" if "float32" in args.precisions else args.precisions[0]
    order: list[list[str]] = [["--part", first]]
    order.append(["--part", "batching"])
    order += [["--part", p] for p in args.precisions if p != first]
    order.append(["--part", "float32", "--cpu-rows"])
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    for part in order:
        remaining = deadline - time.time()
        if remaining < 5:
            notes.append(f"{' '.join(part[1:])}: not run (time budget spent)")
            continue
        found, note = _run_part([*part, *common, "--deadline", str(deadline)], remaining)
        records += found
        if note:
            notes.append(f"{' '.join(part[1:])}: {note}")
        skipped = [r["size"] for r in found if r.get("skipped")]
        if skipped:
            notes.append(f"{' '.join(part[1:])}: skipped sizes {skipped} (time budget)")
    print(
        f"# gpu_bench: {platform.machine()}, {os.cpu_count()} CPUs, python "
        f"{platform.python_version()}, KERAS_BACKEND={os.environ.get('KERAS_BACKEND', '')}; "
        f"{time.time() - started:.0f} s"
    )
    for line in _table(records) + _memory_lines(records):
        print(line)
    for note in notes:
        print(f"note: {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"records": records, "notes": notes}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
