"""Measure what the Deployment's memory and grace values are derived from (deploy/README.md).

Starts `styletx-server` (the one beside this Python, real weights, the server's default limits,
one worker) and drives it with the SDK:

1. idle RSS once it is SERVING (weights loaded, warm-up job done);
2. `--jobs` default jobs (no options: the default preset at the default size and budget), their
   call-to-result and compute times and the peak RSS (VmHWM) after them;
3. one job at the largest output the server allows (its `--max-size`, square content and style, so
   the most pixels), a few evaluations (the L-BFGS history is full after `lbfgs_memory`
   iterations; memory does not grow after that), and the peak RSS after it;
4. in a fresh process, the peak memory that decoding one large upload costs per pixel (PNG and
   JPEG), which is what the server's in-flight pixel budget multiplies.

Usage: .venv/bin/python bench/sizing_bench.py [--jobs 5] [--max-evaluations 15]
       [--decode-megapixels 30] [--json bench/sizing.json]
The weights are resolved as the server resolves them (STYLETX_WEIGHTS, then the cache).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support.server_process import ServerProcess, start_serving  # noqa: E402

CONTENT = ROOT / "examples" / "content_chelsea.png"
STYLE = ROOT / "examples" / "style_starry_night.jpg"
MIB = 2**20
START_TIMEOUT_S = 600.0
#: A 1024 px job on a busy 2-core machine can take many minutes.
CALL_TIMEOUT_S = 3600.0


def start_server() -> ServerProcess:
    """`styletx-server` beside this Python on 127.0.0.1:0 with its default limits, SERVING."""
    binary = Path(sys.executable).with_name("styletx-server")
    local = ["--address", "127.0.0.1:0", "--metrics-port", "0", "--workers", "1"]
    return start_serving(
        local,
        command=[str(binary)],
        timeout=START_TIMEOUT_S,
        service="styletx.v1.StyleTransferService",
    )


def square_png(path: Path, side: int) -> bytes:
    """`path` resized to a `side` x `side` PNG: the most pixels an output size allows."""
    from PIL import Image

    with Image.open(path) as image:
        square = image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    square.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Figures:
    """Everything measured, in bytes and seconds."""

    machine: dict[str, Any] = field(default_factory=dict)
    idle_rss: int = 0
    default_job_seconds: list[float] = field(default_factory=list)
    default_job_compute_seconds: list[float] = field(default_factory=list)
    default_job_peak_rss: int = 0
    max_job: dict[str, Any] = field(default_factory=dict)
    max_job_peak_rss: int = 0
    decode_bytes_per_pixel: dict[str, float] = field(default_factory=dict)
    exit_code: int | None = None


def measure_server(figures: Figures, jobs: int, max_evaluations: int) -> None:
    from styletx_client import StyleTransferClient
    from styletx_server.ops.config import ServerConfig

    defaults = ServerConfig()
    server = start_server()
    try:
        with StyleTransferClient(server.address, timeout=CALL_TIMEOUT_S) as client:
            time.sleep(2.0)
            figures.idle_rss = server.rss()
            print(f"idle (serving, warm): RSS {figures.idle_rss / MIB:.0f} MiB", flush=True)
            for n in range(jobs):
                started = time.perf_counter()
                result = client.stylize(CONTENT, STYLE)
                wall = time.perf_counter() - started
                figures.default_job_seconds.append(wall)
                figures.default_job_compute_seconds.append(result.compute_time)
                print(
                    f"default job {n + 1}/{jobs}: {result.image.width}x{result.image.height}, "
                    f"{result.evaluations} evaluations, {wall:.1f} s call, "
                    f"{result.compute_time:.1f} s compute",
                    flush=True,
                )
            figures.default_job_peak_rss = server.peak_rss()
            print(
                f"peak RSS after the default jobs: {figures.default_job_peak_rss / MIB:.0f} MiB",
                flush=True,
            )
            side = defaults.max_size
            started = time.perf_counter()
            result = client.stylize(
                square_png(CONTENT, side),
                square_png(STYLE, side),
                size=side,
                max_evaluations=max_evaluations,
            )
            figures.max_job = {
                "style_side": side,
                "width": result.image.width,
                "height": result.image.height,
                "evaluations": result.evaluations,
                "seconds": time.perf_counter() - started,
                "compute_seconds": result.compute_time,
            }
            figures.max_job_peak_rss = server.peak_rss()
            print(
                f"max-size job {result.image.width}x{result.image.height}, "
                f"{result.evaluations} evaluations, {result.compute_time:.1f} s compute: "
                f"peak RSS {figures.max_job_peak_rss / MIB:.0f} MiB",
                flush=True,
            )
    finally:
        figures.exit_code = server.stop(timeout=120)


_DECODE_PROBE = """
import io, json, sys
from pathlib import Path
import numpy as np
from PIL import Image
from styletx.images import decode_image
from bench.support.rss import peak_rss

fmt, megapixels = sys.argv[1], float(sys.argv[2])
side = int((megapixels * 1e6) ** 0.5)
rng = np.random.default_rng(0)
# Smooth noise: compresses like a photo, so the encoded bytes do not dominate the peak.
small = rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8)
image = Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR)
buffer = io.BytesIO()
image.save(buffer, format=fmt)
data = buffer.getvalue()
del image, small
before = peak_rss()
decoded = decode_image(data, max_pixels=side * side)
after = peak_rss()
print(json.dumps({"pixels": side * side, "bytes": len(data), "peak_growth": after - before}))
"""


def measure_decode(figures: Figures, megapixels: float) -> None:
    """Peak memory growth of one decode per pixel, in a fresh process (nothing else alive)."""
    for fmt in ("PNG", "JPEG"):
        result = subprocess.run(
            [sys.executable, "-c", _DECODE_PROBE, fmt, str(megapixels)],
            cwd=ROOT,  # where `bench.support` imports from
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        probe = json.loads(result.stdout.strip().splitlines()[-1])
        per_pixel = probe["peak_growth"] / probe["pixels"]
        figures.decode_bytes_per_pixel[fmt] = per_pixel
        print(
            f"decode {fmt} {probe['pixels'] / 1e6:.1f} MP ({probe['bytes'] / MIB:.1f} MiB "
            f"encoded): peak +{probe['peak_growth'] / MIB:.0f} MiB, {per_pixel:.2f} B/px",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5, help="default jobs to time")
    parser.add_argument("--max-evaluations", type=int, default=15, help="of the max-size job")
    parser.add_argument("--decode-megapixels", type=float, default=30.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import psutil

    figures = Figures(
        machine={
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        }
    )
    measure_server(figures, args.jobs, args.max_evaluations)
    measure_decode(figures, args.decode_megapixels)
    seconds = sorted(figures.default_job_seconds)
    print(
        f"default job call time: median {statistics.median(seconds):.1f} s, "
        f"max {seconds[-1]:.1f} s over {len(seconds)} jobs; server exit code {figures.exit_code}",
        flush=True,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(figures), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
