"""A backend service's use of every public call of styletx_client, for `mypy --strict` only.

tests/unit/test_client_typing.py type-checks this file; `assert_type` pins the inferred types.
Never imported by the test suite (it would try to reach a server).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import assert_type

import grpc

from styletx_client import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ERROR_DOMAIN,
    NO_RETRY,
    RETRY_INFO_JITTER,
    SERVICE_NAME,
    AsyncEventStream,
    AsyncStyleTransferClient,
    AuthenticationError,
    CancelledError,
    DeadlineExceededError,
    EncodedImage,
    Event,
    EventStream,
    FieldViolation,
    InvalidRequestError,
    JobInfo,
    JobNotFoundError,
    JobState,
    Losses,
    OutOfMemoryError,
    Progress,
    Queued,
    Reason,
    RequestKeyReusedError,
    ResolvedOptions,
    Result,
    RetryPolicy,
    RetryThrottling,
    ServerBusyError,
    ServiceError,
    ServingStatus,
    Started,
    Style,
    StyleTransferClient,
    StylizeOptions,
    TlsConfig,
    UnavailableError,
    __version__,
    from_rpc_error,
)
from styletx_client.cli import main as cli_main


def describe(event: Event) -> str:
    """Exhaustive narrowing over the event union."""
    if isinstance(event, Queued):
        return f"queued at {event.position} ({event.request_id})"
    if isinstance(event, Started):
        options: ResolvedOptions = event.options
        size: int | None = options.size
        layers: tuple[str, ...] = options.style_layers
        return f"{event.width}x{event.height} after {event.queue_time:.1f}s {size} {layers}"
    if isinstance(event, Progress):
        losses: Losses = event.losses
        preview: EncodedImage | None = event.preview
        return (
            f"{event.iteration} {event.evaluations}/{event.max_evaluations} {losses.total} "
            f"{event.elapsed} {event.scale} {preview is not None}"
        )
    assert_type(event, Result)
    return f"{event.width}x{event.height} {event.format} {event.losses.style}"


def sync_usage(out: Path) -> None:
    tls = TlsConfig(
        root_certificates=b"-----BEGIN CERTIFICATE-----",
        certificate_chain=b"-----BEGIN CERTIFICATE-----",  # mutual TLS: this client's identity
        private_key=b"-----BEGIN PRIVATE KEY-----",
    )
    retry = RetryPolicy(
        max_attempts=3,
        initial_backoff=0.1,
        max_backoff=2.0,
        multiplier=2.0,
        throttling=RetryThrottling(max_tokens=20.0, token_ratio=0.2),
    )
    low, high = RETRY_INFO_JITTER
    print(low * high, RetryPolicy(throttling=None))
    with StyleTransferClient(
        "dns:///styletx-headless:50051",
        tls=tls,
        token="secret",
        timeout=60.0,
        retry=retry,
        lb_policy="round_robin",
        max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES,
        options=[("grpc.keepalive_time_ms", 30_000)],
        sleep=lambda seconds: None,
        clock=lambda: 0.0,
        rng=random.Random(0),
    ) as client:
        target: str = client.target
        status = client.health(SERVICE_NAME, timeout=2.0)
        assert_type(status, ServingStatus)
        if status is not ServingStatus.SERVING:
            return
        options: StylizeOptions = {"size": 384, "init": "content", "output_format": "jpeg"}
        quick = client.stylize("content.jpg", "style.jpg", **options)
        assert_type(quick, Result)
        result = client.stylize(
            Path("content.jpg"),
            [Style("style.jpg", 0.7), Style(b"\x89PNG...", 0.3)],
            timeout=120.0,
            request_id="req-1",
            request_key="order-42",
            on_event=lambda event: None,
            content_weight=0.02,
            style_weight=4.5,
            tv_weight=0.995,
            tv_power=1.25,
            content_layer="block2_conv2",
            style_layers=["block1_conv2", "block2_conv2"],
            max_evaluations=200,
            restart_every=0,
            seed=7,
            style_scale=1.0,
            preserve_colors="off",
            scales=1,
            quality=90,
            preview_every=0,
            size=512,
            init="random",
            output_format="png",
        )
        assert_type(result, Result)
        data: bytes = result.image_bytes
        saved: Path = result.save(out)
        image: EncodedImage = result.image
        print(target, len(data), saved, image.save(out.with_suffix(".copy")), result.request_id)
        print(result.iterations, result.evaluations, result.queue_time, result.compute_time)

        stream = client.stream(b"content-bytes", "style.png", size=128)
        assert_type(stream, EventStream)
        request_id: str = stream.request_id
        request_key: str = stream.request_key
        print(request_key)
        with stream:
            for event in stream:
                print(request_id, describe(event))
                if isinstance(event, Progress) and event.iteration > 10:
                    break
        stream.close()
    client.close()

    with StyleTransferClient("localhost:50051", retry=NO_RETRY, tls=True) as plain:
        try:
            plain.stylize(b"c", b"s")
        except InvalidRequestError as error:
            violations: tuple[FieldViolation, ...] = error.field_violations
            print([(v.field, v.description) for v in violations])
        except RequestKeyReusedError as error:
            stale: str | None = error.request_key
            print(stale)
        except ServerBusyError as error:
            wait: float | None = error.retry_after
            print(wait)
        except OutOfMemoryError as error:
            reason: str | None = error.reason
            print(reason == Reason.OUT_OF_MEMORY, error.domain == ERROR_DOMAIN)
        except (UnavailableError, DeadlineExceededError, CancelledError) as error:
            print(error.code.name)
        except AuthenticationError as error:
            print(error.message)
        except ServiceError as error:
            code: grpc.StatusCode = error.code
            print(code, error.details, error.request_id)

    credentials = grpc.ssl_channel_credentials()
    StyleTransferClient("ipv4:10.0.0.1:50051,10.0.0.2:50051", credentials=credentials).close()


def job_usage(client: StyleTransferClient, out: Path) -> JobState:
    """A keyed job looked at, watched and cancelled by its key alone."""
    try:
        info = client.get_job("order-1234", include_image=False, timeout=5.0)
    except JobNotFoundError as missing:
        assert_type(missing.request_key, str | None)
        return "failed"
    assert_type(info, JobInfo)
    assert_type(info.state, JobState)
    position: int = info.position
    progress: Progress | None = info.progress
    started: Started | None = info.started
    ended_with: ServiceError | None = info.error
    if info.ended and info.result is not None:
        info.result.save(out)
    print(position, progress, started, ended_with, info.queue_time, info.compute_time, info.options)
    with client.watch_job("order-1234") as events:
        assert_type(events, EventStream)
        for event in events:
            print(describe(event))
    return assert_type(client.cancel_job("order-1234"), JobState)


async def async_job_usage(client: AsyncStyleTransferClient) -> JobState:
    info = assert_type(await client.get_job("order-1234"), JobInfo)
    async with client.watch_job(info.request_key) as events:
        assert_type(events, AsyncEventStream)
        async for event in events:
            print(describe(event))
    return assert_type(await client.cancel_job("order-1234"), JobState)


def convert(error: grpc.RpcError) -> ServiceError:
    return from_rpc_error(error, request_id="mine")


async def async_usage(out: Path) -> None:
    async def no_wait(seconds: float) -> None:
        return None

    async with AsyncStyleTransferClient(
        "127.0.0.1:1,127.0.0.1:2",
        token="secret",
        timeout=60.0,
        retry=RetryPolicy(),
        sleep=no_wait,
        clock=lambda: 0.0,
    ) as client:
        status = await client.health()
        assert_type(status, ServingStatus)
        result = await client.stylize(
            b"content", Style(b"style"), size=256, on_event=print, max_evaluations=50
        )
        assert_type(result, Result)
        result.save(out)
        stream = client.stream(
            b"content", [b"style-a", b"style-b"], timeout=30.0, seed=1, request_key=""
        )
        assert_type(stream, AsyncEventStream)
        key: str = stream.request_key
        print(key)
        async with stream:
            async for event in stream:
                print(stream.request_id, describe(event))
        await stream.aclose()
        print(client.target)
    await client.close(grace=1.0)


def run_all() -> int:
    sync_usage(Path("out.png"))
    asyncio.run(async_usage(Path("out-async.png")))
    exit_code: int = cli_main(["health", "--server", "localhost:50051"])
    print(__version__)
    return exit_code


if __name__ == "__main__":
    raise SystemExit(run_all())
