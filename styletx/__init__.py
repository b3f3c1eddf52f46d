"""styletx engine: Gatys et al. neural style transfer on Keras VGG16 with scipy's L-BFGS."""

from styletx.errors import (
    BackendUnavailable,
    Cancelled,
    ImageTooLarge,
    InvalidImage,
    InvalidOptions,
    OutOfMemory,
    StyletxError,
    WeightsError,
    WeightsNotFound,
)
from styletx.options import StyleOptions
from styletx.result import Image, Losses, Progress, Result

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "Cancelled",
    "Image",
    "ImageTooLarge",
    "InvalidImage",
    "InvalidOptions",
    "Losses",
    "OutOfMemory",
    "Progress",
    "Result",
    "StyleOptions",
    "StyletxError",
    "WeightsError",
    "WeightsNotFound",
    "__version__",
]
