"""Overflowing numbers through the API: every weight combination either runs
with finite losses or is refused with INVALID_ARGUMENT naming the field; a loss that turns
non-finite mid-run ends the job with INVALID_ARGUMENT, reason NON_FINITE_LOSS: never INTERNAL,
never an OK with inf."""

from __future__ import annotations

import itertools
import math
from typing import Any

import grpc
import pytest

from styletx import StyleOptions
from styletx.engine import Stylizer
from styletx_api.v1 import style_transfer_pb2 as pb
from tests.integration.conftest import (
    ServerFactory,
    collect,
    make_request,
    png,
    reason_of,
)
from tests.integration.test_server_validation import violations
from tests.support.engines import WrappedEngine

WEIGHTS = ("content_weight", "style_weight", "tv_weight")
EXTREMES = (0.0, 5e-324, 1e12, 1e13, 1e308, math.inf, -math.inf, math.nan, -1.0)
TV_POWERS = (1.0, 4.0, 4.5, 1e308, -1.0, math.nan)


def _request(**options: Any) -> pb.StylizeRequest:
    return make_request(options=pb.StyleOptions(size=32, max_evaluations=2, seed=3, **options))


def _outcome(stub: Any, request: pb.StylizeRequest) -> tuple[str, Any]:
    """("ok", every loss seen) or ("invalid", {field: description}); anything else fails."""
    try:
        events = collect(stub, request)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
        return "invalid", violations(error)
    losses = [e.progress.losses for e in events if e.HasField("progress")]
    losses.append(events[-1].result.losses)
    return "ok", [(x.total, x.content, x.style, x.tv) for x in losses]


@pytest.mark.parametrize("field", WEIGHTS)
def test_every_loss_weight_runs_finite_or_is_refused_naming_it(
    server_factory: ServerFactory, stub_for: Any, field: str
) -> None:
    stub = stub_for(server_factory())
    for value in EXTREMES:
        kind, detail = _outcome(stub, _request(**{field: value}))
        if kind == "invalid":
            assert list(detail) == [f"options.{field}"], (value, detail)
            assert "between 0 and 1e+12" in detail[f"options.{field}"]
        else:
            assert all(math.isfinite(v) for row in detail for v in row), (value, detail)
            assert 0 <= value <= 1e12


def test_every_tv_power_runs_finite_or_is_refused_naming_it(
    server_factory: ServerFactory, stub_for: Any
) -> None:
    stub = stub_for(server_factory())
    for power, weight in itertools.product(TV_POWERS, (0.995, 1e12)):
        kind, detail = _outcome(stub, _request(tv_power=power, tv_weight=weight))
        if kind == "invalid":
            assert list(detail) == ["options.tv_power"], (power, detail)
            assert "between 1 and 4" in detail["options.tv_power"]
        else:
            assert all(math.isfinite(v) for row in detail for v in row), (power, detail)


@pytest.mark.parametrize(
    "weights",
    [(1e308, 1e308), (1.7976931348623157e308, 5e-324), (1e308, 0.0), (math.inf, 1.0), (0.0, 0.0)],
)
def test_blend_weights_run_finite_or_are_refused_naming_them(
    server_factory: ServerFactory, stub_for: Any, weights: tuple[float, float]
) -> None:
    stub = stub_for(server_factory())
    request = make_request(
        style_images=[
            pb.StyleImage(image=png(40, 40, 2 + i), weight=w) for i, w in enumerate(weights)
        ],
        options=pb.StyleOptions(size=32, max_evaluations=2, seed=3),
    )
    kind, detail = _outcome(stub, request)
    if all(math.isfinite(w) for w in weights) and sum(weights) > 0:
        assert kind == "ok", detail
        assert all(math.isfinite(v) for row in detail for v in row)
    else:
        assert kind == "invalid"
        assert all(f.startswith("style_images") for f in detail), detail


class Overflowing(WrappedEngine):
    """The real engine, handed options one weight of which was forced past validation to a
    value that overflows (what a larger image or a wider limit could let through)."""

    def __init__(self, engine: Stylizer, field: str, value: float) -> None:
        super().__init__(engine)
        self.field, self.value = field, value

    def job_starting(self, options: StyleOptions | None) -> StyleOptions | None:
        forced = (options or StyleOptions()).replace()
        object.__setattr__(forced, self.field, self.value)
        return forced


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_a_loss_that_turns_non_finite_mid_run_is_invalid_argument_naming_the_weight(
    stylizer: Stylizer, server_factory: ServerFactory, stub_for: Any
) -> None:
    server = server_factory(engine=Overflowing(stylizer, "tv_weight", 1e300))
    stub = stub_for(server)
    with pytest.raises(grpc.RpcError) as caught:
        collect(stub, _request())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "NON_FINITE_LOSS"
    found = violations(caught.value)
    assert list(found) == ["options.tv_weight"]
    assert "the tv loss became inf at evaluation 1" in found["options.tv_weight"]
    # The server is fine afterwards: the failure was the request's, not a fault.
    text = server.metrics.registry.get_sample_value(
        "styletx_requests_total",
        {
            "method": "Stylize",
            "code": "INVALID_ARGUMENT",
            "reason": "non_finite_loss",
            "tenant": "default",
        },
    )
    assert text == 1.0
