"""`StyletxServer`: assembles the grpc.aio server, servicer, queue, budget, registry and model.

gRPC runs on one asyncio event loop in a background thread (shared by every server of the
process); this class is its synchronous face for `__main__` and the tests. The engine runs on
worker threads (one per device), decoding on a small thread pool: the loop never blocks, so health
checks and reflection answer at once whatever the Stylize traffic.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

import styletx
from styletx.pool import load_stylizer
from styletx.protocol import Engine
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_server.errors.statuses import StopReason
from styletx_server.jobs.job import StylizeJob
from styletx_server.jobs.registry import JobRegistry
from styletx_server.observe.logs import log_event
from styletx_server.observe.metrics import MetricsHttpServer, ServerMetrics
from styletx_server.observe.tracing import TracingInterceptor
from styletx_server.ops.config import ServerConfig, limits_of
from styletx_server.ops.devices import require_gpu
from styletx_server.ops.health import API_SERVICE, HEALTH_SERVICE, HealthState
from styletx_server.rpc.calls import record_unauthenticated
from styletx_server.rpc.servicer import Lifecycle, ServicerParts, StyleTransferServicer
from styletx_server.scheduling.admission import AdmissionQueue, TenantCounts, Throughput, plan_drain
from styletx_server.scheduling.budget import PixelBudget
from styletx_server.scheduling.slots import CallSlots, share_limit
from styletx_server.security.auth import BearerAuthInterceptor
from styletx_server.security.tenants import DEFAULT_NAME, TenantDirectory

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long final statuses may take to reach callers once the jobs have stopped.
_STOP_GRACE_SECONDS = 5.0


#: Jobs per GPU when batching is on and the operator names no number: enough concurrent jobs
#: of one shape for the batcher to fill batches (bench/gpu_bench.py measures 4 x 256 px).
GPU_JOBS_PER_DEVICE = 4


def accelerators() -> list[str]:
    """The accelerators the engine's Keras backend sees (imports the framework)."""
    from styletx import backends

    found = backends.load()
    found.configure()  # before the first device query: TensorFlow's memory growth needs it
    return found.accelerators()


def auto_jobs_per_device(config: ServerConfig, gpus: int) -> int:
    """--jobs-per-device, else `GPU_JOBS_PER_DEVICE` on GPUs with batching on, else 1."""
    if config.jobs_per_device:
        return config.jobs_per_device
    batching = config.batch_window_ms is None or config.batch_window_ms > 0
    return GPU_JOBS_PER_DEVICE if gpus and batching else 1


def _connection_age_options(age_seconds: float, grace_seconds: float) -> list[tuple[str, int]]:
    """gRPC channel arguments that recycle old connections (age 0 = keep them forever).

    Clients that balance over DNS (headless Service) only see new replicas when they reconnect;
    the grace lets the longest job on the old connection finish first, and then closes what is
    left (calls whose reader never read included).
    """
    if age_seconds <= 0:
        return []
    return [
        ("grpc.max_connection_age_ms", int(age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(grace_seconds * 1000)),
    ]


class _LoopThread:
    """The process's asyncio event loop for gRPC, in a daemon thread (started on first use)."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="styletx-aio", daemon=True).start()
                cls._loop = loop
            return cls._loop


class StyletxServer:
    """The whole service in one object; `start()` binds, the model loads in the background."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        stylizer: Engine | None = None,
        registry: CollectorRegistry | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.config = config
        #: Set (tracing.configure): every API call gets a span, continuing the caller's trace.
        self.tracer_provider = tracer_provider
        self.metrics = ServerMetrics.create(registry)
        self.lifecycle = Lifecycle()
        self.health = HealthState()
        # Asking for devices loads the framework: only when something is left to auto.
        gpus = 0 if config.workers and config.jobs_per_device else len(accelerators())
        self.jobs_per_device = auto_jobs_per_device(config, gpus)
        self.workers = config.workers or max(1, gpus) * self.jobs_per_device
        self.tenants = TenantDirectory(config.auth_tokens_file, auth_token=config.auth_token)
        self.admission = AdmissionQueue(
            config.queue_size,
            self.workers,
            on_change=self._on_queue_change,
            on_tenants=self._on_tenants_change,
        )
        self.budget = PixelBudget(config.max_inflight_pixels, self.metrics.inflight_pixels.set)
        self.jobs = JobRegistry(
            result_ttl=config.result_ttl,
            max_results=config.max_stored_results,
            max_result_bytes=config.max_stored_result_bytes,
            on_change=self._on_store_change,
        )
        self.throughput = Throughput()
        self.slots = CallSlots(
            config.max_calls,
            share_limit(config.max_calls, config.max_peer_share),
            on_change=self._on_calls_change,
        )
        self._loop = _LoopThread.get()
        self._decode_pool = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="decode")
        self.servicer = StyleTransferServicer(
            ServicerParts(
                limits=limits_of(config),
                admission=self.admission,
                budget=self.budget,
                registry=self.jobs,
                metrics=self.metrics,
                lifecycle=self.lifecycle,
                throughput=self.throughput,
                decode_pool=self._decode_pool,
                slots=self.slots,
                linger=config.linger,
                stall_timeout=config.stall_timeout,
                tenants=self.tenants,
            ),
            self._loop,
        )
        self._given_stylizer = stylizer
        self._grpc: grpc.aio.Server | None = None
        self._metrics_http: MetricsHttpServer | None = None
        self._port: int | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self.failure: BaseException | None = None
        self.metrics.queue_capacity.set(config.queue_size)
        self.metrics.workers.set(self.workers)
        self.metrics.inflight_pixels_limit.set(config.max_inflight_pixels)
        self._on_tenants_change({})

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the gRPC loop and wait for its result (never call from the loop)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- properties ------------------------------------------------------------------------

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

    def _on_queue_change(self, waiting: int, running: int) -> None:
        self.metrics.busyness.set((waiting + running) / self.workers)

    def _on_tenants_change(self, counts: TenantCounts) -> None:
        """Per-tenant queue depth and running jobs: every name the tokens file has held (a
        bounded label set) gets a value, 0 when it has no job."""
        for name in sorted(self.tenants.names | set(counts)):
            waiting, running = counts.get(name, (0, 0))
            self.metrics.queue_depth.labels(tenant=name).set(waiting)
            self.metrics.jobs_in_flight.labels(tenant=name).set(running)

    def _on_calls_change(self, open_calls: int, stalled: int) -> None:
        self.metrics.calls_in_flight.set(open_calls)
        self.metrics.calls_stalled.set(stalled)

    def _on_store_change(self, results: int, size: int) -> None:
        self.metrics.stored_results.set(results)
        self.metrics.stored_result_bytes.set(size)

    # -- lifecycle -------------------------------------------------------------------------

    def _credentials(self) -> grpc.ServerCredentials | None:
        config = self.config
        if config.tls_cert is None or config.tls_key is None:
            return None
        pairs = [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
        if config.tls_client_ca is None:
            return grpc.ssl_server_credentials(pairs)
        # Mutual TLS: the handshake fails for a client without a certificate from this CA.
        return grpc.ssl_server_credentials(
            pairs, root_certificates=config.tls_client_ca.read_bytes(), require_client_auth=True
        )

    async def _start_grpc(self) -> int:
        config = self.config
        interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = []
        if self.tenants.required:
            check = functools.partial(self.tenants.admits, mtls=config.tls_client_ca is not None)
            rejected = functools.partial(record_unauthenticated, self.metrics)
            interceptors.append(BearerAuthInterceptor(check, rejected))
        if self.tracer_provider is not None:  # first: refused calls are traced too
            interceptors.insert(0, TracingInterceptor(self.tracer_provider))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                # One server per port: a second process must fail to bind, not share the port.
                ("grpc.so_reuseport", 0),
                *_connection_age_options(
                    config.max_connection_age, config.max_connection_age_grace
                ),
            ],
        )
        pb_grpc.add_StyleTransferServiceServicer_to_server(self.servicer, server)
        self.health.add_to_server(server)
        await self.health.not_serving()
        reflection.enable_server_reflection(
            (API_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server
        )
        credentials = self._credentials()
        if credentials is None:
            port = server.add_insecure_port(config.address)
        else:
            port = server.add_secure_port(config.address, credentials)
        if not port:
            raise RuntimeError(f"could not bind {config.address}")
        await server.start()
        self._grpc = server
        return port

    def start(self) -> int:
        """Bind and serve (health NOT_SERVING until the model is loaded and warm); returns port.

        With --require-gpu, raises NoGpuError first when no GPU is visible.
        """
        if self._grpc is not None:
            return self.port
        if self.config.require_gpu:
            try:
                gpus = require_gpu()
            except RuntimeError as exc:
                log_event(log, "no_gpu", level=logging.ERROR, error=str(exc))
                raise
            log_event(log, "gpus", devices=gpus)
        self._port = self._run(self._start_grpc())
        self.admission.start()
        if self.config.metrics_port:
            self._metrics_http = MetricsHttpServer(self.metrics.registry, self.config.metrics_port)
        config = self.config
        log_event(
            log,
            "serving",
            address=config.address,
            port=self._port,
            tls=config.tls_cert is not None,
            mtls=config.tls_client_ca is not None,
            auth=self.tenants.required,
            tenants=sorted(self.tenants.names - {DEFAULT_NAME}),
            workers=self.workers,
            queue_size=config.queue_size,
            max_calls=config.max_calls,
            max_inflight_pixels=config.max_inflight_pixels,
            metrics_port=self.metrics_port,
        )
        threading.Thread(target=self._load, name="styletx-loader", daemon=True).start()
        return self._port

    def _load(self) -> None:
        started = time.monotonic()
        try:
            stylizer = self._given_stylizer or self._load_engine()
            if self.config.warmup:
                stylizer.warmup()
        except Exception as exc:  # the process cannot serve: report, and let main() exit 1
            self.failure = exc
            log_event(log, "model_failed", level=logging.ERROR, exc_info=exc, error=str(exc))
            self._ready.set()
            return
        backend, precision = stylizer.backend, stylizer.precision
        self.metrics.build_info.labels(
            version=styletx.__version__, backend=backend, precision=precision
        ).set(1)
        self.metrics.watch(stylizer)
        log_event(
            log,
            "engine",
            backend=backend,
            precision=precision,
            device=stylizer.device,
            jobs_per_device=self.jobs_per_device,
            batch_window_ms=round(1000 * stylizer.batch_window, 3),
            memory_capacity=stylizer.memory_capacity(),
        )
        self.lifecycle.stylizer = stylizer
        if not self.lifecycle.draining.is_set():
            self._run(self.health.serving())
        log_event(log, "ready", load_seconds=round(time.monotonic() - started, 3))
        self._ready.set()

    def _load_engine(self) -> Engine:
        config = self.config
        window = config.batch_window_ms
        return load_stylizer(
            config.weights,
            workers=self.workers,
            backend=config.backend,
            jobs_per_device=self.jobs_per_device,
            precision=config.precision,
            batch_window=None if window is None else window / 1000.0,
            memory_capacity=config.device_memory_bytes or None,
            shape_step=config.shape_step,
        )

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until the model is loaded and warm (True) or failed/timed out (False)."""
        return self._ready.wait(timeout) and self.failure is None

    def cancel_jobs(self) -> None:
        """Stop every waiting and running job now (within one evaluation): UNAVAILABLE, SHUTDOWN."""
        self.lifecycle.shutting_down.set()
        self.servicer.stop_jobs(StopReason.SHUTDOWN)
        self.admission.drop_waiting()

    def _late_jobs(self, grace: float) -> list[StylizeJob]:
        """Waiting jobs that cannot finish within `grace` seconds (see `plan_drain`)."""
        running = [j for j in self.admission.running_jobs() if isinstance(j, StylizeJob)]
        waiting = [j for j in self.admission.waiting_jobs() if isinstance(j, StylizeJob)]
        refused = plan_drain(
            grace,
            self.workers,
            [job.remaining_seconds() for job in running],
            [(job, job.estimated_seconds()) for job in waiting],
        )
        return [job for job in waiting if job in refused]

    async def _drain(self, grace: float) -> bool:
        self.lifecycle.draining.set()
        await self.health.drain()
        self.admission.close()
        late = self._late_jobs(grace)
        # Told at once, so their callers retry elsewhere now, not when the grace period ends.
        self.servicer.stop_jobs(StopReason.DRAINING, late)
        log_event(
            log,
            "draining",
            grace_seconds=grace,
            running=self.admission.running,
            waiting=self.admission.waiting,
            refused=len(late),
        )
        # The port stays open and connections stay up until the running jobs are done: a new
        # call meanwhile gets UNAVAILABLE (DRAINING) and its client moves on at once, where a
        # closed port would have cost it a connection timeout; `stop()` then sends GOAWAY.
        if await asyncio.to_thread(self.admission.wait_idle, grace):
            log_event(log, "drained")
            return True
        log_event(
            log,
            "grace_period_over",
            level=logging.WARNING,
            running=self.admission.running,
            waiting=self.admission.waiting,
        )
        self.cancel_jobs()
        await asyncio.to_thread(self.admission.wait_idle, _STOP_GRACE_SECONDS)
        return False

    def drain(self, grace: float | None = None) -> bool:
        """Refuse new calls (UNAVAILABLE, DRAINING), report NOT_SERVING, refuse queued jobs that
        cannot finish in time, let running jobs finish for `grace` seconds, then cancel the rest;
        `stop()` closes the port and the connections. True when everything finished in time."""
        grace = self.config.grace_period if grace is None else grace
        return self._run(self._drain(grace))

    async def _stop(self) -> None:
        self.lifecycle.draining.set()
        await self.health.drain()
        self.admission.close()
        self.cancel_jobs()
        if self._grpc is not None:
            # Let handlers of just-cancelled jobs send their final status.
            await asyncio.to_thread(self.admission.wait_idle, _STOP_GRACE_SECONDS)
            await self._grpc.stop(_STOP_GRACE_SECONDS)

    def stop(self) -> None:
        """Stop everything now (jobs cancelled); idempotent."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._run(self._stop())
            self.admission.stop(timeout=_STOP_GRACE_SECONDS)
            self._decode_pool.shutdown(wait=False, cancel_futures=True)
            if self._metrics_http is not None:
                self._metrics_http.close()
            self._stopped.set()
            log_event(log, "stopped")


__all__ = [
    "GPU_JOBS_PER_DEVICE",
    "StyletxServer",
    "accelerators",
    "auto_jobs_per_device",
]
