"""Pixel coordinates of a sampling grid, with PyTorch's values and derivatives.

One home for what every sampling kernel shares: unnormalising [-1, 1] to
pixels, the `"border"` and `"reflection"` padding of coordinates, the bound
that keeps coordinates finite, and the near-integer snap.

PyTorch's derivative at the kinks is the contract (`shared/DESIGN.md`, rule
6): a corner is `floor(x)` of the coordinate as computed, so at an integer
the derivative is taken on [x, x + 1]; `border` and `reflection` clip with a
derivative of 1 strictly inside the image and 0 on or beyond its border.
"""

import tensorflow as tf

from keras_stn.core import coordinates as _shared

# The bounds every backend shares (`keras_stn.core.coordinates`).
MARGIN = _shared.MARGIN
_REFLECTION_LIMIT = _shared.REFLECTION_LIMIT


def unnormalize(coord, size, align_corners, fused=False):
    """Maps [-1, 1] to pixel coordinates, rounded as PyTorch rounds them.

    With `fused=True` (PyTorch's 2-D CPU kernel, whose compiler fuses the
    multiply and subtract of `(x + 1) * size / 2 - 0.5`), a float32
    coordinate is rounded once, through float64, as a fused multiply-add
    would. The two roundings differ by an ulp, which matters only at an
    integer: at the identity θ, where every pixel coordinate is one, they
    choose the corners of a derivative (the snap makes the values equal).
    """
    if align_corners:
        return (coord + 1.0) / 2.0 * (size - 1.0)
    if fused and coord.dtype == tf.float32:
        return _fused_unnormalize(coord, size)
    return ((coord + 1.0) * size - 1.0) / 2.0


def _fused_unnormalize(coord, size):
    half_size = size / 2.0

    @tf.custom_gradient
    def fused(coord):
        # Exact in float64 (a 24-bit coordinate times a half-integer size),
        # then rounded once to float32.
        wide = tf.cast(coord + 1.0, tf.float64) * tf.cast(half_size,
                                                           tf.float64)

        def gradient(upstream):
            return upstream * half_size

        return tf.cast(wide - 0.5, tf.float32), gradient

    return fused(coord)


def bounded(coord, size, padding_mode):
    """Finite pixel coordinates: NaN far outside, the rest clamped.

    Zeros and border clamp to `MARGIN` pixels around the image, which reads
    the same; reflection clamps to ±2**23, where float32 has no fraction.
    """
    # NaN compares unequal to itself: send it outside the image.
    coord = tf.where(tf.equal(coord, coord), coord, -float(MARGIN))
    if padding_mode == "reflection":
        return tf.clip_by_value(coord, -_REFLECTION_LIMIT, _REFLECTION_LIMIT)
    return tf.clip_by_value(coord, -float(MARGIN), size - 1.0 + MARGIN)


def clip(coord, size):
    """Clamps to [0, size - 1] with PyTorch's derivative.

    1 strictly inside, 0 on the border and beyond (TF's own `clip_by_value`
    passes the gradient on the border too).
    """
    inside = tf.logical_and(coord > 0.0, coord < size - 1.0)
    clamped = tf.clip_by_value(tf.stop_gradient(coord), 0.0, size - 1.0)
    return tf.where(inside, coord, clamped)


def reflect(coord, twice_low, twice_high):
    """Reflects `coord` into [twice_low / 2, twice_high / 2], as PyTorch does.

    The derivative is ±1 by the parity of the reflections.
    """
    minimum = twice_low / 2.0
    # A zero span only happens for a single pixel with align_corners=True,
    # where the final clip sends everything to 0 anyway.
    span = tf.maximum((twice_high - twice_low) / 2.0, 1.0)
    coord = tf.abs(coord - minimum)
    flips = tf.floor(coord / span)
    extra = coord - flips * span
    even = tf.equal(flips - 2.0 * tf.floor(flips / 2.0), 0.0)
    return tf.where(even, extra + minimum, span - extra + minimum)


def pad(coord, size, padding_mode, align_corners):
    """Applies `"border"` / `"reflection"` to pixel coordinates, as PyTorch."""
    if padding_mode == "reflection":
        if align_corners:
            coord = reflect(coord, 0.0, 2.0 * (size - 1.0))
        else:
            coord = reflect(coord, -1.0, 2.0 * size - 1.0)
    if padding_mode != "zeros":
        coord = clip(coord, size)
    return coord


def source(coord, size, padding_mode, align_corners, fused=False):
    """Normalised coordinates to padded pixel coordinates: what is read.

    `fused`: as in `unnormalize`, for 2-D images.
    """
    size = tf.cast(size, coord.dtype)
    coord = bounded(unnormalize(coord, size, align_corners, fused), size,
                    padding_mode)
    return pad(coord, size, padding_mode, align_corners)


def snap_tolerance(size, dtype):
    """How close to an integer a pixel coordinate of an axis of `size`
    pixels lands by rounding alone (16× the float error of a coordinate
    of that size: 2.7e-5 px at 28 px, 1e-4 px at 100 px)."""
    return _shared.snap_tolerance(size, tf.as_dtype(dtype).name)


def split(coord, tolerance):
    """Corner `floor(coord)` and the fraction `coord - corner`, snapped.

    The normalised coordinate of a pixel centre is not representable, so an
    identity, integer-shift or quarter-turn warp lands a few ulps off the
    centres and would blend in a neighbour by as much (about `size × 6e-8`).
    A fraction within `tolerance` of 0 or 1 is snapped onto it, which makes
    such warps exact at any size. The corner is the floor of the coordinate
    as computed, unsnapped, so the snap never changes which corners a
    derivative is taken against: a coordinate just below 5 is read as 5
    exactly and differentiated on [4, 5], as PyTorch does.

    Args:
        coord: float tensor of pixel coordinates, finite.
        tolerance: Python float, from `snap_tolerance`.

    Returns:
        `(corner, fraction)`: the corner as a float tensor, the fraction in
        [0, 1]. The fraction's gradient is not defined through the snap; the
        callers differentiate the interpolation themselves (`straight`).
    """
    corner = tf.floor(coord)
    fraction = coord - corner
    # Scalar branches: SELECT_V2 broadcasts them (no ZEROS_LIKE in TFLite).
    zero, one = (tf.constant(value, fraction.dtype) for value in (0, 1))
    fraction = tf.where(fraction <= tolerance, zero, fraction)
    fraction = tf.where(fraction >= 1.0 - tolerance, one, fraction)
    return corner, fraction


def straight(coord, tolerance):
    """`split` with the derivative of the fraction 1 (straight through the
    snap), for kernels differentiated by TensorFlow."""
    corner, snapped = split(coord, tolerance)
    fraction = coord - corner
    return corner, fraction + tf.stop_gradient(snapped - fraction)
