"""Why a call is refused before its job runs: one exception type per refusal, raised where it is
found (call slots, lifecycle, request key, intake, pixel budget, queue) and turned into a gRPC
status in one place (`statuses.for_refusal`), which the servicer aborts the call with."""

from __future__ import annotations

from dataclasses import dataclass

from styletx_api.v1.style_options import ErrorReason as Reason


class Refused(Exception):
    """Base of every refusal: the call ends before any work, with the matching status."""


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field, named by its path in StylizeRequest (e.g. `style_images[1].image`)."""

    field: str
    description: str


class TooManyCalls(Refused):
    """No call slot: the server holds `limit` calls (`per_caller` False) or this caller does."""

    def __init__(self, limit: int, *, per_caller: bool, server_limit: int = 0) -> None:
        who = "this caller holds" if per_caller else "the server holds"
        super().__init__(f"{who} {limit} calls")
        self.limit = limit
        self.per_caller = per_caller
        self.server_limit = server_limit or limit


class NotReady(Refused):
    """The model is still loading or warming up."""


class Draining(Refused):
    """The server is draining: it takes no new jobs."""


class InvalidKey(Refused):
    """The request key breaks the key rule."""

    def __init__(self, rule: str) -> None:
        super().__init__(f"request_key {rule}")
        self.rule = rule


class KeyReused(Refused):
    """The request key belongs to another request."""

    def __init__(self, key: str) -> None:
        super().__init__(f"request_key {key!r} belongs to another request")
        self.key = key


class JobNotFound(Refused):
    """No job with this request key here; `why` says what a caller can do about it."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"no job with request_key {key!r}: {why}")
        self.key = key
        self.why = why


class InvalidRequest(Refused):
    """The request breaks one or more rules; `violations` names every bad field.

    `limits` maps each exceeded server limit to its value. When every violation is a server limit
    the reason is LIMIT_EXCEEDED (a well-formed request asking for more work than this server
    does), otherwise INVALID_INPUT.
    """

    def __init__(
        self,
        violations: list[FieldViolation],
        limits: dict[str, int] | None = None,
        *,
        only_limits: bool = False,
    ) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations
        self.limits = dict(limits or {})
        self.reason = Reason.LIMIT_EXCEEDED if only_limits and self.limits else Reason.INVALID_INPUT

    @property
    def metadata(self) -> dict[str, str]:
        """ErrorInfo metadata: each exceeded limit and this server's value of it."""
        return {name: str(value) for name, value in self.limits.items()}


class OverBudget(Refused):
    """The request's pixels do not fit in what is left of the in-flight pixel budget now."""

    def __init__(self, wanted: int, available: int, limit: int) -> None:
        super().__init__(
            f"{wanted} pixels wanted, {available} of {limit} free in the in-flight pixel budget"
        )
        self.wanted = wanted
        self.available = available
        self.limit = limit


class QueueFull(Refused):
    """The queue holds `capacity` waiting jobs already."""

    def __init__(self, capacity: int, retry_after: float) -> None:
        super().__init__(f"all {capacity} queue slots are taken")
        self.capacity = capacity
        self.retry_after = retry_after


class TenantQuota(Refused):
    """The caller's tenant holds `limit` of what its `quota` bounds (`max_queued` waiting jobs,
    `max_calls` open calls) already."""

    def __init__(self, tenant: str, quota: str, limit: int, retry_after: float) -> None:
        super().__init__(f"tenant {tenant!r} is at its {quota} of {limit}")
        self.tenant = tenant
        self.quota = quota
        self.limit = limit
        self.retry_after = retry_after


class Unauthenticated(Refused):
    """No tenant for the caller's credentials (the tokens file changed under the call)."""


class QueueClosed(Refused):
    """The queue no longer accepts jobs (the server is draining)."""


class StoreDown(Refused):
    """The shared job store did not answer in time (`store.protocol.StoreUnavailable`): nothing
    was admitted; a retry after `retry_after` seconds may get through."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


__all__ = [
    "Draining",
    "FieldViolation",
    "InvalidKey",
    "InvalidRequest",
    "JobNotFound",
    "KeyReused",
    "NotReady",
    "OverBudget",
    "QueueClosed",
    "QueueFull",
    "Reason",
    "Refused",
    "StoreDown",
    "TenantQuota",
    "TooManyCalls",
    "Unauthenticated",
]
