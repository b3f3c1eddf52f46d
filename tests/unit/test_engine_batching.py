"""Cross-job batching in the engine (TensorFlow, CPU): concurrent jobs share VGG16 batches."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from styletx.engine import Stylizer
from styletx.errors import Cancelled
from styletx.options import StyleOptions
from styletx.result import Progress, Result
from tests.support.weights import tiny_image

OPTIONS = StyleOptions(size=32, max_evaluations=6, seed=3)
#: Long enough that relying on it would hang the test rather than pass it slowly.
FOREVER = 1000.0
JOIN_SECONDS = 300.0


class Recorder:
    """Wraps a step's loss_and_grad to record the shape of every call."""

    def __init__(self, stylizer: Stylizer, options: StyleOptions) -> None:
        self.step = stylizer.step(options)
        self.shapes: list[tuple[int, ...]] = []
        self._real = self.step.loss_and_grad
        self._lock = threading.Lock()
        self.step.loss_and_grad = self._record  # type: ignore[method-assign]

    def _record(self, images: Any, targets: Any) -> Any:
        with self._lock:
            self.shapes.append(tuple(images.shape))
        return self._real(images, targets)

    def sizes(self) -> list[int]:
        return [shape[0] for shape in self.shapes]

    def close(self) -> None:
        del self.step.loss_and_grad


@contextlib.contextmanager
def seated_together(stylizer: Stylizer, parties: int) -> Iterator[None]:
    """Hold each job right after it takes its batcher seat until `parties` jobs are seated, so
    no job starts evaluating alone before the others arrive."""
    batcher = stylizer._batcher
    assert batcher is not None
    real = batcher.join
    barrier = threading.Barrier(parties)

    @contextlib.contextmanager
    def join(key: Any) -> Iterator[Any]:
        with real(key) as seat:
            barrier.wait(JOIN_SECONDS)
            yield seat

    batcher.join = join  # type: ignore[method-assign]
    try:
        yield
    finally:
        del batcher.join


def run_jobs(*jobs: Callable[[], Result]) -> list[Result | BaseException]:
    out: list[Result | BaseException] = [RuntimeError("not run")] * len(jobs)

    def wrap(index: int, job: Callable[[], Result]) -> None:
        try:
            out[index] = job()
        except BaseException as exc:
            out[index] = exc

    threads = [threading.Thread(target=wrap, args=(i, j)) for i, j in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS)
        assert not thread.is_alive(), "a job hung"
    return out


CONTENTS = (tiny_image(32, 32, seed=1), tiny_image(32, 32, seed=5))
STYLE = tiny_image(40, 40, seed=2)


@pytest.fixture(scope="module")
def batching(seeded_weights: Path) -> Stylizer:
    return Stylizer(seeded_weights, batch_window=FOREVER)


def test_batching_is_off_on_a_cpu_unless_asked_for(seeded_weights: Path) -> None:
    assert Stylizer(seeded_weights).batch_window == 0
    assert Stylizer(seeded_weights, batch_window=0.005).batch_window == 0.005


def test_two_concurrent_jobs_of_one_shape_are_batched_and_lose_nothing(
    batching: Stylizer,
) -> None:
    recorder = Recorder(batching, OPTIONS)
    try:
        alone = [batching.stylize(c, [STYLE], OPTIONS) for c in CONTENTS]
        assert recorder.sizes() == [1] * 2 * OPTIONS.max_evaluations
        recorder.shapes.clear()
        with seated_together(batching, 2):
            together = run_jobs(
                *(lambda c=c: batching.stylize(c, [STYLE], OPTIONS) for c in CONTENTS)
            )
    finally:
        recorder.close()
    # Every evaluation of both jobs went through VGG16 in a batch of two.
    assert recorder.sizes() == [2] * OPTIONS.max_evaluations
    for solo, shared in zip(alone, together, strict=True):
        assert isinstance(shared, Result)
        assert shared.evaluations == solo.evaluations == OPTIONS.max_evaluations
        # Each job kept its own L-BFGS state: the same losses as when it ran alone.
        assert shared.losses.total == pytest.approx(solo.losses.total, rel=1e-4)
        assert shared.losses.style == pytest.approx(solo.losses.style, rel=1e-4)
        assert np.abs(shared.image.astype(int) - solo.image.astype(int)).max() <= 1
    assert batching.batch_stats.largest == 2


def test_jobs_of_different_shapes_are_not_mixed(batching: Stylizer) -> None:
    recorder = Recorder(batching, OPTIONS)
    try:
        # Each job alone at its key: no seat to wait for (a shared barrier would deadlock).
        results = run_jobs(
            lambda: batching.stylize(tiny_image(32, 32), [STYLE], OPTIONS),
            lambda: batching.stylize(tiny_image(32, 48), [STYLE], OPTIONS),
        )
    finally:
        recorder.close()
    assert all(isinstance(r, Result) for r in results)
    assert sorted(set(recorder.shapes)) == [(1, 21, 32, 3), (1, 32, 32, 3)]
    assert len(recorder.shapes) == 2 * OPTIONS.max_evaluations


def test_cancelling_one_job_mid_batch_does_not_block_the_other(batching: Stylizer) -> None:
    options = OPTIONS.replace(max_evaluations=12)
    recorder = Recorder(batching, options)
    seen: list[Progress] = []

    def cancelled_job() -> Result:
        # Cancelled after its first L-BFGS iteration (a few evaluations).
        return batching.stylize(
            CONTENTS[0], [STYLE], options, on_progress=seen.append, should_stop=lambda: bool(seen)
        )

    try:
        with seated_together(batching, 2):
            first, second = run_jobs(
                cancelled_job, lambda: batching.stylize(CONTENTS[1], [STYLE], options)
            )
    finally:
        recorder.close()
    assert isinstance(first, Cancelled)
    assert isinstance(second, Result) and second.evaluations == options.max_evaluations
    # Batched while both ran, then the survivor went on alone without waiting for the window.
    # One step call per evaluation of the survivor: pairs first, then alone.
    sizes = recorder.sizes()
    assert len(sizes) == options.max_evaluations
    assert sizes[0] == 2 and sizes[-1] == 1 and sizes == sorted(sizes, reverse=True)
