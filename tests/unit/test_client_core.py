"""The shared core's decisions, without a network: keys, event de-duplication, retry, re-attach
Both transports drive exactly these objects."""

from __future__ import annotations

import random
import uuid

import grpc
import pytest
from google.protobuf.message import Message

from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_client import (
    CancelledError,
    InvalidRequestError,
    OutOfMemoryError,
    Reason,
    RetryPolicy,
    RetryThrottling,
    ServerBusyError,
    ServiceError,
    UnavailableError,
)
from styletx_client._channel import make_settings
from styletx_client._core import Attempt, ClientCore, StylizeCall
from tests.support.fake_server import error_info, progress, queued, result, retry_info, started
from tests.unit.test_client_errors import FakeRpcError, status_trailer

ADDRESSES = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]


def core(target: str = "127.0.0.1:1", **retry: object) -> ClientCore[str]:
    settings = make_settings(
        target,
        credentials=None,
        tls=False,
        token="tok",
        timeout=None,
        retry=RetryPolicy(**retry),  # type: ignore[arg-type]
        lb_policy=None,
        max_message_bytes=1024,
        options=(),
    )

    def connect(target: str, options: object, credentials: object) -> str:
        return target

    return ClientCore(settings, connect, clock=lambda: 0.0, rng=random.Random(0))


def call(client: ClientCore[str], key: str | None = "k") -> StylizeCall[str]:
    return client.start(b"c", b"s", {"size": 64}, timeout=None, request_id="rid", request_key=key)


def rpc_error(code: grpc.StatusCode, *details: Message) -> FakeRpcError:
    return FakeRpcError(code, "x", trailing=[status_trailer(code, *details)] if details else [])


RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
UNAVAILABLE = rpc_error(grpc.StatusCode.UNAVAILABLE)
DRAINING = rpc_error(grpc.StatusCode.UNAVAILABLE, error_info(Reason.DRAINING))
BUSY = rpc_error(
    grpc.StatusCode.RESOURCE_EXHAUSTED, error_info(Reason.QUEUE_FULL), retry_info(0.01)
)


def feed(attempt: Attempt[str], *messages: pb.StylizeResponse) -> list[object]:
    return [e for e in (attempt.receive(m) for m in messages) if e is not None]


def test_a_call_carries_a_fresh_uuid4_key_unless_given_one() -> None:
    client = core()
    first, second = call(client, None), call(client, None)
    assert uuid.UUID(first.request_key).version == 4
    assert first.request_key != second.request_key
    assert first.request.request_key == first.request_key
    assert call(client, "mine").request.request_key == "mine"
    assert call(client, "").request.request_key == ""
    assert first.request.options.size == 64
    assert dict(first.metadata) == {
        "x-request-id": "rid",
        "x-request-key": first.request_key,
        "authorization": "Bearer tok",
    }
    # No key, no header (a proxy hashing on it then balances the call freely).
    assert "x-request-key" not in dict(call(client, "").metadata)


def test_a_key_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(TypeError, match="request_key"):
        call(core(), 42)  # type: ignore[arg-type]


def test_a_reattached_stream_delivers_nothing_twice() -> None:
    c = call(core())
    first = c.next_attempt()
    seen = feed(first, queued(2), queued(1), started(), progress(1, 2), progress(2, 4))
    assert first.fail(UNAVAILABLE) >= 0
    # The job's current state (Started, latest progress), then the rest.
    again = c.next_attempt()
    seen += feed(again, queued(1), started(), progress(2, 4), progress(3, 6), result())
    kinds = [type(e).__name__ for e in seen]
    assert kinds == ["Queued", "Queued", "Started", "Progress", "Progress", "Progress", "Result"]
    assert [getattr(e, "iteration", None) for e in seen][3:6] == [1, 2, 3]


def test_before_the_first_event_busy_and_unavailable_are_retried() -> None:
    c = call(core())
    busy = rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_info(2), error_info("QUEUE_FULL"))
    assert 2.0 <= c.next_attempt().fail(busy) <= 3.0
    assert c.next_attempt().fail(UNAVAILABLE) >= 0.0


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (rpc_error(grpc.StatusCode.INVALID_ARGUMENT), InvalidRequestError),
        (rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED), OutOfMemoryError),
        (
            rpc_error(
                grpc.StatusCode.RESOURCE_EXHAUSTED, retry_info(1), error_info("OUT_OF_MEMORY")
            ),
            OutOfMemoryError,
        ),
        (rpc_error(grpc.StatusCode.INTERNAL), ServiceError),
    ],
)
def test_final_errors_are_raised_at_once(error: FakeRpcError, expected: type[Exception]) -> None:
    with pytest.raises(expected):
        call(core()).next_attempt().fail(error)


def test_mid_stream_only_unavailable_with_a_key_re_attaches() -> None:
    keyed = call(core())
    attempt = keyed.next_attempt()
    feed(attempt, started())
    assert attempt.fail(UNAVAILABLE) >= 0
    internal = call(core()).next_attempt()
    feed(internal, started())
    with pytest.raises(ServiceError):
        internal.fail(rpc_error(grpc.StatusCode.INTERNAL))
    keyless = call(core(), "").next_attempt()
    feed(keyless, started())
    with pytest.raises(UnavailableError):
        keyless.fail(UNAVAILABLE)


def test_a_draining_replica_mid_stream_sends_a_keyed_call_to_the_next_attempt() -> None:
    """In a fleet any replica holds the job: a replica that leaves mid-stream costs a re-attach
    through the same round-robin channel (gRPC picks the next replica), not the call."""
    client = core("ipv4:" + ",".join(ADDRESSES))
    c = call(client, "k")
    draining = c.next_attempt()
    feed(draining, started())
    assert draining.fail(DRAINING) >= 0
    again = c.next_attempt()
    assert again.connection == client.connection == "ipv4:" + ",".join(ADDRESSES)
    assert feed(again, started(), progress(1, 1)) != []


def test_a_closed_client_starts_no_attempt() -> None:
    client = core()
    c = call(client, "k")
    assert client.close() == "127.0.0.1:1"
    assert client.close() is None  # closed once
    with pytest.raises(CancelledError):
        c.next_attempt()


def test_the_retry_budget_is_shared_and_spared_by_unavailable_replicas() -> None:
    client = core(max_attempts=100, throttling=RetryThrottling(max_tokens=4, token_ratio=1))
    c = call(client)
    for _ in range(5):
        assert c.next_attempt().fail(DRAINING) >= 0  # a rollout costs no tokens
        assert c.next_attempt().fail(UNAVAILABLE) >= 0  # nor does a restart
    assert client.throttle.tokens == 4
    assert c.next_attempt().fail(BUSY) >= 0  # 4 -> 3: a server refused work
    with pytest.raises(ServerBusyError):
        call(client).next_attempt().fail(BUSY)  # 3 -> 2: at half, no more retries
    done = call(client).next_attempt()
    feed(done, started(), result())
    done.succeed()
    assert client.throttle.tokens == 3  # a completed call gives token_ratio back


def test_max_attempts_counts_failures_in_a_row_and_progress_starts_a_new_series() -> None:
    c = call(core(max_attempts=2, throttling=None, ride_out=0))
    assert c.next_attempt().fail(UNAVAILABLE) >= 0  # 1 in a row
    progressing = c.next_attempt()  # 2 in a row, but it delivers iteration 1: back to 1
    feed(progressing, progress(1, 1))
    assert progressing.fail(UNAVAILABLE) >= 0
    repeating = c.next_attempt()  # 2 in a row: only a repeat of iteration 1, no progress
    assert feed(repeating, progress(1, 1)) == []
    with pytest.raises(UnavailableError):
        repeating.fail(UNAVAILABLE)
