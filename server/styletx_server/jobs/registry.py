"""The job registry: running jobs and recent results by the caller's request key.

Keys are per tenant: the registry files a job under its tenant's name and the key
(`job.scoped_key`), so a tenant never finds, and cannot learn of, another tenant's job.

A call with a new key creates a job; a call with a known key attaches to the running job or gets
the stored result at once, so a caller that lost its stream (a dropped connection, a restart)
never pays for a second computation. Results are kept for a TTL, bounded by count and bytes
shared among tenants (`shares.FairStore`: over a bound, the tenant holding the most gives up its
oldest, so a tenant's results make room only for its own or for a tenant holding fewer; the
record of a result dropped so says `Gone.EVICTED`). A key sent with a different computation is
an error (compared by digest);
fields that only say how the result is delivered (`DELIVERY_FIELDS`) are left out of the digest,
so a caller that changes only those attaches and gets the result in its own encoding. How each
keyed job ended (failed and cancelled ones too) is recorded for the same TTL (`ended`), for
GetJob, WatchJob and CancelJob.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.jobs.job import StylizeJob
from styletx_server.jobs.mailbox import Final
from styletx_server.jobs.shares import FairStore
from styletx_server.jobs.views import EndedJobs, Gone

#: What the API allows in `request_key` (see the proto): printable, URL- and metadata-safe.
_KEY = re.compile(r"[A-Za-z0-9._~:-]{1,128}")


#: What a request key must be, as a refusal says it.
KEY_RULE = "must be 1-128 characters of [A-Za-z0-9._~:-]"


def valid_key(key: str) -> bool:
    """True when `key` matches `KEY_RULE`."""
    return _KEY.fullmatch(key) is not None


#: StylizeRequest fields that say how the result is delivered, not what is computed.
DELIVERY_FIELDS = frozenset({"output_format", "output_quality", "preview_every"})


def request_digest(request: pb.StylizeRequest) -> bytes:
    """SHA-256 of what defines the computation: every set field but `DELIVERY_FIELDS`, each
    serialized deterministically and length-prefixed (no copy of a large request is made)."""
    digest = hashlib.sha256()
    for descriptor, value in request.ListFields():
        if descriptor.name in DELIVERY_FIELDS:
            continue
        for item in value if descriptor.is_repeated else [value]:
            data = _field_bytes(item)
            digest.update(f"{descriptor.number}:{len(data)}:".encode())
            digest.update(data)
    return digest.digest()


def _field_bytes(value: object) -> bytes:
    if isinstance(value, Message):
        return value.SerializeToString(deterministic=True)
    if isinstance(value, bytes):
        return value
    return repr(value).encode()


@dataclass(frozen=True)
class StoredResult:
    """A finished keyed job's final event, kept for callers that re-attach."""

    digest: bytes
    final: Final
    size: int
    expires: float


class JobRegistry:
    """Keyed running jobs and stored results; thread-safe (workers finish jobs)."""

    def __init__(
        self,
        *,
        result_ttl: float,
        max_results: int,
        max_result_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        self._ttl = result_ttl
        self._max_results = max_results
        self._max_bytes = max_result_bytes
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._running: dict[str, StylizeJob] = {}
        self._results: FairStore[StoredResult] = FairStore(max_results, max_result_bytes)
        #: How each keyed job ended, kept for the result TTL (no images).
        self.ended = EndedJobs(result_ttl, clock=clock)

    # -- queries -------------------------------------------------------------------------------

    def lookup(self, key: str) -> StylizeJob | StoredResult | None:
        """The running job or the stored result for `key`, if any."""
        with self._lock:
            self._expire()
            return self._running.get(key) or self._results.get(key)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    @property
    def stored(self) -> tuple[int, int]:
        """(results, bytes) kept now."""
        with self._lock:
            self._expire()
            return len(self._results), self._results.size

    # -- changes -------------------------------------------------------------------------------

    def add(self, job: StylizeJob) -> None:
        """Register a new keyed job (the caller checked `lookup` in the same loop step)."""
        key = job.registry_key
        assert key is not None
        with self._lock:
            if key in self._running:
                raise KeyError(f"a job with key {key!r} is already running")
            # A new run under a key replaces an old stored result (only possible after a retry
            # of a failed job, whose result was never stored, so this is just hygiene).
            self._results.pop(key)
            self._running[key] = job
        self.ended.drop(key)

    def finish(self, job: StylizeJob, final: Final) -> None:
        """`job` ended: forget it, and keep its result when it succeeded."""
        key = job.registry_key
        if key is None:
            return
        self.ended.add(job, final)
        with self._lock:
            if self._running.get(key) is job:
                del self._running[key]
            if final.response is None or job.digest is None or self._ttl <= 0:
                self._changed()
                return
            size = final.size
            if size > self._max_bytes or self._max_results < 1:
                self.ended.result_gone(key, Gone.NOT_KEPT)
                self._changed()
                return
            stored = StoredResult(job.digest, final, size, self._clock() + self._ttl)
            evicted = self._results.put(key, stored, expires=stored.expires, size=size)
            for gone, _ in evicted:
                self.ended.result_gone(gone, Gone.EVICTED)
            self._changed()

    def _expire(self) -> None:
        if self._results.expire(self._clock()):
            self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(len(self._results), self._results.size)


__all__ = ["KEY_RULE", "JobRegistry", "StoredResult", "request_digest", "valid_key"]
