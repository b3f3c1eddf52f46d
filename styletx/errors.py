"""Engine exceptions: the one vocabulary the server and CLI map to statuses and exit codes."""

from __future__ import annotations


class StyletxError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidOptions(StyletxError, ValueError):
    """A `StyleOptions` field (or a stylize argument) is out of range; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidImage(StyletxError, ValueError):
    """Image bytes could not be decoded or the image is unusable (empty, truncated, unknown)."""

    def __init__(self, message: str, *, field: str = "image") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ImageTooLarge(InvalidImage):
    """The image header declares more pixels than allowed (decompression-bomb guard)."""

    def __init__(self, pixels: int, limit: int, *, field: str = "image") -> None:
        super().__init__(
            f"image declares {pixels} pixels, more than the limit of {limit}", field=field
        )
        self.pixels = pixels
        self.limit = limit


class DeviceMemoryExceeded(InvalidOptions):
    """The job would need more device memory than the device has, even running alone.

    An option error on `size`: the message names the largest size that fits (`max_size`, 0 when
    none does), so the caller can ask again smaller (see `styletx.memory`).
    """

    def __init__(self, *, needed: float, available: float, device: str, max_size: int) -> None:
        gib = 1024**3
        where = f" on {device}" if device else ""
        fix = (
            f"the largest size that fits at this aspect ratio is {max_size}"
            if max_size
            else "no size fits; lower style_scale or use smaller style images"
        )
        super().__init__(
            "size",
            f"the job needs about {needed / gib:.1f} GiB of device memory{where}, more than the "
            f"{available / gib:.1f} GiB jobs may use there; {fix}",
        )
        self.needed = needed
        self.available = available
        self.max_size = max_size


class NonFiniteLoss(InvalidOptions):
    """A loss term or the gradient became inf or NaN while optimising: the weights (or the TV
    power) are too large for float arithmetic at this image. An option error on the weight of
    the term that overflowed (`field`), so the caller knows what to lower."""

    def __init__(self, field: str, message: str, *, evaluation: int) -> None:
        super().__init__(field, message)
        self.evaluation = evaluation


class WeightsError(StyletxError):
    """VGG16 weights are missing, unreadable or not the expected network."""


class WeightsNotFound(WeightsError):
    """No weights file could be resolved; the message names the command that fixes it."""


class BackendUnavailable(StyletxError):
    """The requested Keras backend is unknown, not installed, or Keras already runs another one."""


class Cancelled(StyletxError):
    """The caller's `should_stop` asked the optimisation to stop."""


class OutOfMemory(StyletxError):
    """The framework ran out of memory (device or host) running a job: the backends raise it
    in place of TensorFlow's, JAX's or Python's own error, which is chained as its cause."""
