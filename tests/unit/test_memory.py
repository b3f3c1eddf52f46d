"""Device memory: the linear model, the job's largest pass, the per-device budget."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from styletx import memory
from styletx.engine import Stylizer
from styletx.errors import Cancelled, DeviceMemoryExceeded, InvalidOptions
from styletx.memory import GIB, HEADROOM, MemoryBudget, MemoryModel
from styletx.options import StyleOptions
from tests.support.weights import tiny_image

JOIN_SECONDS = 30.0


def test_fit_recovers_a_line_and_predicts_the_largest_job() -> None:
    model = MemoryModel.fit([(p, 3000.0 * p + 2e8) for p in (10_000, 250_000, 1_000_000)])
    assert model.per_pixel == pytest.approx(3000.0)
    assert model.fixed == pytest.approx(2e8)
    assert model.job_bytes(1_000) == pytest.approx(3_000_000, abs=1)
    assert model.max_pixels(16 * GIB) == pytest.approx((16 * GIB - 2e8) // 3000, abs=1)
    with pytest.raises(ValueError, match="two sizes"):
        MemoryModel.fit([(100, 1.0), (100, 2.0)])


def test_a_jobs_largest_pass_is_its_output_or_a_scaled_style() -> None:
    # A 400x300 content at size 200 -> 200x150 output; a square style at 1x -> 200x200.
    assert memory.job_pixels((300, 400), [(50, 50)], 200, 1.0) == 200 * 200
    assert memory.job_pixels((300, 400), [(50, 50)], 200, 0.5) == 200 * 150
    assert memory.job_pixels((300, 400), [], 200, 1.0) == 200 * 150


def test_a_jobs_pixels_count_the_padding_the_network_may_run_it_with() -> None:
    # 200 x 150 runs padded to 200 x 160 with shape_step 32 (geometry.padded_size).
    assert memory.job_pixels((300, 400), [], 200, 1.0, shape_step=32) == 200 * 160
    assert memory.job_pixels((300, 400), [(60, 50)], 200, 1.0, shape_step=32) == 200 * 192


def test_largest_size_searches_a_monotonic_limit() -> None:
    assert memory.largest_size(lambda size: size * size <= 250_000, 4096) == 500
    assert memory.largest_size(lambda size: True, 300) == 300
    assert memory.largest_size(lambda size: False, 300) == 0


def test_an_unknown_capacity_checks_nothing() -> None:
    budget = MemoryBudget(MemoryModel(1e6, 0.0), None)
    assert budget.fits(10**9) and budget.usable is None
    budget.check(10**9, lambda fits: 0)
    with budget.reserve(10**9), budget.reserve(10**9):
        assert budget.reserved == 0


def test_a_job_too_large_alone_is_refused_with_the_size_that_fits() -> None:
    model = MemoryModel(per_pixel=1000.0, fixed=1e6)
    budget = MemoryBudget(model, capacity=100_000_000, device="GPU:0")
    usable = 100_000_000 * HEADROOM
    assert budget.fits(int((usable - 1e6) // 1000))
    assert not budget.fits(int((usable - 1e6) // 1000) + 1)
    with pytest.raises(DeviceMemoryExceeded) as caught:
        budget.check(200 * 1000, lambda fits: memory.largest_size(lambda s: fits(s * s), 1000))
    assert isinstance(caught.value, InvalidOptions) and caught.value.field == "size"
    assert caught.value.max_size == 298  # 298^2 * 1000 + 1e6 <= 9e7 < 299^2 * 1000 + 1e6
    assert "largest size that fits at this aspect ratio is 298" in str(caught.value)
    assert "on GPU:0" in str(caught.value)


def test_jobs_that_do_not_fit_together_wait_for_each_other() -> None:
    budget = MemoryBudget(MemoryModel(per_pixel=1.0, fixed=0.0), capacity=1000)
    first_in, release, second_in = threading.Event(), threading.Event(), threading.Event()
    second_waiting = threading.Event()

    def first() -> None:
        with budget.reserve(600):
            first_in.set()
            release.wait(JOIN_SECONDS)

    def waiting() -> bool:
        second_waiting.set()  # polled only while the reservation waits
        return False

    def second() -> None:
        assert first_in.wait(JOIN_SECONDS)
        with budget.reserve(600, waiting):
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    assert second_waiting.wait(JOIN_SECONDS)  # 600 + 600 > 900 usable: the second job waits
    assert not second_in.is_set() and budget.reserved == 600
    release.set()
    for thread in threads:
        thread.join(JOIN_SECONDS)
    assert second_in.is_set() and budget.reserved == 0


def test_a_job_waiting_for_memory_can_be_cancelled() -> None:
    budget = MemoryBudget(MemoryModel(per_pixel=1.0, fixed=0.0), capacity=1000)
    with budget.reserve(800), pytest.raises(Cancelled), budget.reserve(800, lambda: True):
        pass
    assert budget.reserved == 0


def test_the_stylizer_refuses_a_job_its_device_memory_cannot_hold(seeded_weights: Path) -> None:
    model = MemoryModel(per_pixel=1000.0, fixed=0.0)
    # Room for about 40x40 pixels: a 32 px job fits, a 64 px one does not.
    stylizer = Stylizer(
        seeded_weights, memory_capacity=int(1600 * 1000 / HEADROOM) + 1, memory_model=model
    )
    assert stylizer.memory_capacity() == {"CPU:0": int(1600 * 1000 / HEADROOM) + 1}
    content, style = tiny_image(32, 32), tiny_image(32, 32, seed=1)
    options = StyleOptions(size=32, max_evaluations=2)
    assert stylizer.stylize(content, [style], options).evaluations == 2
    with pytest.raises(DeviceMemoryExceeded) as caught:
        stylizer.stylize(content, [style], options.replace(size=64))
    assert caught.value.max_size == 40
    assert stylizer.memory.reserved == 0


def test_without_a_known_capacity_nothing_is_refused(seeded_weights: Path) -> None:
    stylizer = Stylizer(seeded_weights, memory_model=MemoryModel(per_pixel=1e12, fixed=0.0))
    assert stylizer.memory_capacity() == {}  # a CPU: the backend cannot tell
    assert stylizer.check_fits((32, 32), [(32, 32)], StyleOptions(size=32)) == 32 * 32
