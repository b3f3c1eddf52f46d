"""Pixel sizes a job works at, computed from image dimensions alone (no pixels, no TensorFlow).

The engine sizes its work with these functions and the server checks its limits with the same
ones from the images' header dimensions, before it decodes anything.
"""

from __future__ import annotations

from styletx.errors import InvalidOptions

#: Shortest side VGG16 can take: the deepest style layer (block5_conv3) sits after four 2x2
#: poolings, so a side under 16 px leaves it no pixel at all.
MIN_SIDE = 16
#: Default step (px) of `padded_size`: 50 aspect ratios at 260 px share 9 shapes instead of 50
#: (bench/shape_bench.py); a padded image costs at most 16 rows or columns more.
DEFAULT_SHAPE_STEP = 16


def fit_longest(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) scaled so the longest side is `size`, aspect ratio kept, each side >= 1."""
    if height < 1 or width < 1 or size < 1:
        raise ValueError(f"sides must be positive, got {height}x{width} -> {size}")
    longest = max(height, width)

    def scale(side: int) -> int:
        # Integer round-half-up of side * size / longest: exact and the same on every platform.
        return max(1, (2 * side * size + longest) // (2 * longest))

    return scale(height), scale(width)


def output_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of the output for a `height` x `width` content image at `size`.

    Raises InvalidOptions (field `size`) when the shorter side would fall under `MIN_SIDE`.
    """
    out_h, out_w = fit_longest(height, width, size)
    if min(out_h, out_w) < MIN_SIDE:
        raise InvalidOptions(
            "size",
            f"a {width}x{height} content image at size {size} gives a {out_w}x{out_h} output; "
            f"its shorter side must be at least {MIN_SIDE} px for VGG16: raise size or crop "
            "the image to a less elongated shape",
        )
    return out_h, out_w


def style_size(
    style_height: int, style_width: int, output: tuple[int, int], style_scale: float
) -> tuple[int, int]:
    """(height, width) a style image is resized to: its longest side is `style_scale` times the
    output's longest side, its own aspect ratio kept (neural-style's -style_scale).

    A style whose shorter side would fall under `MIN_SIDE` (a small style_scale, a coarse scale of
    the pyramid, a thin image) is enlarged until that side is `MIN_SIDE`, aspect ratio kept, so
    VGG16 always gets an image it can pool down to its deepest layer.
    """
    longest = max(1, round(style_scale * max(output)))
    height, width = fit_longest(style_height, style_width, longest)
    if min(height, width) >= MIN_SIDE:
        return height, width
    shorter = min(style_height, style_width)

    def enlarge(side: int) -> int:
        return max(MIN_SIDE, (2 * side * MIN_SIDE + shorter) // (2 * shorter))

    return enlarge(style_height), enlarge(style_width)


def cover_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """Smallest (height, width) with the image's aspect ratio that covers `target` (both sides at
    least as large): resize to it, then centre-crop to `target` (init=style)."""
    target_h, target_w = target
    if height < 1 or width < 1 or target_h < 1 or target_w < 1:
        raise ValueError(f"sides must be positive, got {height}x{width} -> {target_h}x{target_w}")
    # Compare target_h / height with target_w / width without floats.
    if target_h * width >= target_w * height:
        return target_h, max(target_w, -(-width * target_h // height))
    return max(target_h, -(-height * target_w // width)), target_w


def scale_sizes(height: int, width: int, scales: int) -> list[tuple[int, int]]:
    """Sizes of the coarse-to-fine pyramid, coarsest first, each half the next.

    Levels whose shorter side would fall under `MIN_SIDE` are left out (an elongated image gets
    fewer scales rather than an error); the full size is always the last level.
    """
    levels = []
    for k in range(scales - 1, 0, -1):
        h, w = max(1, round(height / 2**k)), max(1, round(width / 2**k))
        if min(h, w) >= MIN_SIDE:
            levels.append((h, w))
    return [*levels, (height, width)]


def padded_size(height: int, width: int, step: int) -> tuple[int, int]:
    """(height, width) the network runs a `height` x `width` image at (`styletx.backends`
    pads it with masks that keep every result exact): the longer side as it is, the shorter
    rounded up to a multiple of `step` (at most the longer). `step` 1 pads nothing.

    Why only the shorter side: a job's `size` sets the longer side, and a service sees few sizes;
    the photo's aspect ratio sets the shorter one, and every photo brings another. Rounding it
    makes the many aspect ratios share a few shapes, so the per-shape kernels the framework
    caches (oneDNN keeps each shape's primitives) stay few, while square and common images are
    not padded at all.
    """
    if step < 1:
        raise ValueError(f"step must be positive, got {step}")

    def up(side: int, cap: int) -> int:
        return min(cap, -(-side // step) * step)

    if height < width:
        return up(height, width), width
    return height, up(width, height)


__all__ = [
    "DEFAULT_SHAPE_STEP",
    "MIN_SIDE",
    "cover_size",
    "fit_longest",
    "output_size",
    "padded_size",
    "scale_sizes",
    "style_size",
]
