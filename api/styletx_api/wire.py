"""What the styletx.v1 API puts on the wire beside its messages: the ErrorInfo domain, the call
metadata keys, the authorization scheme.

The proto (`styletx_api.v1`) declares the messages, the service and the `ErrorReason` values;
these names travel in gRPC metadata and in `google.rpc` details, where no proto declares them.
The server (`styletx-server`) and the SDK (`styletx-client`) both read them from here, so the
two sides cannot drift apart. Metadata keys are lower case, as gRPC requires.
"""

from __future__ import annotations

from typing import Final

ERROR_DOMAIN: Final = "styletx.v1"
"""`google.rpc.ErrorInfo.domain` of every error status the server sends; its `reason` is an
`ErrorReason` value (`styletx_api.v1.style_options.ErrorReason`). The proto's package name."""

REQUEST_ID_KEY: Final = "x-request-id"
"""Call metadata: the caller's request id. The server logs it (or one of its own when the
caller's is missing or unusable) and echoes it in the initial metadata."""

REQUEST_KEY_KEY: Final = "x-request-key"
"""Call metadata: the request key of a keyed call (also `StylizeRequest.request_key`), sent as a
header so a proxy or service mesh can route every call of one key to one replica."""

AUTHORIZATION_KEY: Final = "authorization"
"""Call metadata: the credentials, `Bearer <token>`, when the server requires a token."""

BEARER_SCHEME: Final = "Bearer"
"""The `authorization` scheme (matched case-insensitively by the server, RFC 7235)."""

STATUS_DETAILS_KEY: Final = "grpc-status-details-bin"
"""Trailing metadata: gRPC's rich error model, a serialized `google.rpc.Status` whose details
hold the ErrorInfo (`ERROR_DOMAIN`), and RetryInfo or BadRequest where they apply."""

CALL_METADATA_KEYS: Final = frozenset({REQUEST_ID_KEY, REQUEST_KEY_KEY, AUTHORIZATION_KEY})
"""The metadata keys the API itself gives a meaning to on a call."""

__all__ = [
    "AUTHORIZATION_KEY",
    "BEARER_SCHEME",
    "CALL_METADATA_KEYS",
    "ERROR_DOMAIN",
    "REQUEST_ID_KEY",
    "REQUEST_KEY_KEY",
    "STATUS_DETAILS_KEY",
]
