"""A job's run on a worker thread: the engine's work, its progress events and its result.

The worker never touches an RPC: it publishes to the job's events. Whatever the engine raises,
the job ends with a status (INTERNAL naming only the request id for the unexpected).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from styletx.errors import Cancelled
from styletx.geometry import output_size
from styletx.images import encode_image
from styletx.protocol import Engine
from styletx.result import Progress
from styletx.tracing import child
from styletx_api.v1 import style_transfer_pb2 as pb
from styletx_server.errors import statuses
from styletx_server.intake.convert import (
    duration,
    format_to_proto,
    losses_to_proto,
    options_to_proto,
)
from styletx_server.jobs.mailbox import Final
from styletx_server.observe.logs import log_event

if TYPE_CHECKING:
    from styletx_server.jobs.job import StylizeJob

log = logging.getLogger(__name__)


class JobRun:
    """One run of `job` on `engine`, on the calling (worker) thread."""

    def __init__(self, job: StylizeJob, engine: Engine) -> None:
        self._job = job
        self._engine = engine

    def run(self) -> None:
        job = self._job
        with job.trace.running():
            try:
                self._run()
            except Exception as exc:  # anything at all: the streams still end, with INTERNAL
                job.accounting.computed()
                status = statuses.for_exception(exc, job.request_id)
                if status.reason is statuses.Reason.INTERNAL:
                    log_event(
                        log,
                        "job_failed",
                        level=logging.ERROR,
                        exc_info=exc,
                        request_id=job.request_id,
                        code=status.code.name,
                    )
                job.complete(Final(status=status))

    def _run(self) -> None:
        job = self._job
        spec = job.spec
        if spec is None or job.stop_reason is not None:
            job.end_stopped()
            return
        queue_seconds = job.accounting.started()
        height, width = output_size(spec.content.shape[0], spec.content.shape[1], spec.options.size)
        # `auto` resolves per device and job.
        precision = job.accounting.precision = self._engine.precision_for(spec.options)
        job.events.publish(
            pb.StylizeResponse(
                started=pb.StartedEvent(
                    options=options_to_proto(spec.options),
                    width=width,
                    height=height,
                    queue_time=duration(queue_seconds),
                    request_id=job.request_id,
                    backend=self._engine.backend,
                    precision=precision,
                    device=self._engine.device,
                )
            )
        )
        try:
            result = self._engine.stylize(
                spec.content,
                spec.styles,
                spec.options,
                on_progress=self._on_progress,
                should_stop=job.should_stop,
            )
        except Cancelled:
            job.accounting.computed()
            job.end_stopped()
            return
        with child("encode"):
            data = encode_image(result.image, spec.output_format, quality=spec.output_quality)
        job.accounting.computed()
        out_h, out_w = result.image.shape[:2]
        job.accounting.finished(out_h, out_w, result.iterations, result.evaluations)
        times = job.times
        response = pb.StylizeResponse(
            result=pb.ResultEvent(
                image=pb.EncodedImage(
                    data=data, format=format_to_proto(spec.output_format), width=out_w, height=out_h
                ),
                losses=losses_to_proto(result.losses),
                iterations=result.iterations,
                evaluations=result.evaluations,
                queue_time=duration(times.queue_seconds),
                compute_time=duration(times.compute_seconds),
                request_id=job.request_id,
            )
        )
        encoding = (spec.output_format, spec.output_quality)
        job.complete(Final(response=response, pixels=result.image, encoding=encoding))

    def _on_progress(self, progress: Progress) -> None:
        job = self._job
        spec = job.spec
        assert spec is not None
        job.accounting.progressed(progress)
        event = pb.ProgressEvent(
            iteration=progress.iteration,
            evaluations=progress.evaluations,
            max_evaluations=spec.options.max_evaluations,
            losses=losses_to_proto(progress.losses),
            elapsed=duration(progress.elapsed_seconds),
            scale=progress.scale,
        )
        if progress.preview is not None:
            h, w = progress.preview.shape[:2]
            data = encode_image(progress.preview, spec.output_format, quality=spec.output_quality)
            event.preview.CopyFrom(
                pb.EncodedImage(
                    data=data, format=format_to_proto(spec.output_format), width=w, height=h
                )
            )
        job.events.publish(pb.StylizeResponse(progress=event))


__all__ = ["JobRun"]
