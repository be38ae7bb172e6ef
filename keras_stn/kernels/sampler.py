"""The gather-based sampler: nearest, bi-/trilinear and bicubic
interpolation of images and volumes, with PyTorch's values and derivatives.

Every gather index is clamped into range and whatever lies outside the
image is masked, after `coordinates.bounded` has made every coordinate
finite, so any grid, however hostile, yields finite output and no
out-of-bounds read. Sizes known only at run time are read from the images.
"""

import itertools

from keras_stn.core.coordinates import cubic_weights
from keras_stn.kernels import coordinates as _coordinates


def sample(ops, images, coords, interpolation, padding_mode, align_corners,
           fused=False):
    """Samples `images [batch, *spatial, channels]` at per-axis normalised
    coordinates `coords` (x first, each `[batch, *out]`, float32 or
    float64), on checked arguments.

    Args:
        ops: the op namespace (`keras_stn.kernels`).
        interpolation: `"nearest"`, `"bilinear"` or `"bicubic"` (2-D only).
        padding_mode: `"zeros"`, `"border"` or `"reflection"`.
        align_corners: bool, as in PyTorch.
        fused: round the unnormalisation as a fused multiply-add
            (`coordinates.unnormalize`).

    Returns:
        `[batch, *out, channels]` in the images' dtype.
    """
    coord_dtype = ops.dtype(coords[0])
    value_dtype = ("float64" if "float64" in (ops.dtype(images), coord_dtype)
                   else "float32")
    if images.shape[-1] == 0:
        # Nothing to read: PyTorch returns [batch, 0, *grid] here.
        return ops.zeros((*ops.shape(coords[0]), 0), ops.dtype(images))
    gather = Gather(ops, images, value_dtype)
    kernel = {"bilinear": _linear, "nearest": _nearest,
              "bicubic": _bicubic}[interpolation]
    return ops.cast(kernel(ops, gather, coords, padding_mode, align_corners,
                           fused), ops.dtype(images))


class Gather:
    """Reads pixels of `images` (any rank) at int32 indices, per axis.

    Indices must be in range: the kernels clamp them and mask what is
    outside. Sizes are static where known, else read at run time.
    """

    def __init__(self, ops, images, value_dtype):
        self.ops = ops
        spatial = len(images.shape) - 2
        dims = ops.shape(images)
        # Per axis, x first: sizes (width, height[, depth]).
        self.sizes = dims[spatial:0:-1]
        self.strides = [1]
        for size in self.sizes[:-1]:
            self.strides.append(self.strides[-1] * size)
        pixels = self.strides[-1] * self.sizes[-1]
        # Explicit sizes, not -1: a reshape cannot infer -1 for an empty
        # tensor.
        self.flat = ops.reshape(images, (dims[0] * pixels, dims[-1]))
        # Offsets of each image in `flat`, from the run-time batch size.
        self.offsets = ops.reshape(ops.arange(dims[0]) * pixels,
                                   (-1,) + (1,) * spatial)
        self.value_dtype = value_dtype

    def float_sizes(self, dtype):
        return [self.ops.size_as(size, dtype) for size in self.sizes]

    def __call__(self, indices):
        """Values `[..., channels]` at per-axis int32 indices (x first)."""
        index = self.offsets
        for axis in reversed(range(len(indices))):
            step = indices[axis]
            if not (isinstance(self.strides[axis], int)
                    and self.strides[axis] == 1):
                step = step * self.strides[axis]
            index = index + step
        return self.ops.cast(self.ops.take(self.flat, index),
                             self.value_dtype)


def _in_range(ops, index, size):
    """1.0 where `0 <= index <= size - 1`, else 0.0, in `index`'s dtype."""
    inside = ops.logical_and(index >= 0.0, index <= size - 1.0)
    return ops.cast(inside, ops.dtype(index))


def _clamped_int(ops, index, size):
    """`index` clamped into [0, size - 1], as int32 for a gather."""
    return ops.cast(ops.clip(index, 0.0, size - 1.0), "int32")


def _linear(ops, gather, coords, padding_mode, align_corners, fused):
    """Bi-/trilinear interpolation with clamped gathers and masked corners."""
    dtype = ops.dtype(coords[0])
    sizes = gather.float_sizes(dtype)
    corners, weights = [], []
    for coord, size, static in zip(coords, sizes, gather.sizes):
        coord = _coordinates.source(ops, coord, size, padding_mode,
                                    align_corners, fused)
        low, high_weight = _coordinates.straight(
            ops, coord, _coordinates.snap_tolerance(ops, static, dtype))
        high = low + 1.0
        low_weight = 1.0 - high_weight
        if padding_mode == "zeros":
            # A corner outside the image contributes zero: masking the
            # per-axis weights masks every corner on that row/column.
            low_weight = low_weight * _in_range(ops, low, size)
            high_weight = high_weight * _in_range(ops, high, size)
        corners.append((_clamped_int(ops, low, size),
                        _clamped_int(ops, high, size)))
        weights.append((low_weight, high_weight))
    output = None
    # x varies fastest: (y0, x0), (y0, x1), (y1, x0), (y1, x1), ...
    for choice in itertools.product((0, 1), repeat=len(coords)):
        choice = choice[::-1]  # per axis, x first
        weight = weights[0][choice[0]]
        for axis in range(1, len(coords)):
            weight = weight * weights[axis][choice[axis]]
        term = ops.weighted(weight, gather(
            [corners[axis][choice[axis]] for axis in range(len(coords))]))
        output = term if output is None else output + term
    return output


def _nearest(ops, gather, coords, padding_mode, align_corners, fused):
    """The pixel nearest the coordinate, ties to even (PyTorch's
    `nearbyint`); no snap is needed, rounding is exact."""
    sizes = gather.float_sizes(ops.dtype(coords[0]))
    rounded = [
        ops.round_half_to_even(_coordinates.source(
            ops, coord, size, padding_mode, align_corners, fused))
        for coord, size in zip(coords, sizes)
    ]
    values = gather([_clamped_int(ops, index, size)
                     for index, size in zip(rounded, sizes)])
    if padding_mode == "zeros":
        mask = _in_range(ops, rounded[0], sizes[0])
        for index, size in zip(rounded[1:], sizes[1:]):
            mask = mask * _in_range(ops, index, size)
        values = ops.weighted(mask, values)
    return ops.zero_coordinate_gradient(values, coords)


def _bicubic(ops, gather, coords, padding_mode, align_corners, fused):
    """PyTorch's bicubic: the 4×4 taps around the unpadded coordinate, each
    tap coordinate padded (clipped / reflected) on its own."""
    dtype = ops.dtype(coords[0])
    sizes = gather.float_sizes(dtype)
    taps, tap_weights = [], []
    for coord, size, static in zip(coords, sizes, gather.sizes):
        coord = _coordinates.bounded(ops, _coordinates.unnormalize(
            ops, coord, size, align_corners, fused), size, padding_mode)
        start, fraction = _coordinates.straight(
            ops, coord, _coordinates.snap_tolerance(ops, static, dtype))
        axis_weights = cubic_weights(fraction)
        axis_taps = []
        for offset in range(4):
            tap = _coordinates.pad(ops, start + (offset - 1.0), size,
                                   padding_mode, align_corners)
            if padding_mode == "zeros":
                axis_weights[offset] = axis_weights[offset] * _in_range(
                    ops, tap, size)
            axis_taps.append(_clamped_int(ops, tap, size))
        taps.append(axis_taps)
        tap_weights.append(axis_weights)
    output = None
    for row in range(4):
        for col in range(4):
            term = ops.weighted(tap_weights[1][row] * tap_weights[0][col],
                                gather([taps[0][col], taps[1][row]]))
            output = term if output is None else output + term
    return output
