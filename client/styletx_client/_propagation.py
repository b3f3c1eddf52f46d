"""What travels with every call besides the SDK's own headers: the caller's trace context and
the extra metadata given to the client.

The trace context goes out through OpenTelemetry's global propagator (W3C `traceparent`,
`tracestate` and `baggage` unless OTEL_PROPAGATORS says otherwise), taken from the context current
when the call starts, so a server span joins the caller's trace. The SDK depends on the
OpenTelemetry API only: without an SDK configured by the application there is no current span
and nothing is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate

from styletx_api.wire import CALL_METADATA_KEYS

if TYPE_CHECKING:  # grpc's interceptor classes are generic only in its type stubs
    import grpc

    ClientInterceptor = (
        grpc.UnaryUnaryClientInterceptor[Any, Any]
        | grpc.UnaryStreamClientInterceptor[Any, Any]
        | grpc.StreamUnaryClientInterceptor[Any, Any]
        | grpc.StreamStreamClientInterceptor[Any, Any]
    )

MetadataValue = str | bytes
Metadatum = tuple[str, MetadataValue]

#: Keys the SDK sets from its own arguments (request_id, request_key, token).
RESERVED_KEYS = CALL_METADATA_KEYS


def trace_metadata() -> list[tuple[str, str]]:
    """The current trace context as metadata ([] when nothing is being traced)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return sorted(carrier.items())


def check_metadata(metadata: Sequence[Metadatum]) -> tuple[Metadatum, ...]:
    """`metadata` as a tuple, or ValueError/TypeError naming the first entry gRPC (or the SDK)
    would refuse: keys lowercase and not reserved, `-bin` keys with bytes, others with str."""
    checked: list[Metadatum] = []
    for entry in metadata:
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)):
            raise TypeError(f"metadata entries are (key, value) pairs, not {entry!r}")
        key, value = entry
        if not key or key != key.lower() or key.startswith(("grpc-", ":")):
            raise ValueError(f"metadata key {key!r}: lowercase, and not grpc- or : prefixed")
        if key in RESERVED_KEYS:
            raise ValueError(
                f"metadata key {key!r} is set by the client: use its request_id, request_key "
                "or token argument"
            )
        wanted = bytes if key.endswith("-bin") else str
        if not isinstance(value, wanted):
            raise TypeError(f"metadata {key!r} takes a {wanted.__name__} value")
        checked.append((key, value))
    return tuple(checked)


__all__ = ["RESERVED_KEYS", "Metadatum", "check_metadata", "trace_metadata"]
