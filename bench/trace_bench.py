"""Tracing benchmark: what OpenTelemetry costs a Stylize call, measured side by side in one run.

Three modes of one in-process server, interleaved round by round (same process, same client):

* `baseline` - no tracing code path: the server's and engine's span hooks, the job's trace and
  the log formatter's span lookup replaced by no-ops, as before tracing existed;
* `off`      - the default: no OTEL_* variables, so no interceptor, no spans, nothing exported;
* `on`       - tracing on, every span recorded by the SDK into an in-memory exporter (the
               call's span made by OpenTelemetry's gRPC instrumentation and CallSpan).

Also the tracing interceptors alone, tracing on (`interceptors_when_on`: a call through them
without gRPC), beside another checkout's with --compare-with OTHER/.../observe/tracing.py, so
that two versions of them compare in one process without the noise of a whole call.

Engines: `fast` (a stub that runs no optimisation but makes the engine's two spans per scale,
so the service path and the span work dominate: the worst case for the ratio) and `real` (the
engine on seeded random weights, a 48 px job of 8 evaluations: a small but real job).

Usage: python bench/trace_bench.py [--calls 40] [--rounds 7] [--real-calls 6] [--json out.json]

The figures in bench/RESULTS.md: --calls 60 --rounds 9. Whole calls of another checkout's
server: PYTHONPATH=OTHER/server python bench/trace_bench.py ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from prometheus_client import CollectorRegistry  # noqa: E402

import styletx.tracing  # noqa: E402
from bench.support.weights import make_seeded_weights, tiny_image  # noqa: E402
from styletx import Losses, Progress, Result, StyleOptions  # noqa: E402
from styletx.batcher import BatchStats  # noqa: E402
from styletx.images import encode_image  # noqa: E402
from styletx.protocol import Engine, ProgressCallback, StopCallback  # noqa: E402
from styletx.result import Image  # noqa: E402
from styletx_client import StyleTransferClient  # noqa: E402
from styletx_server.jobs import job as job_module  # noqa: E402
from styletx_server.jobs import run as run_module  # noqa: E402
from styletx_server.observe import logs  # noqa: E402
from styletx_server.ops.app import StyletxServer  # noqa: E402
from styletx_server.ops.config import ServerConfig  # noqa: E402
from styletx_server.rpc import stylize as servicer  # noqa: E402

MODES = ("baseline", "off", "on")


class FastEngine:
    """A CPU-like engine (every figure empty or zero) that runs no optimisation: one progress
    event and the engine's spans of one scale."""

    backend = "tensorflow"
    precision = "float32"
    device = "CPU:0"
    batch_window = 0.0

    @property
    def batch_stats(self) -> BatchStats:
        return BatchStats(0, 0, 0)

    def precision_for(self, options: StyleOptions) -> str:
        return self.precision

    def check_fits(
        self, content: tuple[int, int], styles: Sequence[tuple[int, int]], options: StyleOptions
    ) -> int:
        return content[0] * content[1]

    def memory_info(self) -> dict[str, int]:
        return {}

    def memory_capacity(self) -> dict[str, int]:
        return {}

    def warmup(self, size: int = 64) -> None:
        pass

    def stylize(
        self,
        content: Image,
        styles: Sequence[Image],
        options: StyleOptions | None = None,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
    ) -> Result:
        losses = Losses(1.0, 0.5, 0.4, 0.1)
        with styletx.tracing.child("style_targets", **{"styletx.scale": 0}):
            pass
        with styletx.tracing.child("optimisation", **{"styletx.scale": 0}):
            if on_progress is not None:
                on_progress(Progress(1, 1, losses, 0.0))
        size = options.size if options is not None else 32
        return Result(np.zeros((size, size, 3), np.uint8), losses, 1, 1, 0.0, 0.0, "float32")


class _NoSpan:
    """The pieces of `opentelemetry.trace` the log formatter uses, with no context lookup."""

    format_trace_id = staticmethod(trace.format_trace_id)
    format_span_id = staticmethod(trace.format_span_id)

    @staticmethod
    def get_current_span() -> trace.Span:
        return trace.INVALID_SPAN


class _NoJobTrace:
    def dequeued(self) -> None:
        pass

    def running(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


@contextlib.contextmanager
def no_tracing_code() -> Iterator[None]:
    """Every tracing hook of the server and the engine replaced by a no-op (the `baseline`)."""

    def nothing(*_: Any, **__: Any) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    saved = (
        servicer.child,
        run_module.child,
        job_module.JobTrace,
        styletx.tracing.child,
        logs.trace,
    )
    servicer.child = run_module.child = styletx.tracing.child = nothing  # type: ignore[assignment]
    job_module.JobTrace = _NoJobTrace  # type: ignore[assignment,misc]
    logs.trace = _NoSpan  # type: ignore[assignment]
    try:
        yield
    finally:
        (
            servicer.child,
            run_module.child,
            job_module.JobTrace,
            styletx.tracing.child,
            logs.trace,
        ) = saved


def start(engine: Engine, provider: TracerProvider | None) -> StyletxServer:
    config = ServerConfig(
        address="127.0.0.1:0", metrics_port=0, workers=1, queue_size=4, warmup=False
    )
    server = StyletxServer(
        config, stylizer=engine, registry=CollectorRegistry(), tracer_provider=provider
    )
    server.start()
    assert server.wait_until_ready(60)
    return server


def per_call(client: StyleTransferClient, calls: int, request: dict[str, Any]) -> float:
    """Median seconds per Stylize call over `calls` sequential calls."""
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        client.stylize(**request)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def compare(
    engine: Engine,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    request: dict[str, Any],
    calls: int,
    rounds: int,
) -> dict[str, Any]:
    """Median per-call seconds of each mode, rounds interleaved; ratios to `baseline`."""
    servers = {"off": start(engine, None), "on": start(engine, provider)}
    servers["baseline"] = servers["off"]  # the same server, its hooks swapped out
    clients = {m: StyleTransferClient(f"127.0.0.1:{servers[m].port}", timeout=120) for m in MODES}
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    spans_per_call = 0.0
    try:
        for mode in MODES:  # warm every path once
            with no_tracing_code() if mode == "baseline" else contextlib.nullcontext():
                per_call(clients[mode], 2, request)
        for _ in range(rounds):
            for mode in MODES:
                exporter.clear()
                with no_tracing_code() if mode == "baseline" else contextlib.nullcontext():
                    seconds[mode].append(per_call(clients[mode], calls, request))
                if mode == "on":
                    spans_per_call = len(exporter.get_finished_spans()) / calls
    finally:
        for client in clients.values():
            client.close()
        servers["off"].stop()
        servers["on"].stop()
    medians = {m: statistics.median(v) for m, v in seconds.items()}
    return {
        "ms_per_call": {m: round(v * 1000, 3) for m, v in medians.items()},
        "ratio_to_baseline": {m: round(v / medians["baseline"], 4) for m, v in medians.items()},
        "spans_per_call_on": spans_per_call,
        "rounds_ms": {m: [round(s * 1000, 3) for s in v] for m, v in seconds.items()},
    }


def hooks_when_off() -> dict[str, float]:
    """Nanoseconds of each hook with nothing traced (what every untraced call pays)."""
    from styletx_server.observe.tracing import JobTrace

    def child() -> None:
        with styletx.tracing.child("x"):
            pass

    number = 200_000
    return {
        "child_span_ns": round(timeit.timeit(child, number=number) / number * 1e9, 1),
        "job_trace_ns": round(timeit.timeit(JobTrace, number=number) / number * 1e9, 1),
        "log_span_lookup_ns": round(
            timeit.timeit(trace.get_current_span, number=number) / number * 1e9, 1
        ),
    }


class _Metadatum(NamedTuple):
    key: str
    value: str


class _StandInContext:
    """What the tracing interceptors read of a grpc.aio servicer context."""

    metadata = (
        _Metadatum("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        _Metadatum("user-agent", "grpc-python/1.85.1 grpc-c/52.0.0 (linux; chttp2)"),
        _Metadatum("x-request-id", "bench"),
    )

    def invocation_metadata(self) -> tuple[_Metadatum, ...]:
        return self.metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.OK

    def cancelled(self) -> bool:
        return False


def _tracing_interceptors(module: Any, provider: TracerProvider) -> list[Any]:
    """The tracing interceptors of a version of `styletx_server.observe.tracing`."""
    make = getattr(module, "server_interceptors", None)
    # Before issue 27, item 6 it had one interceptor of its own.
    return [module.TracingInterceptor(provider)] if make is None else list(make(provider))


def _module_at(path: Path) -> Any:
    """Another checkout's `observe/tracing.py`, loaded beside this one (it imports this
    checkout's other server modules)."""
    spec = importlib.util.spec_from_file_location("other_tracing", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def interceptors_when_on(
    provider: TracerProvider, exporter: InMemorySpanExporter, rounds: int, other: Path | None
) -> dict[str, float]:
    """Microseconds a call spends in the tracing interceptors alone (tracing on, the span
    recorded): a unary call through them and its no-op behaviour, without gRPC, against the same
    call through no interceptor (and through `other`'s, another checkout's tracing.py);
    median of `rounds` x 5000, interleaved round by round."""
    from styletx_server.observe import tracing

    chains: dict[str, list[Any]] = {"none": [], "tracing": _tracing_interceptors(tracing, provider)}
    if other is not None:
        chains["other"] = _tracing_interceptors(_module_at(other), provider)

    async def behaviour(request: Any, context: Any) -> None:
        return None

    handler = grpc.unary_unary_rpc_method_handler(behaviour)
    details = SimpleNamespace(
        method="/styletx.v1.StyleTransferService/GetJob",
        invocation_metadata=_StandInContext.metadata,
    )

    async def through(interceptors: Sequence[Any], at: int, called: Any) -> Any:
        if at == len(interceptors):
            return handler
        return await interceptors[at].intercept_service(
            lambda more: through(interceptors, at + 1, more), called
        )

    async def per_call(interceptors: Sequence[Any], number: int) -> float:
        context = _StandInContext()
        began = time.perf_counter()
        for _ in range(number):
            wrapped = await through(interceptors, 0, details)
            await wrapped.unary_unary(None, context)
        return (time.perf_counter() - began) / number

    async def measure() -> dict[str, float]:
        seconds: dict[str, list[float]] = {name: [] for name in chains}
        for _ in range(rounds):
            for name, interceptors in chains.items():
                exporter.clear()
                seconds[name].append(await per_call(interceptors, 5000))
        return {f"{name}_us": round(statistics.median(v) * 1e6, 1) for name, v in seconds.items()}

    found = asyncio.run(measure())
    exporter.clear()
    found["added_us"] = round(found["tracing_us"] - found["none_us"], 1)
    if other is not None:
        found["other_added_us"] = round(found["other_us"] - found["none_us"], 1)
        found["added_to_other_added"] = round(found["added_us"] / found["other_added_us"], 3)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40, help="calls per mode and round (fast)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--real-calls", type=int, default=6, help="calls per round (real engine)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="TRACING_PY",
        help="another checkout's server/styletx_server/observe/tracing.py: its interceptors "
        "timed alone beside this one's",
    )
    args = parser.parse_args(argv)

    # The request log line of every call is formatted as in production (JSON, INFO).
    logs.configure_logging(logging.INFO, io.StringIO())
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # the engine's spans use the global provider

    content, style = (
        encode_image(tiny_image(48, 64, 1), "png"),
        encode_image(tiny_image(40, 40, 2), "png"),
    )
    request = {"content": content, "styles": style, "size": 32, "max_evaluations": 1}
    report: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "hooks_when_off": hooks_when_off(),
        "interceptors_when_on": interceptors_when_on(
            provider, exporter, args.rounds, args.compare_with
        ),
        "fast": compare(FastEngine(), provider, exporter, request, args.calls, args.rounds),
    }
    print(json.dumps({k: v for k, v in report.items() if k != "real"}, indent=2))
    if args.real_calls:
        from styletx.engine import Stylizer

        with tempfile.TemporaryDirectory() as tmp:
            engine = Stylizer(make_seeded_weights(Path(tmp) / "vgg16.weights.h5"))
            engine.warmup()
            real = {**request, "size": 48, "max_evaluations": 8, "seed": 7}
            report["real"] = compare(engine, provider, exporter, real, args.real_calls, args.rounds)
        print(json.dumps({"real": report["real"]}, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
