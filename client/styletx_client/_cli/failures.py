"""An SDK error as an exit code and a message a shell user can act on."""

from __future__ import annotations

from styletx_client.errors import (
    AuthenticationError,
    DeadlineExceededError,
    InvalidRequestError,
    JobNotFoundError,
    OutOfMemoryError,
    RequestKeyReusedError,
    ServerBusyError,
    ServiceError,
    UnavailableError,
)

from .common import (
    EXIT_AUTH,
    EXIT_DEADLINE,
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_OUT_OF_MEMORY,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)


def describe(error: ServiceError, server: str) -> tuple[int, str]:
    """Exit code and a message a shell user can act on, for an SDK error."""
    rid = f" (request id {error.request_id})" if error.request_id else ""
    resume = (
        f" The job may still run: re-run with --request-key {error.request_key} to attach to it."
        if error.request_key
        else ""
    )
    if isinstance(error, OutOfMemoryError):
        return EXIT_OUT_OF_MEMORY, (
            f"the server ran out of memory for this job{rid}: {error.message}. Retrying will not "
            "help: lower --size, --style-scale or --scales, or send fewer or smaller style images"
        )
    if isinstance(error, JobNotFoundError):
        return EXIT_NOT_FOUND, f"no such job on {server}: {error.message}{rid}"
    if isinstance(error, RequestKeyReusedError):
        return EXIT_USAGE, (
            f"the request key {error.request_key or ''} already belongs to a different request"
            f"{rid}; send this one with a new --request-key (or none)"
        )
    if isinstance(error, InvalidRequestError):
        lines = [f"the server rejected the request: {error.message}{rid}"]
        lines += [f"  {v.field}: {v.description}" for v in error.field_violations]
        return EXIT_USAGE, "\n".join(lines)
    if isinstance(error, ServerBusyError):
        wait = (
            f"retry in {error.retry_after:g}s" if error.retry_after is not None else "retry later"
        )
        return EXIT_UNAVAILABLE, (
            f"the server at {server} is busy (its queue is full); {wait}, "
            f"raise --max-attempts or add replicas{rid}: {error.message}"
        )
    if isinstance(error, UnavailableError) and _is_tls_failure(error.message):
        return EXIT_UNAVAILABLE, (
            f"the TLS handshake with {server} failed: {error.message}. Check --ca-cert, "
            f"--tls-server-name, and --client-cert/--client-key if the server requires them.{rid}"
        )
    if isinstance(error, UnavailableError):
        return EXIT_UNAVAILABLE, (
            f"cannot reach a styletx server at {server}: {error.message}. Is it running and "
            "listening there? Set --server or STYLETX_SERVER (and --tls or --ca-cert if it uses "
            f"TLS, --client-cert and --client-key if it requires mutual TLS).{rid}{resume}"
        )
    if isinstance(error, DeadlineExceededError):
        return EXIT_DEADLINE, (
            f"the call did not finish within its deadline{rid}; raise --timeout, "
            f"or lower --size or --max-evaluations.{resume}"
        )
    if isinstance(error, AuthenticationError):
        return EXIT_AUTH, (
            f"the server refused the credentials ({error.code.name}: {error.message}); "
            f"pass --token or set STYLETX_TOKEN{rid}"
        )
    return EXIT_FAILURE, f"the call failed: {error}"


def _is_tls_failure(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in ("handshake", "ssl", "certificate", "tls"))
