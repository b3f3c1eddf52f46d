"""Typed Python client SDK for the styletx neural style transfer service.

from styletx_client import StyleTransferClient

with StyleTransferClient("localhost:50051") as client:
    client.stylize("photo.jpg", "starry_night.jpg", size=512).save("out.png")
"""

from ._channel import DEFAULT_MAX_MESSAGE_BYTES, ChannelOption, TlsConfig
from ._retry import NO_RETRY, RETRY_INFO_JITTER, RetryPolicy, RetryThrottling
from ._version import __version__
from .aio import AsyncEventStream, AsyncStyleTransferClient
from .client import EventStream, StyleTransferClient
from .errors import (
    ERROR_DOMAIN,
    AuthenticationError,
    CancelledError,
    DeadlineExceededError,
    FieldViolation,
    InvalidRequestError,
    JobNotFoundError,
    OutOfMemoryError,
    Reason,
    RequestKeyReusedError,
    ServerBusyError,
    ServiceError,
    UnavailableError,
    from_rpc_error,
)
from .events import (
    EncodedImage,
    Event,
    Losses,
    Progress,
    Queued,
    ResolvedOptions,
    Result,
    Started,
)
from .health import SERVICE_NAME, ServingStatus
from .jobs import JobInfo, JobState
from .options import (
    ImageFormat,
    ImageInput,
    InitMethod,
    PILImageLike,
    Style,
    StyleInput,
    Styles,
    StylizeOptions,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ERROR_DOMAIN",
    "NO_RETRY",
    "RETRY_INFO_JITTER",
    "SERVICE_NAME",
    "AsyncEventStream",
    "AsyncStyleTransferClient",
    "AuthenticationError",
    "CancelledError",
    "ChannelOption",
    "DeadlineExceededError",
    "EncodedImage",
    "Event",
    "EventStream",
    "FieldViolation",
    "ImageFormat",
    "ImageInput",
    "InitMethod",
    "InvalidRequestError",
    "JobInfo",
    "JobNotFoundError",
    "JobState",
    "Losses",
    "OutOfMemoryError",
    "PILImageLike",
    "Progress",
    "Queued",
    "Reason",
    "RequestKeyReusedError",
    "ResolvedOptions",
    "Result",
    "RetryPolicy",
    "RetryThrottling",
    "ServerBusyError",
    "ServiceError",
    "ServingStatus",
    "Started",
    "Style",
    "StyleInput",
    "StyleTransferClient",
    "Styles",
    "StylizeOptions",
    "TlsConfig",
    "UnavailableError",
    "__version__",
    "from_rpc_error",
]
