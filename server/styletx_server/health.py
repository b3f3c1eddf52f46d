"""`grpc.health.v1` status of the server ("" and the API service move together)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from styletx_client.proto import style_transfer_pb2 as pb

API_SERVICE = pb.DESCRIPTOR.services_by_name["StyleTransferService"].full_name
HEALTH_SERVICE: str = health.SERVICE_NAME
#: The overall entry "" (what Kubernetes' grpc probe asks by default) and the API service.
SERVICES: tuple[str, ...] = (health.OVERALL_HEALTH, API_SERVICE)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthState:
    """Starts NOT_SERVING; SERVING once the model is ready; NOT_SERVING for good once draining."""

    def __init__(self) -> None:
        # Non-blocking Watch: a watcher does not pin one of the server's handler threads.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="health")
        self.servicer = health.HealthServicer(
            experimental_non_blocking=True, experimental_thread_pool=self._pool
        )
        self._set(_NOT_SERVING)

    def _set(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for service in SERVICES:
            self.servicer.set(service, status)

    def serving(self) -> None:
        """The model is loaded and warm: accept work."""
        self._set(_SERVING)

    def not_serving(self) -> None:
        """Temporarily unable to serve (e.g. the model failed to load)."""
        self._set(_NOT_SERVING)

    def drain(self) -> None:
        """NOT_SERVING permanently: later `serving()` calls are ignored."""
        self.servicer.enter_graceful_shutdown()

    def add_to_server(self, server: grpc.Server) -> None:
        """Register the Health service on `server`."""
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    def close(self) -> None:
        """Release the watcher thread pool."""
        self._pool.shutdown(wait=False)


__all__ = ["API_SERVICE", "HEALTH_SERVICE", "SERVICES", "HealthState"]
