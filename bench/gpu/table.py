"""The parent's report of `bench/gpu_bench.py`: the table of the parts' records and the memory
model fitted from their peaks."""

from __future__ import annotations

import math
from typing import Any

MIB = 1024**2
GIB = 1024**3


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(records: list[dict[str, Any]]) -> list[str]:
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


def memory_lines(records: list[dict[str, Any]]) -> list[str]:
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
            f"{math.isqrt(model.max_pixels(card * GIB * HEADROOM))} px in {card} GiB"
            for card in (16, 80)
        )
        lines.append(
            f"memory model {device} {precision} ({kind}): {model.per_pixel:.0f} B/px + "
            f"{model.fixed / MIB:.0f} MiB -> largest square job alone: {fits}"
        )
    return lines
