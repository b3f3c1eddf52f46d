"""`StyletxServer`: the assembly of every room (security, scheduling, jobs, rpc, observe) into one
grpc.aio server, and its synchronous face for `__main__` and the tests.

gRPC runs on one asyncio event loop in a background thread (shared by every server of the
process). The engine runs on worker threads (one per device), decoding on a small thread pool:
the loop never blocks, so health checks and reflection answer at once whatever the traffic.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from styletx.protocol import Engine
from styletx_server.observe.logs import log_event
from styletx_server.observe.metrics import MetricsHttpServer, ServerMetrics
from styletx_server.ops.config import ServerConfig
from styletx_server.ops.devices import check_required_gpu, visible_gpus
from styletx_server.ops.fleet import FleetPart, shared_store
from styletx_server.ops.grpc_server import LoopThread, log_serving, start_grpc
from styletx_server.ops.health import HealthState
from styletx_server.ops.loading import auto_jobs_per_device, load_and_warm, load_engine
from styletx_server.ops.parts import build_parts
from styletx_server.ops.shutdown import STOP_GRACE_SECONDS, Departure
from styletx_server.rpc.servicer import StyleTransferServicer
from styletx_server.rpc.stylize import Lifecycle
from styletx_server.security.tenants import TenantDirectory
from styletx_server.store.protocol import JobStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class StyletxServer:
    """The whole service in one object; `start()` binds, the model loads in the background."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        stylizer: Engine | None = None,
        registry: CollectorRegistry | None = None,
        tracer_provider: TracerProvider | None = None,
        store: JobStore | None = None,
    ) -> None:
        self.config = c = config
        #: Set (tracing.configure): every API call gets a span, continuing the caller's trace.
        self.tracer_provider = tracer_provider
        self.metrics = ServerMetrics.create(registry)
        self.lifecycle = Lifecycle()
        self.health = HealthState()
        # Asking for devices loads the framework: only when something is left to auto.
        gpus = 0 if c.workers and c.jobs_per_device else len(visible_gpus())
        self.jobs_per_device = auto_jobs_per_device(c, gpus)
        self.workers = c.workers or max(1, gpus) * self.jobs_per_device
        self.tenants = TenantDirectory(c.auth_tokens_file, auth_token=c.auth_token)
        self._decode_pool = ThreadPoolExecutor(c.decode_threads, thread_name_prefix="decode")
        parts = build_parts(
            c,
            workers=self.workers,
            metrics=self.metrics,
            tenants=self.tenants,
            lifecycle=self.lifecycle,
            decode_pool=self._decode_pool,
            store=store or shared_store(c),
        )
        self.admission, self.budget, self.board = parts.admission, parts.budget, parts.board
        self.jobs, self.slots, self.throughput = parts.board.registry, parts.slots, parts.throughput
        self.loop = LoopThread.get()
        self.servicer = StyleTransferServicer(parts, self.loop)
        self.fleet = None if parts.store is None else FleetPart(parts.store, c, self)
        self._departure = Departure(
            self.lifecycle, self.health, self.admission, self.board, self.workers,
            None if self.fleet is None else self.fleet.worker,
        )  # fmt: skip
        self._given_stylizer = stylizer
        self._grpc: grpc.aio.Server | None = None
        self._metrics_http: MetricsHttpServer | None = None
        self._port: int | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self.failure: BaseException | None = None

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the gRPC loop and wait for its result (never call from the loop)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def port(self) -> int:
        """The bound gRPC port (after `start()`)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def metrics_port(self) -> int | None:
        """The bound /metrics port, None when metrics are off."""
        return None if self._metrics_http is None else self._metrics_http.port

    @property
    def stylizer(self) -> Engine | None:
        """The loaded engine, None until ready."""
        return self.lifecycle.stylizer

    def start(self) -> int:
        """Bind and serve (health NOT_SERVING until the model is loaded and warm); returns port.

        With --require-gpu, raises NoGpuError first when no GPU is visible.
        """
        if self._grpc is not None:
            return self.port
        c = self.config
        check_required_gpu(c.require_gpu)
        self._grpc, self._port = self._run(
            start_grpc(
                c,
                self.servicer,
                health=self.health,
                tenants=self.tenants,
                metrics=self.metrics,
                tracer_provider=self.tracer_provider,
            )
        )
        self.admission.start()
        if c.metrics_port:
            self._metrics_http = MetricsHttpServer(self.metrics.registry, c.metrics_port)
        log_serving(
            c,
            port=self._port,
            tenants=self.tenants,
            workers=self.workers,
            metrics_port=self.metrics_port,
        )
        threading.Thread(target=self._load, name="styletx-loader", daemon=True).start()
        return self._port

    def _load(self) -> None:
        """The loader thread: engine ready -> SERVING; a failure -> `failure`, main() exits 1."""
        try:
            self.lifecycle.stylizer = load_and_warm(
                lambda: (
                    self._given_stylizer
                    or load_engine(
                        self.config, workers=self.workers, jobs_per_device=self.jobs_per_device
                    )
                ),
                warmup=self.config.warmup,
                metrics=self.metrics,
                jobs_per_device=self.jobs_per_device,
            )
        except Exception as exc:
            self.failure = exc
            log_event(log, "model_failed", level=logging.ERROR, exc_info=exc, error=str(exc))
        else:
            if self.fleet is not None:  # claims the fleet's jobs from now on
                self._run(self.fleet.start())
            if not self.lifecycle.draining.is_set() and (self.fleet is None or self.fleet.store_ok):
                self._run(self.health.serving())  # (a fleet's: once its store answers)
            log_event(log, "ready")
        self._ready.set()

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until the model is loaded and warm (True) or failed/timed out (False)."""
        return self._ready.wait(timeout) and self.failure is None

    def cancel_jobs(self) -> None:
        """Stop every waiting and running job now (within one evaluation): UNAVAILABLE, SHUTDOWN."""
        self._departure.cancel_jobs()

    def drain(self, grace: float | None = None) -> bool:
        """Refuse new calls (UNAVAILABLE, DRAINING), report NOT_SERVING, refuse queued jobs that
        cannot finish in time, let running jobs finish for `grace` seconds, then cancel the rest;
        `stop()` closes the port and the connections. True when everything finished in time."""
        grace = self.config.grace_period if grace is None else grace
        return self._run(self._departure.drain(grace))

    def stop(self) -> None:
        """Stop everything now (jobs cancelled); idempotent."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._run(self._departure.stop(self._grpc))
            self.admission.stop(timeout=STOP_GRACE_SECONDS)
            self._decode_pool.shutdown(wait=False, cancel_futures=True)
            if self._metrics_http is not None:
                self._metrics_http.close()
            self._stopped.set()
            log_event(log, "stopped")


__all__ = ["StyletxServer"]
