"""Pixel coordinates of a sampling grid, with PyTorch's values and derivatives.

What every sampling kernel shares: unnormalising [-1, 1] to pixels, the
bound that keeps coordinates finite, `"border"` and `"reflection"` padding
of coordinates, and the near-integer snap.

PyTorch's derivative at the kinks is the contract (`shared/DESIGN.md`, rule
6): a corner is `floor(x)` of the coordinate as computed, so at an integer
the derivative is taken on [x, x + 1]; `border` and `reflection` clip with a
derivative of 1 strictly inside the image and 0 on or beyond its border.
"""

from keras_stn.core.coordinates import MARGIN
from keras_stn.core.coordinates import REFLECTION_LIMIT
from keras_stn.core.coordinates import SNAP_RELATIVE
from keras_stn.core.coordinates import snap_tolerance as _snap_tolerance


def unnormalize(ops, coord, size, align_corners, fused=False):
    """Maps [-1, 1] to pixel coordinates, rounded as PyTorch rounds them.

    `fused=True` asks for the multiply-subtract of `(x + 1) * size / 2 - 0.5`
    rounded once, as PyTorch's 2-D CPU kernel (compiled with a fused
    multiply-add) rounds it; XLA contracts the plain formula so by itself.
    The two roundings differ by an ulp, which matters only at an integer,
    where it picks the corners of a derivative (the snap makes the values
    equal).
    """
    if align_corners:
        return (coord + 1.0) / 2.0 * (size - 1.0)
    if fused and ops.dtype(coord) == "float32":
        return ops.fused_unnormalize(coord, size)
    return ((coord + 1.0) * size - 1.0) / 2.0


def bounded(ops, coord, size, padding_mode):
    """Finite pixel coordinates: NaN far outside, the rest clamped.

    Zeros and border clamp to `MARGIN` pixels around the image, which reads
    the same; reflection clamps to ±2**23, where float32 has no fraction.
    """
    # NaN compares unequal to itself: send it outside the image. Written as
    # a select on `x != x`, which converters keep as a select (tf2onnx turns
    # other float selects into `c * x + (1 - c) * y`, where NaN survives).
    coord = ops.where(ops.not_equal(coord, coord), -float(MARGIN), coord)
    if padding_mode == "reflection":
        return ops.clip(coord, -REFLECTION_LIMIT, REFLECTION_LIMIT)
    return ops.clip(coord, -float(MARGIN), size - 1.0 + MARGIN)


def clip(ops, coord, size):
    """Clamps to [0, size - 1] with PyTorch's derivative: 1 strictly inside,
    0 on the border and beyond (a plain clip passes it on the border too)."""
    inside = ops.logical_and(coord > 0.0, coord < size - 1.0)
    clamped = ops.clip(ops.stop_gradient(coord), 0.0, size - 1.0)
    return ops.where(inside, coord, clamped)


def reflect(ops, coord, twice_low, twice_high):
    """Reflects `coord` into [twice_low / 2, twice_high / 2], as PyTorch
    does; the derivative is ±1 by the parity of the reflections."""
    minimum = twice_low / 2.0
    # A zero span only happens for a single pixel with align_corners=True,
    # where the final clip sends everything to 0 anyway.
    span = ops.maximum((twice_high - twice_low) / 2.0, 1.0)
    coord = ops.abs(coord - minimum)
    flips = ops.floor(coord / span)
    extra = coord - flips * span
    even = ops.equal(flips - 2.0 * ops.floor(flips / 2.0), 0.0)
    return ops.where(even, extra + minimum, span - extra + minimum)


def pad(ops, coord, size, padding_mode, align_corners):
    """Applies `"border"` / `"reflection"` to pixel coordinates, as PyTorch."""
    if padding_mode == "reflection":
        if align_corners:
            coord = reflect(ops, coord, 0.0, 2.0 * (size - 1.0))
        else:
            coord = reflect(ops, coord, -1.0, 2.0 * size - 1.0)
    if padding_mode != "zeros":
        coord = clip(ops, coord, size)
    return coord


def source(ops, coord, size, padding_mode, align_corners, fused=False):
    """Normalised coordinates to padded pixel coordinates: what is read.

    `size` is an axis size from `ops.size_as`; `fused` as in `unnormalize`.
    """
    coord = bounded(ops, unnormalize(ops, coord, size, align_corners, fused),
                    size, padding_mode)
    return pad(ops, coord, size, padding_mode, align_corners)


def snap_tolerance(ops, size, dtype):
    """How close to an integer a pixel coordinate of an axis of `size`
    pixels lands by rounding alone (16× the float error of a coordinate of
    that size: 2.7e-5 px at 28 px in float32). `size` is a Python int, or a
    run-time scalar where only the run time knows it."""
    if isinstance(size, int):
        return _snap_tolerance(size, dtype)
    return ops.maximum(ops.cast(size, dtype), 1.0) * SNAP_RELATIVE[dtype]


def split(ops, coord, tolerance):
    """Corner `floor(coord)` and the fraction `coord - corner`, snapped.

    The normalised coordinate of a pixel centre is not representable, so an
    identity, integer-shift or quarter-turn warp lands a few ulps off the
    centres and would blend in a neighbour by as much (about `size × 6e-8`).
    A fraction within `tolerance` of 0 or 1 is snapped onto it, which makes
    such warps exact at any size. The corner is the floor of the coordinate
    as computed, unsnapped, so the snap never changes which corners a
    derivative is taken against: a coordinate just below 5 is read as 5
    exactly and differentiated on [4, 5], as PyTorch does.

    Returns:
        `(corner, fraction)`: the corner as a float tensor, the fraction in
        [0, 1], whose gradient is not defined through the snap (`straight`
        defines it).
    """
    corner = ops.floor(coord)
    fraction = coord - corner
    fraction = ops.where(fraction <= tolerance, 0.0, fraction)
    fraction = ops.where(fraction >= 1.0 - tolerance, 1.0, fraction)
    return corner, fraction


def straight(ops, coord, tolerance):
    """`split` with the derivative of the fraction 1 (straight through the
    snap), for kernels differentiated by the framework."""
    corner, snapped = split(ops, coord, tolerance)
    fraction = coord - corner
    return corner, fraction + ops.stop_gradient(snapped - fraction)
