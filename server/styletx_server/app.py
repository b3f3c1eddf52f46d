"""`StyletxServer`: assembles gRPC server, servicer, admission queue, health, metrics and model."""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures

import grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from styletx.engine import Engine, load_stylizer
from styletx_client.proto import style_transfer_pb2_grpc as pb_grpc
from styletx_server.admission import AdmissionQueue
from styletx_server.auth import BearerAuthInterceptor
from styletx_server.config import ServerConfig
from styletx_server.convert import Limits
from styletx_server.health import API_SERVICE, HEALTH_SERVICE, HealthState
from styletx_server.logs import log_event
from styletx_server.metrics import MetricsHttpServer, ServerMetrics
from styletx_server.servicer import Lifecycle, StyleTransferServicer

log = logging.getLogger(__name__)

#: Handler threads beyond the admitted calls: refusals, health checks, reflection streams.
EXTRA_HANDLER_THREADS = 8
#: How long final statuses may take to reach callers once the jobs have stopped.
_STOP_GRACE_SECONDS = 5.0


def auto_workers() -> int:
    """One worker per visible GPU, one on CPU."""
    import tensorflow as tf

    return max(1, len(tf.config.list_physical_devices("GPU")))


#: Calls still running when a connection reaches its maximum age may take this long to finish.
CONNECTION_AGE_GRACE_SECONDS = 3600


def _connection_age_options(age_seconds: float) -> list[tuple[str, int]]:
    """gRPC channel arguments that recycle old connections (0 = keep them forever).

    Clients that balance over DNS (headless Service) only see new replicas when they reconnect;
    a generous grace lets long stylizations on the old connection finish first.
    """
    if age_seconds <= 0:
        return []
    return [
        ("grpc.max_connection_age_ms", int(age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", CONNECTION_AGE_GRACE_SECONDS * 1000),
    ]


class StyletxServer:
    """The whole service in one object; `start()` binds, the model loads in the background."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        stylizer: Engine | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.metrics = ServerMetrics.create(registry)
        self.lifecycle = Lifecycle()
        self.health = HealthState()
        self.workers = config.workers or auto_workers()
        self.admission = AdmissionQueue(
            config.queue_size, self.workers, on_change=self._on_queue_change
        )
        self.servicer = StyleTransferServicer(
            Limits.from_config(config), self.admission, self.metrics, self.lifecycle
        )
        self._given_stylizer = stylizer
        self._grpc: grpc.Server | None = None
        self._metrics_http: MetricsHttpServer | None = None
        self._port: int | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self.failure: BaseException | None = None
        self.metrics.queue_capacity.set(config.queue_size)
        self.metrics.workers.set(self.workers)

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
        self.metrics.queue_depth.set(waiting)
        self.metrics.jobs_in_flight.set(running)

    # -- lifecycle -------------------------------------------------------------------------

    def _build_grpc(self) -> grpc.Server:
        config = self.config
        interceptors: list[grpc.ServerInterceptor] = []  # type: ignore[type-arg]
        if config.auth_token:
            interceptors.append(BearerAuthInterceptor(config.auth_token, self._count_rejected))
        server = grpc.server(
            # Every admitted call holds a handler thread while it waits and while it runs.
            futures.ThreadPoolExecutor(
                max_workers=config.queue_size + self.workers + EXTRA_HANDLER_THREADS,
                thread_name_prefix="grpc-handler",
            ),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                # One server per port: a second process must fail to bind, not share the port.
                ("grpc.so_reuseport", 0),
                *_connection_age_options(config.max_connection_age),
            ],
        )
        pb_grpc.add_StyleTransferServiceServicer_to_server(self.servicer, server)
        self.health.add_to_server(server)
        reflection.enable_server_reflection(
            (API_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server
        )
        return server

    def _bind(self, server: grpc.Server) -> int:
        config = self.config
        if config.tls_cert is not None and config.tls_key is not None:
            credentials = grpc.ssl_server_credentials(
                [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
            )
            port = server.add_secure_port(config.address, credentials)
        else:
            port = server.add_insecure_port(config.address)
        if not port:
            raise RuntimeError(f"could not bind {config.address}")
        return port

    def start(self) -> int:
        """Bind and serve (health NOT_SERVING until the model is loaded and warm); returns port."""
        if self._grpc is not None:
            return self.port
        server = self._build_grpc()
        self._port = self._bind(server)
        self.admission.start()
        if self.config.metrics_port:
            self._metrics_http = MetricsHttpServer(self.metrics.registry, self.config.metrics_port)
        server.start()
        self._grpc = server
        log_event(
            log,
            "serving",
            address=self.config.address,
            port=self._port,
            tls=self.config.tls_cert is not None,
            auth=self.config.auth_token is not None,
            workers=self.workers,
            queue_size=self.config.queue_size,
            metrics_port=self.metrics_port,
        )
        threading.Thread(target=self._load, name="styletx-loader", daemon=True).start()
        return self._port

    def _load(self) -> None:
        started = time.monotonic()
        try:
            stylizer = self._given_stylizer or load_stylizer(
                self.config.weights, workers=self.workers
            )
            if self.config.warmup:
                stylizer.warmup()
        except Exception as exc:  # the process cannot serve: report, and let main() exit 1
            self.failure = exc
            log_event(log, "model_failed", level=logging.ERROR, exc_info=exc, error=str(exc))
            self._ready.set()
            return
        self.lifecycle.stylizer = stylizer
        self.health.serving()
        log_event(log, "ready", load_seconds=round(time.monotonic() - started, 3))
        self._ready.set()

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until the model is loaded and warm (True) or failed/timed out (False)."""
        return self._ready.wait(timeout) and self.failure is None

    def cancel_jobs(self) -> None:
        """Stop every waiting and running job now (within one evaluation)."""
        self.lifecycle.shutting_down.set()
        self.admission.drop_waiting()

    def drain(self, grace: float | None = None) -> bool:
        """Refuse new calls, report NOT_SERVING, let admitted jobs finish for `grace` seconds,
        then cancel the rest. True when everything finished within the grace period."""
        grace = self.config.grace_period if grace is None else grace
        self.lifecycle.draining.set()
        self.health.drain()
        self.admission.close()
        log_event(
            log,
            "draining",
            grace_seconds=grace,
            running=self.admission.running,
            waiting=self.admission.waiting,
        )
        if self.admission.wait_idle(grace):
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
        self.admission.wait_idle(_STOP_GRACE_SECONDS)
        return False

    def stop(self) -> None:
        """Stop everything now (jobs cancelled); idempotent."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self.lifecycle.draining.set()
            self.health.drain()
            self.admission.close()
            self.cancel_jobs()
            if self._grpc is not None:
                # Let handlers of just-cancelled jobs send their final status.
                self.admission.wait_idle(_STOP_GRACE_SECONDS)
                self._grpc.stop(_STOP_GRACE_SECONDS).wait()
            self.admission.stop(timeout=_STOP_GRACE_SECONDS)
            if self._metrics_http is not None:
                self._metrics_http.close()
            self.health.close()
            self._stopped.set()
            log_event(log, "stopped")

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Block until `stop()` completed; False on timeout."""
        return self._stopped.wait(timeout)

    def _count_rejected(self, method: str) -> None:
        self.metrics.requests.labels(method=method, code=grpc.StatusCode.UNAUTHENTICATED.name).inc()


__all__ = ["EXTRA_HANDLER_THREADS", "StyletxServer", "auto_workers"]
