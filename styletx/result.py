"""Values the engine hands back: per-iteration `Progress` and the final `Result`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: An RGB image, height x width x 3, uint8.
Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Losses:
    """Weighted loss terms of one evaluation (total = content + style + tv)."""

    total: float
    content: float
    style: float
    tv: float


@dataclass(frozen=True)
class Progress:
    """One L-BFGS iteration: counters, the losses at the accepted point, optional preview."""

    iteration: int
    evaluations: int
    losses: Losses
    elapsed_seconds: float
    #: Index of the current scale (0 = coarsest) when `scales > 1`.
    scale: int = 0
    #: Current image (RGB uint8) when the options asked for a preview at this iteration.
    preview: Image | None = None
    #: Wall time of each loss-and-gradient evaluation since the previous progress event.
    evaluation_seconds: tuple[float, ...] = ()


@dataclass(frozen=True)
class Result:
    """The stylized image and how it was obtained."""

    image: Image
    losses: Losses
    iterations: int
    evaluations: int
    #: Seconds spent preparing (resize, preprocess, targets, first-time compilation).
    setup_seconds: float
    #: Seconds spent in the L-BFGS optimisation.
    optimize_seconds: float
    #: Precision the job ran at ("float32", "mixed_bfloat16", ...; `auto` resolved).
    precision: str = "float32"

    @property
    def total_seconds(self) -> float:
        return self.setup_seconds + self.optimize_seconds

    @property
    def seconds_per_evaluation(self) -> float:
        return self.optimize_seconds / self.evaluations if self.evaluations else 0.0
