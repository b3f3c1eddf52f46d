"""Fixtures for tests against a real in-process server on port 0 and a real channel."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from styletx import Progress, StyleOptions
from styletx.engine import Stylizer
from styletx.images import encode_image
from styletx.protocol import Engine
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_api.v1 import style_transfer_pb2_grpc as pb_grpc
from styletx_server.ops.app import StyletxServer
from styletx_server.ops.config import ServerConfig
from tests.support.engines import WrappedEngine
from tests.support.weights import tiny_image

#: Small enough for a fast CPU test, large enough for a few L-BFGS iterations.
SIZE = 48
EVALUATIONS = 8
#: Generous per-test guard on any single wait (the work itself takes well under a second).
WAIT = 30.0


def png(height: int, width: int, seed: int) -> bytes:
    return encode_image(tiny_image(height, width, seed), "png")


def make_request(**overrides: Any) -> pb.StylizeRequest:
    """A valid small request; keyword arguments replace top-level request fields."""
    fields: dict[str, Any] = {
        "content_image": png(48, 64, 1),
        "style_images": [pb.StyleImage(image=png(40, 40, 2))],
        "options": pb.StyleOptions(size=SIZE, max_evaluations=EVALUATIONS, seed=7),
    }
    fields.update(overrides)
    return pb.StylizeRequest(**fields)


@pytest.fixture(scope="session")
def stylizer(seeded_weights: Path) -> Stylizer:
    """One engine for the whole session (the model loads and warms once)."""
    engine = Stylizer(seeded_weights)
    engine.warmup()
    # Trace the shapes the tests use once, so no test pays for compilation inside a deadline.
    engine.stylize(
        tiny_image(48, 64, 1),
        [tiny_image(40, 40, 2)],
        StyleOptions(size=SIZE, max_evaluations=2, seed=0),
    )
    return engine


class GatedStylizer(WrappedEngine):
    """The real engine, held at its first progress event until `release()` (or a stop request).

    Lets a test keep a worker busy, or act at a known point of a job, without timing guesses.
    """

    def __init__(self, engine: Stylizer) -> None:
        super().__init__(engine)
        self.gate = threading.Event()
        self.paused = threading.Event()
        self.calls = 0
        self.evaluations_at_pause: int | None = None

    def release(self) -> None:
        self.gate.set()

    def job_starting(self, options: StyleOptions | None) -> StyleOptions | None:
        self.calls += 1
        return options

    def job_progress(
        self, event: Progress, first: bool, should_stop: Callable[[], bool] | None
    ) -> None:
        if first:
            self.evaluations_at_pause = self.engine.evaluations_total
            self.paused.set()
            # Wait for the test, or for the server to ask the job to stop (bounded, so a
            # broken server fails the test instead of hanging the session).
            for _ in range(int(WAIT / 0.01)):
                if self.gate.wait(0.01) or (should_stop is not None and should_stop()):
                    break


ServerFactory = Callable[..., StyletxServer]


@pytest.fixture
def server_factory(stylizer: Stylizer) -> Iterator[ServerFactory]:
    """Start servers on 127.0.0.1:0 with a fresh registry; every one is stopped after the test."""
    started: list[StyletxServer] = []

    def start(engine: Engine | None = None, ready: bool = True, **config: Any) -> StyletxServer:
        # What the server is typed against; a fake missing a member fails here, not mid-test.
        assert engine is None or isinstance(engine, Engine), engine
        base = ServerConfig(
            address="127.0.0.1:0",
            metrics_port=0,
            workers=1,
            queue_size=4,
            warmup=False,
            grace_period=5.0,
        )
        server = StyletxServer(
            replace(base, **config),
            stylizer=engine if engine is not None else stylizer,
            registry=CollectorRegistry(),
        )
        started.append(server)
        server.start()
        if ready:
            assert server.wait_until_ready(WAIT)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory: ServerFactory) -> StyletxServer:
    return server_factory()


def channel_to(server: StyletxServer) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{server.port}")


@pytest.fixture
def stub_for() -> Iterator[Callable[[StyletxServer], pb_grpc.StyleTransferServiceStub]]:
    """Stubs on real channels to a server; channels are closed after the test."""
    channels: list[grpc.Channel] = []

    def make(server: StyletxServer) -> pb_grpc.StyleTransferServiceStub:
        channel = channel_to(server)
        channels.append(channel)
        return pb_grpc.StyleTransferServiceStub(channel)

    yield make
    for channel in channels:
        channel.close()


@pytest.fixture
def stub(
    server: StyletxServer,
    stub_for: Callable[[StyletxServer], pb_grpc.StyleTransferServiceStub],
) -> pb_grpc.StyleTransferServiceStub:
    return stub_for(server)


def collect(
    stub: pb_grpc.StyleTransferServiceStub, request: pb.StylizeRequest, **kwargs: Any
) -> list[pb.StylizeResponse]:
    """Every event of one Stylize stream (raises grpc.RpcError on a failed status)."""
    return list(stub.Stylize(request, timeout=WAIT, **kwargs))


def wait_for(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll `condition` until true; fail the test after `timeout` seconds."""
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition not met in time")


class Consumer:
    """Reads one stream on a thread, keeping every event and the final error."""

    def __init__(self, stub: Any, request: pb.StylizeRequest, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", WAIT)
        self.call = stub.Stylize(request, **kwargs)
        self.events: list[pb.StylizeResponse] = []
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.append(event)
        except grpc.RpcError as exc:
            self.error = exc

    def join(self, timeout: float = WAIT) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the stream did not end in time"

    def code(self, timeout: float = WAIT) -> grpc.StatusCode:
        self.join(timeout)
        return grpc.StatusCode.OK if self.error is None else self.error.code()

    def kinds(self) -> list[str]:
        return [str(e.WhichOneof("event")) for e in self.events]


def rich_details(error: grpc.RpcError) -> list[Any]:
    """The google.rpc details (ErrorInfo, RetryInfo, BadRequest ...) of a failed call, unpacked."""
    from google.rpc import error_details_pb2  # type: ignore[import-untyped]
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no rich status details"
    found: list[Any] = []
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.BadRequest,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found.append(message)
    return found


def reason_of(error: grpc.RpcError | None) -> str:
    """The ErrorInfo reason of a failed call."""
    from google.rpc import error_details_pb2  # type: ignore[import-untyped]

    assert error is not None, "the call did not fail"
    infos = [d for d in rich_details(error) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert len(infos) == 1, infos
    assert infos[0].domain == "styletx.v1"
    return str(infos[0].reason)


def has_retry_info(error: grpc.RpcError) -> bool:
    from google.rpc import error_details_pb2  # type: ignore[import-untyped]

    return any(isinstance(d, error_details_pb2.RetryInfo) for d in rich_details(error))
