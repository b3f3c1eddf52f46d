"""The CLI's progress display: a tqdm bar over evaluations with queue position and losses."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from ._convert import extension_for
from .events import Event, Losses, Progress, Queued, Result, Started


def format_losses(losses: Losses) -> str:
    """Compact loss summary, e.g. `loss 1.2e+05 (content 3.1e+03 style 9.8e+04 tv 1.9e+04)`."""
    return (
        f"loss {losses.total:.3g} (content {losses.content:.3g} "
        f"style {losses.style:.3g} tv {losses.tv:.3g})"
    )


class ProgressReporter:
    """Feeds stream events to a progress bar and writes preview images to a folder."""

    def __init__(self, stream: TextIO, *, enabled: bool, previews: Path | None) -> None:
        self._bar = tqdm(
            total=None,
            unit="eval",
            desc="connecting",
            file=stream,
            disable=not enabled,
            dynamic_ncols=True,
        )
        self._previews = previews
        self.preview_paths: list[Path] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, Queued):
            self._bar.set_description_str(f"queued (position {event.position})")
        elif isinstance(event, Started):
            # The precision the server resolved for this job (its --precision auto may pick
            # bfloat16 for some jobs and float32 for others).
            precision = f" ({event.precision})" if event.precision else ""
            self._bar.set_description_str(f"stylizing {event.width}x{event.height}{precision}")
            if event.options.max_evaluations:
                self._bar.reset(total=event.options.max_evaluations)
        elif isinstance(event, Progress):
            self._on_progress(event)
        elif isinstance(event, Result):
            self._advance(event.evaluations, max(event.evaluations, self._bar.total or 0))
            self._bar.set_postfix_str(f"iter {event.iterations} {format_losses(event.losses)}")

    def _on_progress(self, event: Progress) -> None:
        self._advance(event.evaluations, event.max_evaluations or self._bar.total)
        scale = f" scale {event.scale + 1}" if event.scale else ""
        self._bar.set_postfix_str(f"iter {event.iteration}{scale} {format_losses(event.losses)}")
        if self._previews is not None and event.preview is not None:
            name = f"preview_{event.iteration:04d}.{extension_for(event.preview.format)}"
            self.preview_paths.append(event.preview.save(self._previews / name))

    def _advance(self, evaluations: int, total: float | None) -> None:
        if total and self._bar.total != total:
            self._bar.total = total
        self._bar.update(evaluations - self._bar.n)

    def close(self, *, keep: bool = True) -> None:
        """Finish the bar; `keep=False` erases it (after a failure, so the error stands alone)."""
        self._bar.leave = keep
        self._bar.close()
