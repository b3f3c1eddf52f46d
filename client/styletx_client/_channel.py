"""Channel settings shared by the sync and asyncio clients: target, options, credentials, auth."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from styletx_api.wire import AUTHORIZATION_KEY, BEARER_SCHEME, REQUEST_ID_KEY, REQUEST_KEY_KEY

from ._propagation import Metadatum, check_metadata, trace_metadata
from ._retry import RetryPolicy
from ._version import __version__

DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""Matches the server's default --max-message-bytes; gRPC's own 4 MiB is too small for images."""

ChannelOption = tuple[str, str | int]

RECONNECT_BACKOFF_MS = (250, 2000)
"""gRPC's reconnect backoff, first and longest (ms): a server back from a restart is reached
within about 2 s (gRPC's defaults, 1 s growing to 120 s, would leave it unused for minutes)."""


def normalize_target(target: str) -> str:
    """Accept `host:port`, any gRPC URI, or `ip:port,ip:port` (made an `ipv4:`/`ipv6:` URI)."""
    target = target.strip()
    if not target:
        raise ValueError("the server target is empty; expected host:port")
    if "," not in target or _scheme(target) is not None:
        return target
    parts = [part.strip() for part in target.split(",")]
    versions = {ipaddress.ip_address(_host_of(part)).version for part in parts}
    if len(versions) != 1:
        raise ValueError(f"cannot mix IPv4 and IPv6 addresses in one target: {target}")
    return f"ipv{versions.pop()}:{','.join(parts)}"


_KNOWN_SCHEMES = frozenset({"dns", "ipv4", "ipv6", "unix", "unix-abstract", "vsock", "xds"})


def _scheme(target: str) -> str | None:
    """The URI scheme of a gRPC target (`dns`, `ipv4`, ...), or None for a plain host:port."""
    head, sep, rest = target.partition(":")
    if sep and (head.lower() in _KNOWN_SCHEMES or rest.startswith("//")):
        return head.lower()
    return None


def _host_of(address: str) -> str:
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{address!r}: a comma-separated target takes IP addresses only; "
            "use dns:///name:port for a host name with several addresses"
        ) from None
    return host


def is_multi_address(target: str) -> bool:
    """True when the target resolves to several backends: an address list or a DNS name."""
    scheme = _scheme(target)
    return scheme == "dns" or (scheme in ("ipv4", "ipv6") and "," in target)


def channel_options(
    target: str,
    *,
    lb_policy: str | None,
    max_message_bytes: int,
    extra: Sequence[ChannelOption],
) -> list[ChannelOption]:
    """gRPC channel arguments: message limits, user agent, load balancing, then caller's extras.

    `lb_policy` None means gRPC's `round_robin` for a target with several backends (an address
    list or a `dns:` name such as a headless Service: every call, retry and re-attach goes to the
    next ready replica, which a fleet allows) and gRPC's default `pick_first` otherwise. gRPC
    resolves a `dns:` name again when a connection closes, so the server's max connection age
    (GOAWAY) is what brings new replicas into the rotation.
    """
    options: list[ChannelOption] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.primary_user_agent", f"styletx-client/{__version__}"),
        # gRPC waits up to 120 s between reconnects to a server that went away, and fails
        # calls at once meanwhile: a restarted server would be found long after it is back.
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
    ]
    policy = lb_policy or ("round_robin" if is_multi_address(target) else None)
    if policy:
        options.append(("grpc.lb_policy_name", policy))
    overridden = {name for name, _ in extra}
    return [o for o in options if o[0] not in overridden] + list(extra)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """PEM material for a TLS channel; all None means the system's root certificates.

    `root_certificates` are the CAs that verify the server (None: the system's). For mutual TLS
    (a server started with a client CA), `private_key` and `certificate_chain` are this client's
    key and certificate chain, given together.
    """

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None

    def __post_init__(self) -> None:
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("mutual TLS needs both private_key and certificate_chain (or neither)")
        for name in ("root_certificates", "private_key", "certificate_chain"):
            value = getattr(self, name)
            if value is not None and b"-----BEGIN " not in value:
                raise ValueError(f"{name} is not PEM data (no -----BEGIN line)")

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def resolve_credentials(
    credentials: grpc.ChannelCredentials | None,
    tls: bool | TlsConfig,
) -> grpc.ChannelCredentials | None:
    """Channel credentials to use, or None for a plaintext channel."""
    if credentials is not None:
        return credentials
    if isinstance(tls, TlsConfig):
        return tls.credentials()
    return grpc.ssl_channel_credentials() if tls else None


def call_metadata(
    token: str | None, request_id: str, request_key: str = "", extra: Sequence[Metadatum] = ()
) -> tuple[Metadatum, ...]:
    """Per-call metadata: the request id the server logs, the request key (so a proxy or mesh can
    route every call of one key to one replica by hashing a header), the bearer token when
    auth is on, the client's `extra` metadata, and the current trace context (`traceparent`).

    Sent as plain metadata rather than call credentials, which gRPC refuses on plaintext channels
    (a TLS-terminating proxy in front of the server is a common deployment).
    """
    metadata: list[Metadatum] = [(REQUEST_ID_KEY, request_id)]
    if request_key:
        metadata.append((REQUEST_KEY_KEY, request_key))
    if token:
        metadata.append((AUTHORIZATION_KEY, f"{BEARER_SCHEME} {token}"))
    metadata.extend(extra)
    metadata.extend(trace_metadata())
    return tuple(metadata)


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Everything a client needs besides its channel objects; built once by `make_settings`."""

    target: str
    lb_policy: str | None
    max_message_bytes: int
    extra_options: tuple[ChannelOption, ...]
    credentials: grpc.ChannelCredentials | None
    token: str | None
    timeout: float | None
    retry: RetryPolicy
    #: Sent with every call, after the SDK's own keys (`metadata=` of the clients).
    metadata: tuple[Metadatum, ...] = ()

    def channel_options(self) -> list[ChannelOption]:
        """Channel arguments of the client's channel: the SDK's, then the caller's extras."""
        return channel_options(
            self.target,
            lb_policy=self.lb_policy,
            max_message_bytes=self.max_message_bytes,
            extra=self.extra_options,
        )


def make_settings(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None,
    tls: bool | TlsConfig,
    token: str | None,
    timeout: float | None,
    retry: RetryPolicy | None,
    lb_policy: str | None,
    max_message_bytes: int,
    options: Sequence[ChannelOption],
    metadata: Sequence[Metadatum] = (),
) -> ClientSettings:
    """Validate the constructor arguments shared by the sync and asyncio clients."""
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be > 0 seconds (or None for no deadline)")
    if max_message_bytes <= 0:
        raise ValueError("max_message_bytes must be > 0")
    normalized = normalize_target(target)
    return ClientSettings(
        target=normalized,
        lb_policy=lb_policy,
        max_message_bytes=max_message_bytes,
        extra_options=tuple(options),
        credentials=resolve_credentials(credentials, tls),
        token=token,
        timeout=timeout,
        retry=retry if retry is not None else RetryPolicy(),
        metadata=check_metadata(metadata),
    )
