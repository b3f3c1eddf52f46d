"""`styletx-client job get|watch|cancel KEY`: a job by its request key."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from styletx_client._progress import ProgressReporter, format_losses
from styletx_client.events import Result
from styletx_client.jobs import JobInfo

from .common import EXIT_FAILURE, EXIT_OK, err, open_client, write


def add_job(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    connection: argparse.ArgumentParser,
) -> None:
    job = commands.add_parser(
        "job",
        help="look at, watch or cancel a job by its request key",
        description="Jobs are named by the request key they were started with (stylize prints "
        "it when a call fails; --request-key chooses it).",
    )
    actions = job.add_subparsers(dest="action", required=True, metavar="ACTION")
    get = actions.add_parser(
        "get", parents=[connection], help="print the job's state; -o writes its result"
    )
    get.add_argument("key", metavar="KEY", help="the job's request key")
    get.add_argument("-o", "--output", type=Path, help="write the result here when the job is done")
    get.set_defaults(handler=job_get)
    watch = actions.add_parser(
        "watch",
        parents=[connection],
        help="follow the job's progress until it ends; -o writes its result",
    )
    watch.add_argument("key", metavar="KEY", help="the job's request key")
    watch.add_argument("-o", "--output", type=Path, help="where to write the result")
    watch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    watch.set_defaults(handler=job_watch)
    cancel = actions.add_parser(
        "cancel", parents=[connection], help="cancel the job (idempotent); prints its state"
    )
    cancel.add_argument("key", metavar="KEY", help="the job's request key")
    cancel.set_defaults(handler=job_cancel)


def describe_job(info: JobInfo) -> str:
    """One line a shell user reads: the job's state and where it stands."""
    parts = [f"{info.request_key}: {info.state}"]
    if info.state == "queued":
        parts.append(f"position {info.position}, waited {info.queue_time:.1f}s")
    if info.progress is not None and info.state != "done":
        p = info.progress
        parts.append(
            f"iteration {p.iteration}, {p.evaluations}/{p.max_evaluations} evaluations, "
            f"{format_losses(p.losses)}"
        )
    if info.state in ("running", "failed", "cancelled") and info.started is not None:
        parts.append(f"queued {info.queue_time:.1f}s, computing {info.compute_time:.1f}s")
    if info.result is not None:
        r = info.result
        parts.append(
            f"{r.width}x{r.height} {r.format}, {r.evaluations} evaluations, queued "
            f"{r.queue_time:.1f}s, computed {r.compute_time:.1f}s, {format_losses(r.losses)}"
        )
    if info.error is not None:
        parts.append(f"{info.error.code.name}: {info.error.message}")
    return "; ".join(parts)


def job_get(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        info = client.get_job(args.key, include_image=args.output is not None)
    sys.stdout.write(describe_job(info) + "\n")
    if args.output is not None:
        if info.result is None:
            err(f"nothing written: the job is {info.state}")
            return EXIT_FAILURE
        err(f"wrote {write(info.result.save, args.output)}")
    return EXIT_OK


def job_watch(args: argparse.Namespace) -> int:
    reporter = ProgressReporter(sys.stderr, enabled=not args.quiet, previews=None)
    result: Result | None = None
    succeeded = False
    try:
        with open_client(args) as client, client.watch_job(args.key) as events:
            for event in events:
                reporter(event)
                if isinstance(event, Result):
                    result = event
        succeeded = True
    finally:
        reporter.close(keep=succeeded)
    if result is None:
        err("the stream ended without a result")
        return EXIT_FAILURE
    if args.output is not None:
        err(f"wrote {write(result.save, args.output)}")
    sys.stdout.write(f"{args.key}: done; {format_losses(result.losses)}\n")
    return EXIT_OK


def job_cancel(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        state = client.cancel_job(args.key)
    sys.stdout.write(f"{args.key}: {state}\n")
    return EXIT_OK
