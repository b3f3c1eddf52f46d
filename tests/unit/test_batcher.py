"""The cross-job batcher on a numpy step: who waits for whom, what is batched, what is not."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from styletx.backends.base import Array, DeviceTargets, LossStep
from styletx.batcher import Batcher, padded_rows
from styletx.errors import Cancelled

#: Long enough that a test relying on it would hang (and time out) rather than pass slowly.
FOREVER = 1000.0
JOIN_SECONDS = 30.0


class NumpyStep(LossStep):
    """Loss = sum((image - content)^2) per row, gradient 2 (image - content); records batches."""

    layers = ("block2_conv2",)

    def __init__(self, fail: BaseException | None = None) -> None:
        self.batches: list[tuple[int, ...]] = []
        self.concats = 0
        self.fail = fail
        self._lock = threading.Lock()

    def targets(self, images: Array) -> tuple[Array, list[Array]]:
        raise NotImplementedError

    def put(self, content: Array, grams: Sequence[Array], weights: Array) -> DeviceTargets:
        return DeviceTargets(content=np.asarray(content), grams=(), weights=np.asarray(weights))

    def with_weights(self, targets: DeviceTargets, weights: Array) -> DeviceTargets:
        return DeviceTargets(targets.content, targets.grams, np.asarray(weights))

    def concat(self, parts: Sequence[DeviceTargets]) -> DeviceTargets:
        with self._lock:
            self.concats += 1
        return DeviceTargets(
            content=np.concatenate([p.content for p in parts]),
            grams=(),
            weights=np.concatenate([p.weights for p in parts]),
        )

    def loss_and_grad(self, images: Array, targets: DeviceTargets) -> tuple[Array, Array]:
        with self._lock:
            self.batches.append(tuple(images.shape))
        if self.fail is not None:
            raise self.fail
        assert images.shape[0] == targets.batch
        diff = images - targets.content
        total = np.sum(diff * diff, axis=(1, 2, 3)).astype(np.float64)
        terms = np.stack([total, total, np.zeros_like(total), np.zeros_like(total)], axis=1)
        return terms, 2 * diff

    @property
    def compilations(self) -> int:
        return 0

    def sizes(self) -> list[int]:
        with self._lock:
            return [shape[0] for shape in self.batches]


def targets_for(step: NumpyStep, value: float, h: int = 4, w: int = 5) -> DeviceTargets:
    return step.put(np.full((1, h, w, 3), value, np.float32), [], np.ones((1, 4), np.float32))


def image(value: float, h: int = 4, w: int = 5) -> Array:
    return np.full((h, w, 3), value, np.float32)


def run_threads(*bodies: Callable[[], Any]) -> list[BaseException | None]:
    """Run each body in its own thread; the exception each raised (None if none)."""
    errors: list[BaseException | None] = [None] * len(bodies)

    def wrap(index: int, body: Callable[[], Any]) -> None:
        try:
            body()
        except BaseException as exc:
            errors[index] = exc

    threads = [threading.Thread(target=wrap, args=(i, b)) for i, b in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS)
        assert not thread.is_alive(), "a batcher thread hung"
    return errors


def test_two_jobs_of_one_key_share_every_evaluation_and_get_their_own_rows() -> None:
    step = NumpyStep()
    batcher = Batcher(window=FOREVER)
    results: dict[str, list[float]] = {"a": [], "b": []}
    both_seated = threading.Barrier(2)

    def job(name: str, value: float) -> None:
        with batcher.join(("layers", 4, 5)) as seat:
            both_seated.wait(JOIN_SECONDS)
            targets = targets_for(step, value)
            for k in range(5):
                terms, grad = seat.evaluate(step, image(float(k)), targets)
                results[name].append(float(terms[0]))
                assert np.array_equal(grad, 2 * (image(float(k)) - value))

    assert run_threads(lambda: job("a", 1.0), lambda: job("b", -2.0)) == [None, None]
    # Five step calls of two rows each: every evaluation was batched.
    assert step.sizes() == [2] * 5
    assert results["a"] == [float(60 * (k - 1.0) ** 2) for k in range(5)]
    assert results["b"] == [float(60 * (k + 2.0) ** 2) for k in range(5)]
    # The same two jobs' targets are joined once and reused.
    assert step.concats == 1
    assert batcher.stats.batches == 5 and batcher.stats.evaluations == 10
    assert batcher.stats.largest == 2
    assert batcher.seated(("layers", 4, 5)) == 0


def test_a_job_alone_never_waits_for_the_window() -> None:
    step = NumpyStep()
    batcher = Batcher(window=FOREVER)

    def alone() -> None:
        with batcher.join("key") as seat:
            for _ in range(3):
                seat.evaluate(step, image(0.0), targets_for(step, 1.0))

    # With a window of 1000 s, waiting for it would hang the thread past the join timeout.
    assert run_threads(alone) == [None]
    assert step.sizes() == [1, 1, 1]
    assert step.concats == 0  # a batch of one uses the job's own targets


def test_different_keys_are_never_mixed() -> None:
    step = NumpyStep()
    batcher = Batcher(window=0.05)
    started = threading.Barrier(2)

    def job(h: int, w: int) -> None:
        with batcher.join(("layers", h, w)) as seat:
            started.wait(JOIN_SECONDS)
            for _ in range(4):
                seat.evaluate(step, image(0.0, h, w), targets_for(step, 1.0, h, w))

    assert run_threads(lambda: job(4, 5), lambda: job(5, 4)) == [None, None]
    assert sorted(step.batches) == [(1, 4, 5, 3)] * 4 + [(1, 5, 4, 3)] * 4


def test_a_straggler_is_waited_for_only_as_long_as_the_window() -> None:
    step = NumpyStep()
    batcher = Batcher(window=0.01)
    straggler_seated = threading.Event()
    release = threading.Event()

    def straggler() -> None:
        with batcher.join("key"):
            straggler_seated.set()
            release.wait(JOIN_SECONDS)  # seated, but busy elsewhere (its L-BFGS step, say)

    def eager() -> None:
        assert straggler_seated.wait(JOIN_SECONDS)
        with batcher.join("key") as seat:
            for _ in range(3):
                seat.evaluate(step, image(0.0), targets_for(step, 1.0))
        release.set()

    assert run_threads(straggler, eager) == [None, None]
    assert step.sizes() == [1, 1, 1]


def test_max_batch_splits_a_crowd() -> None:
    step = NumpyStep()
    batcher = Batcher(window=FOREVER, max_batch=2)
    seated = threading.Barrier(3)

    def job(value: float) -> None:
        with batcher.join("key") as seat:
            seated.wait(JOIN_SECONDS)
            seat.evaluate(step, image(value), targets_for(step, value))

    assert run_threads(*(lambda v=float(v): job(v) for v in range(3))) == [None] * 3
    assert sorted(step.sizes()) == [1, 2]


def test_a_job_cancelled_while_waiting_leaves_and_the_others_go_on() -> None:
    step = NumpyStep()
    batcher = Batcher(window=FOREVER)
    stop_a = threading.Event()
    a_waiting = threading.Event()
    b_may_go = threading.Event()
    b_results: list[float] = []

    seated = threading.Barrier(2)

    def should_stop_a() -> bool:
        a_waiting.set()
        return stop_a.is_set()

    def job_a() -> None:
        with batcher.join("key") as seat:
            seated.wait(JOIN_SECONDS)
            # B is seated but not evaluating: A waits for it (the window is 1000 s) ...
            seat.evaluate(step, image(0.0), targets_for(step, 1.0), should_stop_a)

    def job_b() -> None:
        with batcher.join("key") as seat:
            seated.wait(JOIN_SECONDS)
            b_may_go.wait(JOIN_SECONDS)
            for _ in range(2):
                terms, _ = seat.evaluate(step, image(3.0), targets_for(step, 1.0))
                b_results.append(float(terms[0]))

    def conductor() -> None:
        assert a_waiting.wait(JOIN_SECONDS)
        stop_a.set()  # ... until its job is cancelled: it leaves the batch at once
        while batcher.seated("key") == 2:
            threading.Event().wait(0.001)
        b_may_go.set()

    errors = run_threads(job_a, job_b, conductor)
    assert isinstance(errors[0], Cancelled) and errors[1:] == [None, None]
    # A's request never ran; B ran alone once A left its seat.
    assert step.sizes() == [1, 1]
    assert b_results == [240.0, 240.0]


def test_a_job_cancelled_once_its_batch_runs_still_gets_its_row() -> None:
    gate = threading.Event()
    entered = threading.Event()

    class SlowStep(NumpyStep):
        def loss_and_grad(self, images: Array, targets: DeviceTargets) -> tuple[Array, Array]:
            entered.set()
            gate.wait(JOIN_SECONDS)
            return super().loss_and_grad(images, targets)

    step = SlowStep()
    batcher = Batcher(window=FOREVER)
    stop = threading.Event()
    rows: dict[str, float] = {}
    seated = threading.Barrier(2)

    def job(name: str, value: float, should_stop: Callable[[], bool] | None) -> None:
        with batcher.join("key") as seat:
            seated.wait(JOIN_SECONDS)
            terms, _ = seat.evaluate(step, image(value), targets_for(step, 0.0), should_stop)
            rows[name] = float(terms[0])

    def conductor() -> None:
        assert entered.wait(JOIN_SECONDS)
        stop.set()  # the batch is already running
        gate.set()

    errors = run_threads(lambda: job("a", 1.0, stop.is_set), lambda: job("b", 2.0, None), conductor)
    assert errors == [None, None, None]
    assert step.sizes() == [2]
    assert rows == {"a": 60.0, "b": 240.0}


def test_a_failing_batch_fails_every_job_in_it() -> None:
    step = NumpyStep(fail=MemoryError("device out of memory"))
    batcher = Batcher(window=FOREVER)
    seated = threading.Barrier(2)

    def job() -> None:
        with batcher.join("key") as seat:
            seated.wait(JOIN_SECONDS)
            seat.evaluate(step, image(0.0), targets_for(step, 1.0))

    errors = run_threads(job, job)
    assert all(isinstance(e, MemoryError) for e in errors)
    assert step.sizes() == [2]


@pytest.mark.parametrize(("window", "max_batch"), [(-1.0, 2), (0.01, 0)])
def test_bad_settings_are_refused(window: float, max_batch: int) -> None:
    with pytest.raises(ValueError):
        Batcher(window=window, max_batch=max_batch)


def test_a_request_arriving_during_a_running_batch_waits_for_it_and_they_fall_in_step() -> None:
    """Jobs start out of step; rather than run beside the batch in flight (window or not), the
    newcomer waits for its jobs to come back, and from then on they share every batch."""
    gate, entered = threading.Event(), threading.Event()
    now = [0.0]

    class GatedStep(NumpyStep):
        def loss_and_grad(self, images: Array, targets: DeviceTargets) -> tuple[Array, Array]:
            if not gate.is_set():
                entered.set()
                gate.wait(JOIN_SECONDS)
            return super().loss_and_grad(images, targets)

    step = GatedStep()
    batcher = Batcher(window=1.0, clock=lambda: now[0])
    b_seated, b_polled = threading.Event(), threading.Event()

    def job_a() -> None:
        with batcher.join("key") as seat:
            for _ in range(3):
                seat.evaluate(step, image(0.0), targets_for(step, 1.0))

    def b_should_stop() -> bool:
        b_polled.set()  # polled only while B's request waits in a forming batch
        return False

    def job_b() -> None:
        assert entered.wait(JOIN_SECONDS)  # A's first batch (alone) is in the step
        with batcher.join("key") as seat:
            b_seated.set()
            for _ in range(2):
                seat.evaluate(step, image(1.0), targets_for(step, 1.0), b_should_stop)

    def conductor() -> None:
        assert b_seated.wait(JOIN_SECONDS) and b_polled.wait(JOIN_SECONDS)
        now[0] += 10.0  # B's window is long over ...
        b_polled.clear()
        assert b_polled.wait(JOIN_SECONDS)  # ... and B looked again, still waiting for A
        gate.set()

    assert run_threads(job_a, job_b, conductor) == [None, None, None]
    assert step.sizes() == [1, 2, 2]


@pytest.mark.parametrize(
    ("count", "max_batch", "pad", "rows"),
    [
        (1, 8, True, 1),
        (2, 8, True, 2),
        (3, 8, True, 4),
        (5, 8, True, 8),
        (5, 6, True, 6),
        (6, 6, True, 6),
        (3, 8, False, 3),
    ],
)
def test_padded_rows_keep_compiling_backends_to_a_few_batch_sizes(
    count: int, max_batch: int, pad: bool, rows: int
) -> None:
    assert padded_rows(count, max_batch, pad) == rows


def test_three_jobs_on_a_compiling_backend_run_as_four_rows_each_getting_its_own() -> None:
    class CompilingStep(NumpyStep):
        compiles_per_shape = True

    step = CompilingStep()
    batcher = Batcher(window=FOREVER)
    seated = threading.Barrier(3)
    got: dict[float, float] = {}

    def job(value: float) -> None:
        with batcher.join("key") as seat:
            seated.wait(JOIN_SECONDS)
            terms, grad = seat.evaluate(step, image(value), targets_for(step, 0.0))
            assert np.array_equal(grad, 2 * image(value))
            got[value] = float(terms[0])

    assert run_threads(*(lambda v=float(v): job(v) for v in (1, 2, 3))) == [None] * 3
    assert step.sizes() == [4]  # padded with a repeated row, not compiled for 3
    assert got == {1.0: 60.0, 2.0: 240.0, 3.0: 540.0}
    assert batcher.stats.evaluations == 3  # the padding row is nobody's evaluation
