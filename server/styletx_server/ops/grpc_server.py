"""The grpc.aio server itself: its event loop thread, transport security, channel options,
interceptors, the service, health and reflection."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import TracerProvider

from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_server.observe.logs import log_event
from styletx_server.observe.metrics import ServerMetrics
from styletx_server.observe.tracing import server_interceptors
from styletx_server.ops.config import ServerConfig
from styletx_server.ops.health import API_SERVICE, HEALTH_SERVICE, HealthState
from styletx_server.rpc.calls import record_unauthenticated
from styletx_server.security.auth import BearerAuthInterceptor
from styletx_server.security.tenants import DEFAULT_NAME, TenantDirectory

log = logging.getLogger(__name__)


class LoopThread:
    """The process's asyncio event loop for gRPC, in a daemon thread (started on first use)."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="styletx-aio", daemon=True)
                thread.start()
                cls._loop, cls._thread = loop, thread
            return cls._loop

    @classmethod
    def stop(cls, timeout: float = 5.0) -> None:
        """Stop the loop before the process exits (its servers stopped): gRPC closes its poller's
        descriptor at exit, and a loop still running would log the callback that then fails."""
        with cls._lock:
            loop, thread = cls._loop, cls._thread
            cls._loop = cls._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)


def connection_age_options(age_seconds: float, grace_seconds: float) -> list[tuple[str, int]]:
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


def credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS (mutual TLS with --tls-client-ca) from the config's files; None for plaintext."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    pairs = [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
    if config.tls_client_ca is None:
        return grpc.ssl_server_credentials(pairs)
    # Mutual TLS: the handshake fails for a client without a certificate from this CA.
    return grpc.ssl_server_credentials(
        pairs, root_certificates=config.tls_client_ca.read_bytes(), require_client_auth=True
    )


async def start_grpc(
    config: ServerConfig,
    servicer: pb_grpc.StyleTransferServiceServicer,
    *,
    health: HealthState,
    tenants: TenantDirectory,
    metrics: ServerMetrics,
    tracer_provider: TracerProvider | None,
) -> tuple[grpc.aio.Server, int]:
    """Build, bind and start the server (health NOT_SERVING); returns it and its port."""
    interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = []
    if tenants.required:
        check = functools.partial(tenants.admits, mtls=config.tls_client_ca is not None)
        rejected = functools.partial(record_unauthenticated, metrics)
        interceptors.append(BearerAuthInterceptor(check, rejected))
    if tracer_provider is not None:  # first: refused calls are traced too
        interceptors[:0] = server_interceptors(tracer_provider)
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            # One server per port: a second process must fail to bind, not share the port.
            ("grpc.so_reuseport", 0),
            *connection_age_options(config.max_connection_age, config.max_connection_age_grace),
        ],
    )
    pb_grpc.add_StyleTransferServiceServicer_to_server(servicer, server)
    health.add_to_server(server)
    await health.not_serving()
    reflection.enable_server_reflection(
        (API_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server
    )
    secure = credentials(config)
    if secure is None:
        port = server.add_insecure_port(config.address)
    else:
        port = server.add_secure_port(config.address, secure)
    if not port:
        raise RuntimeError(f"could not bind {config.address}")
    await server.start()
    return server, port


def log_serving(
    config: ServerConfig,
    *,
    port: int,
    tenants: TenantDirectory,
    workers: int,
    metrics_port: int | None,
) -> None:
    """The one line that says the server is bound, and how it is set up."""
    log_event(
        log,
        "serving",
        address=config.address,
        port=port,
        tls=config.tls_cert is not None,
        mtls=config.tls_client_ca is not None,
        auth=tenants.required,
        tenants=sorted(tenants.names - {DEFAULT_NAME}),
        workers=workers,
        queue_size=config.queue_size,
        max_calls=config.max_calls,
        max_inflight_pixels=config.max_inflight_pixels,
        metrics_port=metrics_port,
    )


__all__ = ["LoopThread", "connection_age_options", "credentials", "log_serving", "start_grpc"]
