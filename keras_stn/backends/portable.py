"""Grids and sampler in `keras.ops`: the JAX path, and PyTorch's for what
its own functions do not cover.

The same arithmetic as the TensorFlow path (`keras_stn.backends.tensorflow`),
written once for any Keras backend: PyTorch's meshgrid bit for bit, PyTorch's unnormalisation, the
same bound on hostile coordinates, the same near-integer snap, and
PyTorch's derivatives at the kinks (the corner is the floor of the
unsnapped coordinate; border and reflection clip with derivative 0 on the
border). Arguments arrive checked.
"""

import itertools

import keras
import numpy as np
from keras import ops

from keras_stn.core import coordinates as _coordinates
from keras_stn.core.coordinates import PROJECTIVE_EPSILON as _PROJECTIVE_EPSILON
from keras_stn.core.coordinates import SNAP_RELATIVE as _SNAP_RELATIVE
from keras_stn.core.coordinates import cubic_weights as _cubic_weights
from keras_stn.core.meshgrid import homogeneous_meshgrid as _homogeneous_meshgrid


def coordinate_dtype(value):
    """float64 for float64 values, else float32 (as the TF path)."""
    return ("float64" if keras.backend.standardize_dtype(value.dtype)
            == "float64" else "float32")


def _constant(array, dtype):
    return ops.convert_to_tensor(np.asarray(array), dtype=dtype)


# -- Grids ------------------------------------------------------------------


def _times_meshgrid(matrices, size, align_corners):
    """`[batch, N, rows]`: each row of `matrices [batch, rows, k + 1]`
    times every meshgrid point `(x, y[, z], 1)` (x fastest)."""
    dtype = keras.backend.standardize_dtype(matrices.dtype)
    base = _homogeneous_meshgrid(size, align_corners, np.dtype(dtype).type)
    # As PyTorch's affine_grid: base [N, k + 1] @ θᵀ.
    return ops.matmul(_constant(base, dtype),
                      ops.transpose(matrices, (0, 2, 1)))


def affine_grid(theta, size, align_corners):
    rank = len(size)
    theta = ops.convert_to_tensor(theta)
    theta = ops.reshape(ops.cast(theta, coordinate_dtype(theta)),
                        (-1, rank, rank + 1))
    grid = _times_meshgrid(theta, size, align_corners)
    return ops.reshape(grid, (-1, *size, rank))


def flatten(transform, params):
    params = ops.convert_to_tensor(params)
    params = ops.cast(params, coordinate_dtype(params))
    return ops.reshape(params, (-1, transform.num_params))


def transform_grid(transform, params, size, align_corners):
    """`transform.grid(params, size, align_corners)` in `keras.ops`."""
    params = flatten(transform, params)
    name = transform.name
    if name in ("affine", "affine_3d"):
        return affine_grid(params, size, align_corners)
    if transform.expansion_matrices() is not None:
        expansion, offset = transform.expansion_matrices()
        dtype = coordinate_dtype(params)
        theta = (ops.matmul(params, _constant(expansion, dtype))
                 + _constant(offset, dtype))
        return affine_grid(theta, size, align_corners)
    if name == "projective":
        homography = ops.concatenate([params, ops.ones_like(params[:, :1])],
                                     axis=1)
        uvw = _times_meshgrid(ops.reshape(homography, (-1, 3, 3)), size,
                              align_corners)
        w = uvw[..., 2:]
        w = ops.where(w >= 0.0, ops.maximum(w, _PROJECTIVE_EPSILON),
                      ops.minimum(w, -_PROJECTIVE_EPSILON))
        return ops.reshape(uvw[..., :2] / w, (-1, *size, 2))
    if name == "tps":
        dtype = coordinate_dtype(params)
        matrix = _constant(transform.interpolation_matrix(size, align_corners),
                           dtype)
        positions = ops.reshape(params, (-1, transform.control_points**2, 2))
        return ops.reshape(ops.matmul(matrix, positions), (-1, *size, 2))
    raise NotImplementedError(f"no keras.ops grid for transform {name!r}")


# -- Coordinates (keras_stn._coordinates, in keras.ops) ----------------------


def _unnormalize(coord, size, align_corners):
    if align_corners:
        return (coord + 1.0) / 2.0 * (size - 1.0)
    # Under XLA on CPU (jax.jit) the multiply-subtract is one fused
    # multiply-add, rounded once as PyTorch's 2-D CPU kernel rounds it.
    return ((coord + 1.0) * size - 1.0) / 2.0


def _bounded(coord, size, padding_mode):
    margin = float(_coordinates.MARGIN)
    coord = ops.where(ops.isnan(coord), -margin, coord)
    if padding_mode == "reflection":
        limit = _coordinates.REFLECTION_LIMIT
        return ops.clip(coord, -limit, limit)
    return ops.clip(coord, -margin, size - 1.0 + margin)


def _clip(coord, size):
    """Clamp to [0, size - 1]: derivative 1 strictly inside, 0 elsewhere."""
    inside = ops.logical_and(coord > 0.0, coord < size - 1.0)
    clamped = ops.clip(ops.stop_gradient(coord), 0.0, size - 1.0)
    return ops.where(inside, coord, clamped)


def _reflect(coord, twice_low, twice_high):
    minimum = twice_low / 2.0
    span = max((twice_high - twice_low) / 2.0, 1.0)
    coord = ops.abs(coord - minimum)
    flips = ops.floor(coord / span)
    extra = coord - flips * span
    even = (flips - 2.0 * ops.floor(flips / 2.0)) == 0.0
    return ops.where(even, extra + minimum, span - extra + minimum)


def _pad(coord, size, padding_mode, align_corners):
    if padding_mode == "reflection":
        if align_corners:
            coord = _reflect(coord, 0.0, 2.0 * (size - 1.0))
        else:
            coord = _reflect(coord, -1.0, 2.0 * size - 1.0)
    if padding_mode != "zeros":
        coord = _clip(coord, size)
    return coord


def _straight(coord, tolerance):
    """Corner (floor of the unsnapped coordinate) and the fraction, snapped
    onto 0 or 1 within `tolerance`, with derivative 1 (straight through)."""
    corner = ops.floor(coord)
    fraction = coord - corner
    snapped = ops.where(fraction <= tolerance, 0.0, fraction)
    snapped = ops.where(snapped >= 1.0 - tolerance, 1.0, snapped)
    return corner, fraction + ops.stop_gradient(snapped - fraction)


# -- Sampler ----------------------------------------------------------------


class _Gather:
    """Pixels of `images [batch, *spatial, channels]` at per-axis int
    indices (x first), which must be in range."""

    def __init__(self, images):
        spatial = len(images.shape) - 2
        self.sizes = [int(size) for size in images.shape[spatial:0:-1]]
        self.strides = [1]
        for size in self.sizes[:-1]:
            self.strides.append(self.strides[-1] * size)
        pixels = self.strides[-1] * self.sizes[-1]
        self.flat = ops.reshape(images, (-1, images.shape[-1]))
        batch = ops.shape(images)[0]
        self.offsets = ops.reshape(ops.arange(batch, dtype="int32") * pixels,
                                   (-1,) + (1,) * spatial)

    def __call__(self, indices):
        index = self.offsets
        for axis, step in enumerate(indices):
            index = index + step * self.strides[axis]
        return ops.take(self.flat, index, axis=0)


def _in_range(index, size):
    return ops.cast(ops.logical_and(index >= 0.0, index <= size - 1.0),
                    index.dtype)


def _clamped_int(index, size):
    return ops.cast(ops.clip(index, 0.0, size - 1.0), "int32")


def grid_sample(images, grid, interpolation, padding_mode, align_corners):
    """`keras_stn.grid_sample` on checked arguments, in `keras.ops`."""
    spatial = len(images.shape) - 2
    dtype = coordinate_dtype(grid)
    value_dtype = ("float64" if "float64" in (
        keras.backend.standardize_dtype(images.dtype), dtype) else "float32")
    grid = ops.cast(grid, dtype)
    coords = [grid[..., axis] for axis in range(spatial)]
    if images.shape[-1] == 0:
        return ops.zeros((*ops.shape(grid)[:-1], 0), images.dtype)
    gather = _Gather(ops.cast(images, value_dtype))
    tolerance = [max(size, 1) * _SNAP_RELATIVE[dtype] for size in gather.sizes]
    output = None
    if interpolation == "nearest":
        rounded = [ops.round(_pad(_bounded(_unnormalize(
            ops.stop_gradient(coord), size, align_corners), size, padding_mode),
            size, padding_mode, align_corners))
                   for coord, size in zip(coords, gather.sizes)]
        output = gather([_clamped_int(index, size)
                         for index, size in zip(rounded, gather.sizes)])
        if padding_mode == "zeros":
            mask = None
            for index, size in zip(rounded, gather.sizes):
                inside = _in_range(index, size)
                mask = inside if mask is None else mask * inside
            output = ops.cast(mask, value_dtype)[..., None] * output
    elif interpolation == "bilinear":
        corners, weights = [], []
        for coord, size, snap in zip(coords, gather.sizes, tolerance):
            coord = _pad(_bounded(_unnormalize(coord, size, align_corners),
                                  size, padding_mode),
                         size, padding_mode, align_corners)
            low, high_weight = _straight(coord, snap)
            high = low + 1.0
            low_weight = 1.0 - high_weight
            if padding_mode == "zeros":
                low_weight = low_weight * _in_range(low, size)
                high_weight = high_weight * _in_range(high, size)
            corners.append((_clamped_int(low, size), _clamped_int(high, size)))
            weights.append((low_weight, high_weight))
        for choice in itertools.product((0, 1), repeat=spatial):
            weight = None
            for axis in range(spatial):
                factor = weights[axis][choice[axis]]
                weight = factor if weight is None else weight * factor
            term = ops.cast(weight, value_dtype)[..., None] * gather(
                [corners[axis][choice[axis]] for axis in range(spatial)])
            output = term if output is None else output + term
    else:  # bicubic, images only
        taps, tap_weights = [], []
        for coord, size, snap in zip(coords, gather.sizes, tolerance):
            coord = _bounded(_unnormalize(coord, size, align_corners), size,
                             padding_mode)
            start, fraction = _straight(coord, snap)
            axis_weights = _cubic_weights(fraction)
            axis_taps = []
            for offset in range(4):
                tap = _pad(start + (offset - 1.0), size, padding_mode,
                           align_corners)
                if padding_mode == "zeros":
                    axis_weights[offset] = axis_weights[offset] * _in_range(
                        tap, size)
                axis_taps.append(_clamped_int(tap, size))
            taps.append(axis_taps)
            tap_weights.append(axis_weights)
        for row in range(4):
            for col in range(4):
                weight = tap_weights[1][row] * tap_weights[0][col]
                term = ops.cast(weight, value_dtype)[..., None] * gather(
                    [taps[0][col], taps[1][row]])
                output = term if output is None else output + term
    return ops.cast(output, images.dtype)
