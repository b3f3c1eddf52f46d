"""Cross-job batching: the same-shape evaluations of concurrent jobs go through VGG16 as one batch.

One `Batcher` per device (per `Stylizer`). A job joins it for each scale it optimises, under a
key of (layer set, height, width): only requests of one key share a batch, so shapes and layer
sets never mix (the precision is the Stylizer's own). Each job keeps its L-BFGS state, progress
stream and cancellation in its own thread; only the loss-and-gradient step is shared.

How a batch forms: the first request of a key opens it; it closes when every job seated at that
key has a request in it, when `max_batch` rows are in, or `window` seconds after it opened,
whichever comes first; but while another batch of the key is being computed, it waits for that
batch (the jobs in it come back within one L-BFGS step) and the window restarts when it ends.
So jobs that started out of step (each computes its targets at its own time) fall into lock
step after one evaluation and stay there: each evaluates, spends milliseconds in L-BFGS, and the
batch is full again without waiting. A job alone at its key never waits; the window only bounds
how long a batch waits for a straggler. Whichever waiting thread sees the batch close runs it,
then hands every job its own row. A job cancelled while its request waits leaves the batch (the
rest go on without it); once its batch runs, it gets its row like the others (one evaluation at
most) and stops at its next check.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from styletx.errors import Cancelled

if TYPE_CHECKING:  # base imports Keras, which must not load before the backend is chosen
    from styletx.backends.base import Array, DeviceTargets, LossStep

log = logging.getLogger(__name__)

#: Most jobs evaluated in one batch (activation memory grows with the batch).
MAX_BATCH = 8
#: Gathering window used on accelerators when the caller names none: a few L-BFGS steps' time
#: at 256-512 px, far below one evaluation on a CPU (where batching is off by default).
DEFAULT_WINDOW_SECONDS = 0.010
#: How often a waiting request re-checks its job's `should_stop`.
POLL_SECONDS = 0.02

StopCallback = Callable[[], bool]


@dataclass(eq=False)
class _Request:
    seat: int
    image: Array
    targets: DeviceTargets
    result: tuple[Array, Array] | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass(eq=False)
class _Batch:
    step: LossStep
    deadline: float
    requests: list[_Request] = field(default_factory=list)


@dataclass(eq=False)
class _Group:
    """The jobs seated at one key, the batch now forming, and the last joined targets."""

    seats: int = 0
    pending: _Batch | None = None
    #: Batches of this key being computed now.
    running: int = 0
    #: (the parts, their concatenation): rows stay the same while the same jobs share batches.
    joined: tuple[tuple[DeviceTargets, ...], DeviceTargets] | None = None


@dataclass(frozen=True)
class BatchStats:
    """Counters since the batcher was made: step calls, the rows they carried, the largest."""

    batches: int
    evaluations: int
    largest: int


def padded_rows(count: int, max_batch: int, pad: bool) -> int:
    """Rows a batch of `count` requests runs with: `count`, or with `pad` the next power of two
    (at most `max_batch`, and never fewer than `count`)."""
    if not pad or count <= 1:
        return count
    return max(count, min(1 << (count - 1).bit_length(), max_batch))


class Seat:
    """One job's place at one key of a `Batcher` (from `Batcher.join`)."""

    def __init__(self, batcher: Batcher, group: _Group, number: int) -> None:
        self._batcher = batcher
        self._group = group
        self.number = number

    def evaluate(
        self,
        step: LossStep,
        image: Array,
        targets: DeviceTargets,
        should_stop: StopCallback | None = None,
    ) -> tuple[Array, Array]:
        """Loss terms `[4]` and gradient `[H, W, 3]` of one image (`targets` of batch 1),
        evaluated together with the requests of the other jobs at this key.

        `should_stop` is polled while the request waits for its batch to close, under the
        batcher's lock: it must answer at once (read a flag), never block.
        """
        return self._batcher._evaluate(self._group, self.number, step, image, targets, should_stop)


class Batcher:
    """Gathers same-key evaluation requests of concurrent jobs into one `LossStep` call."""

    def __init__(
        self,
        window: float = DEFAULT_WINDOW_SECONDS,
        max_batch: int = MAX_BATCH,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window < 0:
            raise ValueError(f"window must be >= 0 seconds, got {window}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.window = window
        self.max_batch = max_batch
        self._clock = clock
        self._cond = threading.Condition()
        self._groups: dict[Hashable, _Group] = {}
        self._numbers = itertools.count()
        self._batches = 0
        self._evaluations = 0
        self._largest = 0

    @property
    def stats(self) -> BatchStats:
        with self._cond:
            return BatchStats(self._batches, self._evaluations, self._largest)

    def seated(self, key: Hashable) -> int:
        """Jobs seated at `key` now."""
        with self._cond:
            group = self._groups.get(key)
            return 0 if group is None else group.seats

    @contextlib.contextmanager
    def join(self, key: Hashable) -> Iterator[Seat]:
        """Seat a job at `key` for the duration of the block (one scale of its optimisation)."""
        with self._cond:
            group = self._groups.setdefault(key, _Group())
            group.seats += 1
            seat = Seat(self, group, next(self._numbers))
        try:
            yield seat
        finally:
            with self._cond:
                group.seats -= 1
                if group.seats == 0:
                    # Nobody can have a request left here (each seat's requests end before it
                    # leaves): forget the key and the joined targets it holds on the device.
                    self._groups.pop(key, None)
                # One job fewer to wait for: a forming batch may be complete now.
                self._cond.notify_all()

    # -- the evaluation, on each job's thread -------------------------------------------------

    def _closes(self, group: _Group, batch: _Batch) -> bool:
        rows = len(batch.requests)
        if rows >= group.seats or rows >= self.max_batch:
            return True
        # The jobs of a running batch come back soon: wait for them rather than run beside them.
        return group.running == 0 and self._clock() >= batch.deadline

    def _evaluate(
        self,
        group: _Group,
        number: int,
        step: LossStep,
        image: Array,
        targets: DeviceTargets,
        should_stop: StopCallback | None,
    ) -> tuple[Array, Array]:
        request = _Request(number, image, targets)
        with self._cond:
            batch = group.pending
            if batch is None:
                batch = group.pending = _Batch(step, self._clock() + self.window)
            batch.requests.append(request)
            self._cond.notify_all()
            mine = False
            while not request.done:
                if group.pending is batch:
                    if self._closes(group, batch):
                        group.pending = None
                        group.running += 1
                        mine = True
                        break
                    if should_stop is not None and should_stop():
                        batch.requests.remove(request)
                        if not batch.requests:
                            group.pending = None
                        self._cond.notify_all()
                        raise Cancelled("stylization cancelled while waiting for a batch")
                    wait = POLL_SECONDS
                    if group.running == 0:
                        wait = min(wait, max(0.0, batch.deadline - self._clock()))
                else:
                    wait = POLL_SECONDS  # another thread runs our batch
                self._cond.wait(wait)
        if mine:
            self._run(group, batch)
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _joined(
        self, group: _Group, step: LossStep, parts: Sequence[DeviceTargets]
    ) -> DeviceTargets:
        """The parts' targets as one batch, reused while the same jobs share batches."""
        with self._cond:
            cached = group.joined
        if (
            cached is not None
            and len(cached[0]) == len(parts)
            and all(a is b for a, b in zip(cached[0], parts, strict=True))
        ):
            return cached[1]
        joined = step.concat(parts)
        with self._cond:
            group.joined = (tuple(parts), joined)
        return joined

    def _run(self, group: _Group, batch: _Batch) -> None:
        requests = sorted(batch.requests, key=lambda r: r.seat)
        try:
            # Steps that compile per input shape (XLA) get batches of 1, 2, 4, 8 rows only, the
            # last row repeated: a 3-job batch costs a fourth row's compute, not a compilation.
            rows = padded_rows(len(requests), self.max_batch, batch.step.compiles_per_shape)
            filled = [*requests, *[requests[-1]] * (rows - len(requests))]
            if rows == 1:
                targets = requests[0].targets
            else:
                targets = self._joined(group, batch.step, [r.targets for r in filled])
            images = np.stack([r.image for r in filled])
            terms, grad = batch.step.loss_and_grad(images, targets)
            for row, request in enumerate(requests):
                request.result = (terms[row], grad[row])
        except BaseException as exc:  # every job of the batch sees the failure (e.g. OOM)
            for request in requests:
                request.error = exc
        finally:
            with self._cond:
                for request in requests:
                    request.done = True
                group.running -= 1
                if group.pending is not None:
                    # It waited for this batch: give its jobs the window from now.
                    group.pending.deadline = max(
                        group.pending.deadline, self._clock() + self.window
                    )
                self._batches += 1
                self._evaluations += len(requests)
                self._largest = max(self._largest, len(requests))
                self._cond.notify_all()


__all__ = ["DEFAULT_WINDOW_SECONDS", "MAX_BATCH", "BatchStats", "Batcher", "Seat", "padded_rows"]
