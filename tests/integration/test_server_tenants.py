"""Tenants through the real server and the SDK: the tokens file and its reload, mTLS subjects,
fair queueing across tenants, per-tenant quotas, keys per tenant, metrics by tenant."""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from styletx import StyleOptions
from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_client import (
    NO_RETRY,
    AuthenticationError,
    JobNotFoundError,
    ServerBusyError,
    StyleTransferClient,
)
from styletx_server.ops.app import StyletxServer
from tests.integration.conftest import (
    SIZE,
    WAIT,
    Consumer,
    GatedStylizer,
    ServerFactory,
    collect,
    has_retry_info,
    make_request,
    png,
    reason_of,
    rich_details,
    wait_for,
)
from tests.support.engines import WrappedEngine

_REQUEST_ID = re.compile(r"request id \w+")
TOKENS = """
[tenants.shop]
tokens = ["shop-token"]
max_queued = 1
max_calls = 2

[tenants.batch]
tokens = ["batch-token"]
"""

#: Both tenants without quotas of their own.
UNBOUNDED = '[tenants.shop]\ntokens = ["shop-token"]\n[tenants.batch]\ntokens = ["batch-token"]\n'


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def tokens_file(tmp_path: Path, text: str = TOKENS) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    return path


def client_for(server: StyletxServer, token: str) -> StyleTransferClient:
    return StyleTransferClient(
        f"127.0.0.1:{server.port}", token=token, timeout=WAIT, retry=NO_RETRY
    )


def stylize(client: StyleTransferClient, **kwargs: Any) -> Any:
    return client.stylize(
        png(48, 64, 1), png(40, 40, 2), size=SIZE, max_evaluations=2, seed=7, **kwargs
    )


def requests_of(server: StyletxServer, tenant: str, method: str = "Stylize") -> float:
    labels = {"method": method, "code": "OK", "reason": "ok", "tenant": tenant}
    return server.metrics.registry.get_sample_value("styletx_requests_total", labels) or 0.0


def test_the_tokens_file_names_the_tenant_and_its_changes_apply_once_parsed(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    path = tokens_file(tmp_path)
    server = server_factory(auth_tokens_file=path)
    with client_for(server, "shop-token") as shop, client_for(server, "batch-token") as batch:
        stylize(shop)
        stylize(batch)
        assert requests_of(server, "shop") == 1 and requests_of(server, "batch") == 1
        # The operator rotates shop's token and adds a tenant: no restart. A thread parses the
        # file (never a call); the mapping applies from then on.
        path.write_text(TOKENS.replace("shop-token", "shop-token-2") + "[tenants.new]\n"
                        'tokens = ["new-token"]\n')  # fmt: skip
        assert server.tenants.settle(WAIT)
        with pytest.raises(AuthenticationError):
            stylize(shop)
        with client_for(server, "shop-token-2") as rotated, client_for(server, "new-token") as new:
            stylize(rotated)
            stylize(new)
        assert requests_of(server, "shop") == 2 and requests_of(server, "new") == 1
        # A file that does not parse keeps the mapping in force.
        path.write_text("[tenants.broken\n")
        assert server.tenants.settle(WAIT)
        stylize(batch)
        assert requests_of(server, "batch") == 2


def test_auth_token_keeps_working_beside_the_file_as_the_default_tenant(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(auth_tokens_file=tokens_file(tmp_path), auth_token="legacy")
    with client_for(server, "legacy") as legacy, client_for(server, "wrong") as wrong:
        stylize(legacy)
        with pytest.raises(AuthenticationError):
            stylize(wrong)
    assert requests_of(server, "default") == 1


class OrderedStylizer(WrappedEngine):
    """Records the seed of each job as it starts; the first job waits for `release()`."""

    def __init__(self, engine: Stylizer) -> None:
        super().__init__(engine)
        self.order: list[int] = []
        self.first = threading.Event()
        self.gate = threading.Event()

    def job_starting(self, options: StyleOptions | None) -> StyleOptions | None:
        assert options is not None
        self.order.append(options.seed)
        if len(self.order) == 1:
            self.first.set()
            assert self.gate.wait(WAIT)
        return options


def test_a_flooding_tenant_delays_anothers_first_job_by_at_most_one_job(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any, tmp_path: Path
) -> None:
    engine = OrderedStylizer(stylizer)
    flood = 8
    server = server_factory(
        engine=engine,
        auth_tokens_file=tokens_file(tmp_path, UNBOUNDED),
        queue_size=flood + 2,
        max_calls=flood + 4,
        max_peer_share=1.0,
    )
    stub = stub_for(server)

    def request(seed: int) -> pb.StylizeRequest:
        return make_request(options=pb.StyleOptions(size=SIZE, max_evaluations=2, seed=seed))

    # Shop's first job alone, so that it is the one running; then the rest of the flood.
    shop = [Consumer(stub, request(100), metadata=bearer("shop-token"))]
    assert engine.first.wait(WAIT)
    shop += [
        Consumer(stub, request(100 + i), metadata=bearer("shop-token")) for i in range(1, flood)
    ]
    wait_for(lambda: server.admission.waiting == flood - 1)
    wait_for(lambda: all(job.ready for job in server.admission.waiting_jobs()))
    with client_for(server, "batch-token") as batch:
        worker = threading.Thread(target=lambda: stylize(batch, request_key="b-1"), daemon=True)
        worker.start()
        wait_for(lambda: server.admission.waiting == flood)
        # It goes straight to the head of the line: position 1 of `flood` waiting jobs.
        assert batch.get_job("b-1").position == 1  # type: ignore[attr-defined]
        engine.gate.set()
        worker.join(WAIT)
    for consumer in shop:
        assert consumer.code() == grpc.StatusCode.OK
    # One of shop's jobs (the one running when batch's arrived) went before it.
    assert engine.order[:2] == [100, 7]
    # The rest in the order their calls arrived, which concurrent calls do not fix.
    assert sorted(engine.order[2:]) == list(range(101, 100 + flood))


def test_over_quota_calls_get_resource_exhausted_with_their_reason_and_retry_info(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any, tmp_path: Path
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(
        engine=gated,
        auth_tokens_file=tokens_file(tmp_path),
        queue_size=8,
        max_calls=8,
        max_peer_share=1.0,
    )
    stub = stub_for(server)
    shop = bearer("shop-token")
    running = Consumer(stub, make_request(), metadata=shop)
    assert gated.paused.wait(WAIT)
    # max_calls = 2: the second call is open and its job waits (max_queued = 1) ...
    waiting = Consumer(stub, make_request(), metadata=shop)
    wait_for(lambda: server.admission.waiting == 1)
    # ... a third call gets no call slot.
    with pytest.raises(grpc.RpcError) as calls:
        collect(stub, make_request(), metadata=shop)
    assert calls.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(calls.value) == "TENANT_QUOTA" and has_retry_info(calls.value)
    info = rich_details(calls.value)[0]
    assert dict(info.metadata) == {"tenant": "shop", "quota": "max_calls", "max_calls": "2"}
    # Unary calls take no slot: GetJob still answers. Another tenant is not held back.
    with client_for(server, "batch-token") as batch:
        other = threading.Thread(target=lambda: stylize(batch), daemon=True)
        other.start()
        wait_for(lambda: server.admission.waiting == 2)
        gated.release()
        other.join(WAIT)
    assert running.code() == waiting.code() == grpc.StatusCode.OK


def test_max_queued_refuses_the_tenants_next_job_through_the_sdk(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any, tmp_path: Path
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(
        engine=gated,
        auth_tokens_file=tokens_file(tmp_path, TOKENS.replace("max_calls = 2", "max_calls = 8")),
        queue_size=8,
        max_calls=8,
        max_peer_share=1.0,
    )
    stub = stub_for(server)
    held = [Consumer(stub, make_request(), metadata=bearer("shop-token"))]
    assert gated.paused.wait(WAIT)
    held.append(Consumer(stub, make_request(), metadata=bearer("shop-token")))
    wait_for(lambda: server.admission.waiting == 1)
    with client_for(server, "shop-token") as shop, pytest.raises(ServerBusyError) as refused:
        stylize(shop)
    assert refused.value.reason == "TENANT_QUOTA"
    assert refused.value.retry_after is not None and refused.value.retry_after >= 1.0
    assert "max_queued of 1" in str(refused.value)
    labels = {"method": "Stylize", "code": "RESOURCE_EXHAUSTED", "reason": "tenant_quota"}
    labels["tenant"] = "shop"
    assert server.metrics.registry.get_sample_value("styletx_requests_total", labels) == 1
    gated.release()
    assert all(c.code() == grpc.StatusCode.OK for c in held)


def test_another_tenants_key_is_not_found_and_keys_are_per_tenant(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any, tmp_path: Path
) -> None:
    gated = GatedStylizer(stylizer)
    server = server_factory(
        engine=gated,
        auth_tokens_file=tokens_file(tmp_path),
        workers=2,
        max_peer_share=1.0,
    )
    stub = stub_for(server)
    running = Consumer(stub, make_request(request_key="order-1"), metadata=bearer("shop-token"))
    assert gated.paused.wait(WAIT)
    with client_for(server, "batch-token") as batch, client_for(server, "shop-token") as shop:
        assert shop.get_job("order-1").state == "running"
        unknown: list[str] = []
        for key in ("order-1", "never-used"):
            with pytest.raises(JobNotFoundError) as get:
                batch.get_job(key)
            with pytest.raises(JobNotFoundError) as cancel:
                batch.cancel_job(key)
            with pytest.raises(JobNotFoundError) as watch:
                list(batch.watch_job(key))
            unknown.append(
                [
                    (
                        e.value.code,
                        e.value.reason,
                        _REQUEST_ID.sub("", str(e.value).replace(key, "K")),
                    )
                    for e in (get, cancel, watch)
                ]
            )
        # Word for word what an unknown key gets: nothing tells the job exists.
        assert unknown[0] == unknown[1]
        # The same key with another request: batch's own job, no KEY_REUSED, no attach.
        gated.release()
        result = batch.stylize(
            png(48, 64, 3), png(40, 40, 4), size=SIZE, max_evaluations=2, request_key="order-1"
        )
        assert result.evaluations == 2
        assert batch.get_job("order-1").state == "done"
        assert running.code() == grpc.StatusCode.OK
        # Each tenant's key names its own job.
        assert shop.get_job("order-1").request_id != batch.get_job("order-1").request_id
    assert gated.calls == 2


def test_metrics_are_labelled_by_tenant_with_the_file_bounding_the_labels(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(auth_tokens_file=tokens_file(tmp_path))
    with client_for(server, "batch-token") as batch:
        stylize(batch)
    registry = server.metrics.registry
    assert registry.get_sample_value("styletx_lbfgs_evaluations_total", {"tenant": "batch"}) == 2
    # The stream ends with the result a moment before the worker counts itself free.
    wait_for(lambda: registry.get_sample_value("styletx_jobs_in_flight", {"tenant": "batch"}) == 0)
    for tenant in ("default", "shop", "batch"):
        assert registry.get_sample_value("styletx_queue_depth", {"tenant": tenant}) == 0
        assert registry.get_sample_value("styletx_jobs_in_flight", {"tenant": tenant}) == 0
    # Unknown tokens are one fixed label, whatever the token.
    for token in ("x", "y", "z"):
        with client_for(server, token) as stranger, pytest.raises(AuthenticationError):
            stylize(stranger)
    tenants = {
        s.labels["tenant"]
        for family in registry.collect()
        if family.name == "styletx_requests"
        for s in family.samples
    }
    assert tenants == {"batch", "default"}


pytestmark_tls = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytestmark_tls
def test_mtls_callers_are_mapped_by_their_certificate_subject(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    from tests.integration.test_client_tls import Pki

    pki = Pki(tmp_path)
    text = TOKENS + '[tenants.certified]\nsubjects = ["styletx-client"]\n'
    server = server_factory(
        auth_tokens_file=tokens_file(tmp_path, text),
        tls_cert=pki.server.cert,
        tls_key=pki.server.key,
        tls_client_ca=pki.ca[0],
    )
    address = f"localhost:{server.port}"
    tls = pki.client.tls(pki.ca[0])
    with StyleTransferClient(address, tls=tls, timeout=WAIT, retry=NO_RETRY) as client:
        stylize(client, request_key="cert-1")
        assert client.get_job("cert-1").state == "done"
    # The same certificate with a token: the token's tenant.
    with StyleTransferClient(
        address, tls=tls, token="batch-token", timeout=WAIT, retry=NO_RETRY
    ) as client:
        stylize(client)
        with pytest.raises(JobNotFoundError):
            client.get_job("cert-1")
    assert requests_of(server, "certified") == 1 and requests_of(server, "batch") == 1
    # A subject the file does not name is refused once the file no longer names this one.
    tokens_file(tmp_path, text.replace("styletx-client", "someone-else"))
    assert server.tenants.settle(WAIT)
    with (
        StyleTransferClient(address, tls=tls, timeout=WAIT, retry=NO_RETRY) as client,
        pytest.raises(AuthenticationError),
    ):
        stylize(client)


# -- tenants isolated from each other (issue 27): each attack of the outside review ----------


def test_a_weight_below_the_minimum_is_refused_naming_the_file_and_the_tenant(
    server_factory: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack: `weight = 1e-300` was accepted and pushed the fair queue's virtual clock to
    1e300 (every tenant then ran in arrival order for good)."""
    tiny = UNBOUNDED + "[tenants.tiny]\ntokens = ['tiny-token']\nweight = 1e-300\n"
    with pytest.raises(ValueError, match=r"tokens\.toml: tenants\.tiny\.weight must be between"):
        server_factory(auth_tokens_file=tokens_file(tmp_path, tiny))
    # At run time such a file keeps the mapping in force, and says why.
    path = tokens_file(tmp_path, UNBOUNDED)
    server = server_factory(auth_tokens_file=path)
    with caplog.at_level(logging.ERROR):
        path.write_text(tiny)
        assert server.tenants.settle(WAIT)
    assert "tiny" not in server.tenants.names
    [invalid] = [r for r in caplog.records if r.getMessage() == "tokens_file_invalid"]
    assert "tenants.tiny.weight" in invalid.styletx_fields["error"]  # type: ignore[attr-defined]


def test_a_flooding_tenants_results_do_not_evict_anothers(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """The attack: one tenant's 70 one-evaluation keyed jobs evicted another tenant's result
    12 s after it ended (64 results kept, TTL 600 s); GetJob then said NOT_FOUND, "ended more
    than 600 s ago", while GetJob with omit_image said DONE."""
    server = server_factory(auth_tokens_file=tokens_file(tmp_path, UNBOUNDED), max_stored_results=4)
    with client_for(server, "batch-token") as batch, client_for(server, "shop-token") as shop:
        stylize(batch, request_key="b-1")
        for index in range(7):
            shop.stylize(
                png(48, 64, 1), png(40, 40, 2), size=SIZE, max_evaluations=1,
                seed=index, request_key=f"s-{index}",
            )  # fmt: skip
        kept = batch.get_job("b-1")
        assert kept.state == "done" and kept.result is not None and kept.result.image.data
        # The flood made room with its own oldest results, and GetJob says so.
        with pytest.raises(JobNotFoundError) as evicted:
            shop.get_job("s-0")
        assert "evicted" in str(evicted.value) and "more than" not in str(evicted.value)
        assert shop.get_job("s-0", include_image=False).state == "done"
        assert shop.get_job("s-6").result is not None
    assert server.jobs.stored[0] == 4


def test_get_job_says_whether_a_key_expired_or_never_ran(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(auth_tokens_file=tokens_file(tmp_path, UNBOUNDED), result_ttl=0.5)
    with client_for(server, "batch-token") as batch, client_for(server, "shop-token") as shop:
        stylize(batch, request_key="k-1")
        threading.Event().wait(0.7)
        with pytest.raises(JobNotFoundError) as expired:
            batch.get_job("k-1")
        assert "expired" in str(expired.value) and "never started" not in str(expired.value)
        with pytest.raises(JobNotFoundError) as never:
            batch.get_job("k-2")
        assert "never started" in str(never.value) and "expired" not in str(never.value)
        # Another tenant's key reads like one never used, word for word.
        with pytest.raises(JobNotFoundError) as other:
            shop.get_job("k-1")
    assert _REQUEST_ID.sub("", str(other.value).replace("k-1", "K")) == _REQUEST_ID.sub(
        "", str(never.value).replace("k-2", "K")
    )


def _slow_parse(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    import styletx_server.security.tenants as tenants

    parse = tenants.parse_tokens

    def slow(text: str) -> tenants.TenantMap:
        threading.Event().wait(seconds)
        return parse(text)

    monkeypatch.setattr(tenants, "parse_tokens", slow)


def _health(server: StyletxServer) -> float:
    """Seconds a health check takes."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        began = time.monotonic()
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=WAIT)
        return time.monotonic() - began


def test_a_changed_tokens_file_is_parsed_off_the_call_path(
    server_factory: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: a 60,000-tenant file was parsed inside a call (7.1 s; health stalled 3.5 s)."""
    path = tokens_file(tmp_path, UNBOUNDED)
    server = server_factory(auth_tokens_file=path)
    _slow_parse(monkeypatch, 3.0)
    path.write_text(UNBOUNDED.replace("batch-token", "batch-token-2"))
    with client_for(server, "batch-token") as batch:
        began = time.monotonic()
        with pytest.raises(JobNotFoundError):
            batch.get_job("none")  # the mapping in force answers while the file is parsed
        assert time.monotonic() - began < 1.5
    assert _health(server) < 1.5
    assert server.tenants.settle(WAIT)
    with client_for(server, "batch-token-2") as rotated, pytest.raises(JobNotFoundError):
        rotated.get_job("none")


def test_a_tokens_file_over_its_bounds_is_refused_unparsed_and_removed_tenants_go(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    path = tokens_file(tmp_path, UNBOUNDED)
    server = server_factory(auth_tokens_file=path)
    path.write_text("".join(f'[tenants.t{i}]\ntokens = ["token-{i:08d}"]\n' for i in range(60_000)))
    with client_for(server, "batch-token") as batch:
        began = time.monotonic()
        stylize(batch)  # the mapping in force: the file is over its byte bound, never parsed
        assert time.monotonic() - began < 5.0
    assert server.tenants.settle(WAIT)
    assert server.tenants.names == {"default", "shop", "batch"}
    # A tenant the file no longer names leaves the names (the metric labels kept up to date).
    path.write_text('[tenants.batch]\ntokens = ["batch-token"]\n')
    assert server.tenants.settle(WAIT)
    assert server.tenants.names == {"default", "batch"}


def test_an_unauthenticated_callers_user_agent_is_logged_capped(
    server_factory: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack: a refused caller's 7.3 KB user agent was logged in full."""
    from styletx_server.observe.logs import CALLER_TEXT_LIMIT

    server = server_factory(auth_tokens_file=tokens_file(tmp_path, UNBOUNDED))
    agent = "a" * 7000
    options = [("grpc.primary_user_agent", agent)]
    with (
        grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel,
        caplog.at_level(logging.INFO),
        pytest.raises(grpc.RpcError) as refused,
    ):
        stub = pb_grpc.StyleTransferServiceStub(channel)
        stub.GetJob(pb.GetJobRequest(request_key="k"), timeout=WAIT, metadata=bearer("wrong"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    [line] = [r for r in caplog.records if r.getMessage() == "request"]
    logged = line.styletx_fields["user_agent"]  # type: ignore[attr-defined]
    assert logged.startswith("a" * 100) and len(logged) < CALLER_TEXT_LIMIT + 40
