"""`grpc.health.v1` status of the server ("" and the API service move together).

The asyncio servicer answers on the event loop, which Stylize calls never block, so probes never
wait behind stylizations; a Watch stream costs no thread.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from styletx_api.v1 import style_transfer_pb2 as pb

API_SERVICE = pb.DESCRIPTOR.services_by_name["StyleTransferService"].full_name
HEALTH_SERVICE: str = health.SERVICE_NAME
#: The overall entry "" (what Kubernetes' grpc probe asks by default) and the API service.
SERVICES: tuple[str, ...] = (health.OVERALL_HEALTH, API_SERVICE)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthState:
    """NOT_SERVING until `serving()`; NOT_SERVING for good once draining. Use on the loop."""

    def __init__(self) -> None:
        self.servicer = health_aio.HealthServicer()

    async def _set(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for service in SERVICES:
            await self.servicer.set(service, status)

    async def not_serving(self) -> None:
        """Not able to serve (yet): the model is loading, or it failed to load."""
        await self._set(_NOT_SERVING)

    async def serving(self) -> None:
        """The model is loaded and warm: accept work."""
        await self._set(_SERVING)

    async def drain(self) -> None:
        """NOT_SERVING permanently: later `serving()` calls are ignored."""
        await self.servicer.enter_graceful_shutdown()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register the Health service on `server`."""
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)


__all__ = ["API_SERVICE", "HEALTH_SERVICE", "SERVICES", "HealthState"]
