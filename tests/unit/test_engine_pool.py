"""Device placement and the per-device StylizerPool (one model per GPU; CPU devices here)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from styletx.engine import Stylizer
from styletx.errors import Cancelled
from styletx.options import StyleOptions
from styletx.pool import StylizerPool, load_stylizer
from styletx.result import Progress
from tests.support.precision import auto_on_this_cpu
from tests.support.weights import tiny_image

OPTIONS = StyleOptions(size=32, max_evaluations=6, seed=4)


def test_stylizer_pins_its_model_to_the_device(seeded_weights: Path) -> None:
    pinned = Stylizer(seeded_weights, device="/CPU:0")
    assert all("CPU:0" in v.value.device for v in pinned._vgg.weights)
    assert pinned.device == "CPU:0"
    result = pinned.stylize(tiny_image(32, 32), [tiny_image(32, 32, 1)], OPTIONS)
    assert result.evaluations == 6


def test_pool_runs_concurrent_jobs_on_different_members(seeded_weights: Path) -> None:
    pool = StylizerPool(seeded_weights, ["/CPU:0", "/CPU:0"])
    first_paused, second_done = threading.Event(), threading.Event()
    results = {}

    def hold(progress: Progress) -> None:
        # The first job waits (bounded) until the second finished: both ran at once.
        first_paused.set()
        second_done.wait(30)

    def first() -> None:
        results["first"] = pool.stylize(
            tiny_image(32, 32), [tiny_image(32, 32, 1)], OPTIONS, on_progress=hold
        )

    thread = threading.Thread(target=first)
    thread.start()
    assert first_paused.wait(30)
    results["second"] = pool.stylize(tiny_image(32, 32), [tiny_image(32, 32, 1)], OPTIONS)
    second_done.set()
    thread.join(30)
    assert second_done.is_set() and not thread.is_alive()
    # Each member ran one job, and the counters add up.
    assert [m.evaluations_total for m in pool.members] == [6, 6]
    assert pool.evaluations_total == 12
    # Same seed on the same kind of device: same bytes, whichever member ran it.
    assert np.array_equal(results["first"].image, results["second"].image)


def test_load_stylizer_without_several_gpus_is_one_stylizer(seeded_weights: Path) -> None:
    assert isinstance(load_stylizer(seeded_weights, workers=4), Stylizer)


def test_stylizer_caps_blas_threads_unless_told_not_to(seeded_weights: Path) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> set[int]:
        return {int(p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"}

    threadpool_limits(limits=2, user_api="blas")
    Stylizer(seeded_weights, blas_threads=None)
    assert blas_threads() == {2}
    Stylizer(seeded_weights)
    assert blas_threads() == {1}


def test_pool_reports_what_its_members_run_on(seeded_weights: Path) -> None:
    pool = StylizerPool(seeded_weights, ["/CPU:0", "CPU:0"])
    assert (pool.backend, pool.precision, pool.device) == (
        "tensorflow",
        auto_on_this_cpu(),
        "CPU:0,CPU:0",
    )
    assert pool.precision_for(StyleOptions.from_preset("reference")) == "float32"
    assert pool.precision_for(StyleOptions.from_preset("fast")) == auto_on_this_cpu()
    assert pool.memory_info() == {}


def test_a_job_waiting_for_a_device_can_be_cancelled(seeded_weights: Path) -> None:
    pool = StylizerPool(seeded_weights, ["/CPU:0"], poll_seconds=0.01)
    holding, release = threading.Event(), threading.Event()

    def hold(progress: Progress) -> None:
        holding.set()
        release.wait(30)

    thread = threading.Thread(
        target=lambda: pool.stylize(
            tiny_image(32, 32), [tiny_image(32, 32, 1)], OPTIONS, on_progress=hold
        )
    )
    thread.start()
    try:
        assert holding.wait(30)
        polls: list[int] = []

        def should_stop() -> bool:
            polls.append(pool.members[0].evaluations_total)
            return len(polls) >= 5  # the caller gives up while the only device is still busy

        before = pool.evaluations_total
        with pytest.raises(Cancelled, match="waiting for a free device"):
            pool.stylize(
                tiny_image(32, 32), [tiny_image(32, 32, 1)], OPTIONS, should_stop=should_stop
            )
        assert len(polls) == 5 and pool.evaluations_total == before  # polled while it waited
    finally:
        release.set()
        thread.join(30)
    assert not thread.is_alive()
    # The device went back to the pool: a later job runs.
    assert pool.stylize(tiny_image(32, 32), [tiny_image(32, 32, 1)], OPTIONS).evaluations == 6
