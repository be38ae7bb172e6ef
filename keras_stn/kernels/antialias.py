"""Antialiased bilinear sampling of images: a mip-map, as graphics hardware
filters a texture that a warp shrinks.

Where a grid samples the input more sparsely than one sample per input pixel,
plain bilinear sampling reads 4 pixels and skips the rest: the output
aliases, and its gradient flickers. Here the image is first reduced to a
pyramid of prefiltered copies (level k: 2×2 box averages of level k − 1,
odd sizes extended by their edge, so a level-k pixel covers 2^k × 2^k input
pixels); each output pixel's footprint is measured from the grid itself, as
the longer of its two derivative vectors in input pixels per output pixel
(ρ, central differences inside the grid, one-sided at its edges); the
level of detail λ = log2 ρ − ½ (`LOD_BIAS`; 0 where the warp magnifies or
shrinks by less than √2, at most the last level) picks the two nearest
levels, each sampled bilinearly at the same point, blended by λ's
fraction.

Why this scheme: every step is a TFLite builtin (average pooling, log,
floor, gather, select, arithmetic) with no run-time shapes but the batch; the
cost is two bilinear reads per output pixel plus a pyramid a third the
image's size, whatever the scale (a Gaussian prefilter's kernel grows with
it); the blend is continuous in the grid, so the derivative with respect to
the grid is defined everywhere the plain sampler's is (through the
coordinates and through λ); and where the warp magnifies (ρ ≤ √2) λ is 0,
the second level's weight is 0 and the result is the plain sampler's (to
float rounding: the same arithmetic, without its fused rounding). Its limits: the footprint is isotropic (a strongly anisotropic
shrink is filtered by its longer axis, so it blurs the shorter one) and the
box pyramid is a coarser low-pass than an exact area filter.

Hostile grids: coordinates are bounded per level as the plain sampler's
(`coordinates.source`), and the footprint is measured on bounded
coordinates (NaN sent outside, ±Inf clamped at ±2^23 pixels), so values
and derivatives stay finite.
"""

import math

from keras_stn.core.coordinates import SNAP_RELATIVE
from keras_stn.kernels import coordinates as _coordinates
from keras_stn.kernels import differences
from keras_stn.kernels.sampler import _clamped_int as _clamped
from keras_stn.kernels.sampler import _in_range as _inside

# At most this many levels above the image (a 2^6 = 64× shrink).
MAX_LEVELS = 6
# Levels are chosen half an octave finer than the footprint: a level-k
# pixel read bilinearly spreads over a 2^k box widened by a 2^k-wide tent,
# wider than the footprint it stands for. Measured against the footprint
# integral (benchmarks/antialias_quality.py), a bias of ½ cut the error of
# a 3× shrink 2.0× → 3.7× below plain sampling's, and of a rotated 3×
# shrink 1.6× → 2.8×, leaving 4× and 8× unchanged.
LOD_BIAS = 0.5


def levels(height, width):
    """How many levels above the image the pyramid of an image of this size
    has: halving until an axis reaches one pixel, at most `MAX_LEVELS`."""
    return max(0, min(MAX_LEVELS, int(math.floor(math.log2(
        max(1, min(height, width)))))))


def pyramid(ops, images, count):
    """`[images, level 1, …, level count]`: each level the 2×2 box average of
    the one before, an odd axis first extended by its last row (column)."""
    result = [images]
    for _ in range(count):
        level = result[-1]
        if level.shape[1] % 2:
            level = ops.concatenate([level, level[:, -1:]], axis=1)
        if level.shape[2] % 2:
            level = ops.concatenate([level, level[:, :, -1:]], axis=2)
        result.append(ops.average_pool_2x2(level))
    return result


def level_of_detail(ops, x, y, count):
    """λ per output pixel from pixel coordinates `x`, `y` `[batch, rows,
    cols]` of the image: log2 of the longer derivative vector's length less
    `LOD_BIAS`, in [0, count]; NaN footprints give 0."""
    dx_cols, dy_cols = [differences.derivative(ops, c, 2) for c in (x, y)]
    dx_rows, dy_rows = [differences.derivative(ops, c, 1) for c in (x, y)]
    squared = ops.maximum(dx_cols * dx_cols + dy_cols * dy_cols,
                          dx_rows * dx_rows + dy_rows * dy_rows)
    squared = ops.where(ops.not_equal(squared, squared), 1.0, squared)
    # log2 ρ = ½ log2 ρ², and 0 wherever ρ ≤ 1 (with a zero derivative).
    lod = ops.log(ops.maximum(squared, 1.0)) * (0.5 / math.log(2.0))
    return ops.minimum(ops.maximum(lod - LOD_BIAS, 0.0), float(count))


def sample(ops, images, coords, padding_mode, align_corners):
    """Antialiased bilinear samples of `images [batch, height, width,
    channels]` (static height and width) at normalised `coords` `[x, y]`,
    each `[batch, rows, cols]` in a float coordinate dtype.

    Returns:
        `[batch, rows, cols, channels]` in the images' dtype.
    """
    dtype = ops.dtype(coords[0])
    value_dtype = ("float64" if "float64" in (ops.dtype(images), dtype)
                   else "float32")
    _, height, width, channels = images.shape
    count = levels(height, width)
    x, y = [_coordinates.unnormalize(ops, coord, float(size), align_corners)
            for coord, size in zip(coords, (width, height))]
    # The footprint of finite coordinates (NaN sent out, ±Inf clamped far
    # out): its derivative stays finite for hostile grids too.
    lod = level_of_detail(ops, *[
        _coordinates.bounded(ops, coord, float(size), "reflection")
        for coord, size in ((x, width), (y, height))], count)
    lower = ops.floor(lod)
    fraction = lod - lower
    lower = ops.cast(lower, "int32")
    upper = ops.minimum(lower + 1, count)
    levels_ = pyramid(ops, ops.cast(images, value_dtype), count)
    table = _LevelTable(ops, levels_, channels, dtype)
    output = None
    for level, weight in ((lower, 1.0 - fraction), (upper, fraction)):
        samples = ops.weighted(weight, table.bilinear(
            level, x, y, padding_mode, align_corners))
        output = samples if output is None else output + samples
    return ops.cast(output, ops.dtype(images))


class _LevelTable:
    """The pyramid packed into one `[batch * pixels, channels]` tensor, and
    per-level constants (offset, size, scale) gathered by level index."""

    def __init__(self, ops, levels_, channels, dtype):
        self.ops = ops
        sizes = [(level.shape[1], level.shape[2]) for level in levels_]
        offsets, total = [], 0
        for rows, cols in sizes:
            offsets.append(total)
            total += rows * cols
        self.flat = ops.reshape(ops.concatenate(
            [ops.reshape(level, (ops.shape(level)[0], -1, channels))
             for level in levels_], axis=1), (-1, channels))
        batch = ops.shape(levels_[0])[0]
        self.batch_offsets = ops.reshape(ops.arange(batch) * total,
                                         (-1, 1, 1))
        self.offsets = ops.constant(offsets, "int32")
        self.height, self.width = sizes[0]
        self.scales = ops.constant([0.5 ** k for k in range(len(sizes))],
                                   dtype)

    def bilinear(self, level, x, y, padding_mode, align_corners):
        """Bilinear samples of pyramid level `level` (int32 per output
        pixel) at image pixel coordinates `x`, `y` (level 0's)."""
        ops = self.ops
        scale = ops.take(self.scales, level)
        # Level k pixel j covers image pixels [j 2^k, (j + 1) 2^k): x_k =
        # (x + ½) 2^-k − ½, written so that level 0 is x itself.
        offset = 0.5 * scale - 0.5
        # A level's size is ceil(size / 2^k) = floor((size − 1) 2^-k) + 1,
        # exact in floating point (2^-k is).
        sizes = [ops.floor((size - 1.0) * scale) + 1.0
                 for size in (float(self.width), float(self.height))]
        corners, weights = [], []
        for coord, size in zip((x * scale + offset, y * scale + offset),
                               sizes):
            coord = _coordinates.pad(
                ops, _coordinates.bounded(ops, coord, size, padding_mode),
                size, padding_mode, align_corners)
            tolerance = ops.maximum(size, 1.0) * SNAP_RELATIVE[
                ops.dtype(coord)]
            low, high_weight = _coordinates.straight(ops, coord, tolerance)
            high = low + 1.0
            low_weight = 1.0 - high_weight
            if padding_mode == "zeros":
                low_weight = low_weight * _inside(ops, low, size)
                high_weight = high_weight * _inside(ops, high, size)
            corners.append((_clamped(ops, low, size), _clamped(ops, high, size)))
            weights.append((low_weight, high_weight))
        start = (self.batch_offsets + ops.take(self.offsets, level))
        width = ops.cast(sizes[0], "int32")
        output = None
        for row in (0, 1):
            for col in (0, 1):
                index = start + corners[1][row] * width + corners[0][col]
                values = ops.cast(ops.take(self.flat, index),
                                  ops.dtype(self.flat))
                term = ops.weighted(weights[1][row] * weights[0][col], values)
                output = term if output is None else output + term
        return output
