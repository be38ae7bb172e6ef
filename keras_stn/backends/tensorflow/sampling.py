"""The TensorFlow sampler: gather-based interpolation in TFLite builtins.

Every operation here is a TFLite builtin (floor, cast, minimum/maximum,
select, elementwise arithmetic, reshape, gather), every gather index is
clamped into range, and non-finite coordinates are neutralised before they
are cast to integers, so any grid, however hostile, yields finite output
and no out-of-bounds read. Arguments arrive checked (`keras_stn.sampling`).
"""

import itertools

import tensorflow as tf

from keras_stn.backends.tensorflow import bilinear
from keras_stn.backends.tensorflow import coordinates
from keras_stn.backends.tensorflow.bilinear import weighted
from keras_stn.backends.tensorflow.compilation import current_target
from keras_stn.backends.tensorflow.compilation import recording_gradients
from keras_stn.backends.tensorflow.grid import coordinate_dtype
from keras_stn.core.coordinates import cubic_weights

# Default name scope of the sampler ops (export keeps it in float).
SCOPE = "grid_sample"


def grid_sample(images, grid, interpolation, padding_mode, align_corners,
                name=None):
    """`keras_stn.grid_sample` on checked arguments, in TF ops."""
    with tf.name_scope(name or SCOPE):
        images = tf.convert_to_tensor(images)
        grid = tf.convert_to_tensor(grid)
        grid = tf.cast(grid, coordinate_dtype(grid.dtype))
        # Per-axis slices: single-output ops, which int8 export keeps in
        # float by name (an UNPACK is faster in TFLite but breaks that).
        spatial = images.shape.rank - 2
        return _sample(images, [grid[..., axis] for axis in range(spatial)],
                       interpolation, padding_mode, align_corners)


def sample_coordinates(images, coords, interpolation, padding_mode,
                       align_corners, name=None):
    """`keras_stn.sample_coordinates` on checked arguments, in TF ops."""
    with tf.name_scope(name or SCOPE):
        images = tf.convert_to_tensor(images)
        coords = [tf.convert_to_tensor(coord) for coord in coords]
        dtype = coordinate_dtype(coords[0].dtype)
        return _sample(images, [tf.cast(c, dtype) for c in coords],
                       interpolation, padding_mode, align_corners)


def _sample(images, coords, interpolation, padding_mode, align_corners):
    """The sampler proper, on validated images and per-axis coordinates."""
    spatial = images.shape.rank - 2
    images, coords = _checked_at_run_time(images, coords)
    if images.shape[-1] == 0:
        # Nothing to read: PyTorch returns [batch, 0, *grid] here.
        shape = tf.concat([tf.shape(coords[0]), [0]], 0)
        return tf.zeros(shape, images.dtype)
    value_dtype = (tf.float64 if tf.float64 in (images.dtype, coords[0].dtype)
                   else tf.float32)
    # PyTorch's 2-D kernel rounds the unnormalisation as a fused
    # multiply-add, which decides the derivative's side at integers. XLA on
    # CPU contracts the plain formula into one already; TF's runtime needs
    # float64 arithmetic for it (which TFLite lacks), worth its cost only
    # when a gradient may be taken.
    target = current_target()
    fused = spatial == 2 and target == "runtime" and recording_gradients()
    if (interpolation == "bilinear" and spatial == 2
            and None not in images.shape[1:]):
        height, width = images.shape[1], images.shape[2]
        x, y = [coordinates.source(coord, size, padding_mode, align_corners,
                                    fused)
                for coord, size in zip(coords, (width, height))]
        padded = bilinear.pad_images(tf.cast(images, value_dtype))
        return tf.cast(
            bilinear.bilinear(padded, x, y, height, width, target),
            images.dtype)
    gather = _Gather(images, value_dtype)
    kernel = {"bilinear": _linear, "nearest": _nearest,
              "bicubic": _bicubic}[interpolation]
    return tf.cast(kernel(gather, coords, padding_mode, align_corners, fused),
                   images.dtype)


def _checked_at_run_time(images, coords):
    """`images` and `coords` behind run-time checks of what static shapes
    could not tell: an empty spatial axis, or batch sizes that differ (which
    the gathers would otherwise broadcast silently). XLA compiles the checks
    away; TFLite's converter drops them."""
    spatial = images.shape.rank - 2
    checks = []
    if None in images.shape[1:spatial + 1]:
        checks.append(tf.debugging.assert_positive(
            tf.shape(images)[1:spatial + 1],
            message="grid_sample: expected `images` to have non-empty "
                    "spatial dimensions"))
    if images.shape[0] is None or coords[0].shape[0] is None:
        checks.append(tf.debugging.assert_equal(
            tf.shape(images)[0], tf.shape(coords[0])[0],
            message="grid_sample: arguments `images` and `grid` must have "
                    "the same batch size"))
    if not checks:
        return images, coords
    with tf.control_dependencies(checks):
        return tf.identity(images), [tf.identity(c) for c in coords]


class _Gather:
    """Reads pixels of `images` (any rank) at integer indices, per axis.

    Indices must be in range: the kernels clamp them and mask what is
    outside. Sizes are static where known, else read at run time.
    """

    def __init__(self, images, value_dtype):
        spatial = images.shape.rank - 2
        dynamic = tf.shape(images)
        dims = [images.shape[axis] if images.shape[axis] is not None
                else dynamic[axis] for axis in range(spatial + 2)]
        # Per axis, x first: sizes (width, height[, depth]).
        self.sizes = dims[spatial:0:-1]
        self.strides = [1]
        for size in self.sizes[:-1]:
            self.strides.append(self.strides[-1] * size)
        pixels = self.strides[-1] * self.sizes[-1]
        # Explicit sizes, not -1: a reshape cannot infer -1 for an empty
        # tensor.
        self.flat = tf.reshape(images, [dims[0] * pixels, dims[-1]])
        # Offsets of each image in `flat`, from the run-time batch size.
        self.offsets = tf.reshape(tf.range(dynamic[0]) * pixels,
                                  [-1] + [1] * spatial)
        self.value_dtype = value_dtype

    def float_sizes(self, dtype):
        return [tf.cast(size, dtype) for size in self.sizes]

    def __call__(self, indices):
        """Values `[..., channels]` at per-axis int32 indices (x first)."""
        index = self.offsets
        for axis in reversed(range(len(indices))):
            step = indices[axis]
            if not (isinstance(self.strides[axis], int)
                    and self.strides[axis] == 1):
                step = step * self.strides[axis]
            index = index + step
        return tf.cast(tf.gather(self.flat, index), self.value_dtype)


def _round_half_to_even(coord):
    """Rounds like C's `nearbyint` (PyTorch's nearest mode): ties to even."""
    floor = tf.floor(coord)
    frac = coord - floor
    odd = tf.equal(floor - 2.0 * tf.floor(floor / 2.0), 1.0)
    round_up = tf.logical_or(
        frac > 0.5, tf.logical_and(tf.equal(frac, 0.5), odd)
    )
    return floor + tf.cast(round_up, coord.dtype)


def _in_range(index, size):
    """1.0 where `0 <= index <= size - 1`, else 0.0, in `index`'s dtype."""
    inside = tf.logical_and(index >= 0.0, index <= size - 1.0)
    return tf.cast(inside, index.dtype)


def _clamped_int(index, size):
    """`index` clamped into [0, size - 1] and cast to int32 for a gather."""
    return tf.cast(tf.clip_by_value(index, 0.0, size - 1.0), tf.int32)


def _tolerance(size, dtype):
    if isinstance(size, int):
        return coordinates.snap_tolerance(size, dtype)
    return tf.maximum(tf.cast(size, dtype), 1.0) * (
        coordinates.snap_tolerance(1, dtype))


def _linear(gather, coords, padding_mode, align_corners, fused):
    """Bi-/trilinear interpolation with clamped gathers and masked corners
    (volumes, and images whose size is only known at run time)."""
    dtype = coords[0].dtype
    sizes = gather.float_sizes(dtype)
    corners, weights = [], []
    for coord, size, static in zip(coords, sizes, gather.sizes):
        coord = coordinates.source(coord, size, padding_mode, align_corners,
                                    fused)
        low, high_weight = coordinates.straight(coord, _tolerance(static,
                                                                   dtype))
        high = low + 1.0
        low_weight = 1.0 - high_weight
        if padding_mode == "zeros":
            # A corner outside the image contributes zero: masking the
            # per-axis weights masks every corner on that row/column.
            low_weight = low_weight * _in_range(low, size)
            high_weight = high_weight * _in_range(high, size)
        corners.append((_clamped_int(low, size), _clamped_int(high, size)))
        weights.append((low_weight, high_weight))
    output = None
    # x varies fastest: (y0, x0), (y0, x1), (y1, x0), (y1, x1), ...
    for choice in itertools.product((0, 1), repeat=len(coords)):
        choice = choice[::-1]  # per axis, x first
        weight = weights[0][choice[0]]
        for axis in range(1, len(coords)):
            weight = weight * weights[axis][choice[axis]]
        term = weighted(weight, gather(
            [corners[axis][choice[axis]] for axis in range(len(coords))]))
        output = term if output is None else output + term
    return output


def _nearest(gather, coords, padding_mode, align_corners, fused):
    """The pixel nearest the coordinate, ties to even (PyTorch's
    `nearbyint`); no snap is needed, rounding is exact."""
    sizes = gather.float_sizes(coords[0].dtype)
    rounded = [
        _round_half_to_even(coordinates.source(
            coord, size, padding_mode, align_corners, fused))
        for coord, size in zip(coords, sizes)
    ]
    values = gather([_clamped_int(index, size)
                     for index, size in zip(rounded, sizes)])
    if padding_mode == "zeros":
        mask = _in_range(rounded[0], sizes[0])
        for index, size in zip(rounded[1:], sizes[1:]):
            mask = mask * _in_range(index, size)
        values = weighted(mask, values)
    return _zero_coordinate_gradient(values, coords)


def _zero_coordinate_gradient(values, coords):
    """`values`, with a zero gradient (as PyTorch's) rather than none for
    coordinates they are piecewise constant in."""

    @tf.custom_gradient
    def attach(values, *coords):
        def gradient(upstream):
            return [upstream] + [tf.zeros_like(coord) for coord in coords]

        return tf.identity(values), gradient

    return attach(values, *coords)


def _bicubic(gather, coords, padding_mode, align_corners, fused):
    """PyTorch's bicubic: the 4×4 taps around the unpadded coordinate, each
    tap coordinate padded (clipped / reflected) on its own."""
    dtype = coords[0].dtype
    sizes = gather.float_sizes(dtype)
    taps, tap_weights = [], []
    for coord, size, static in zip(coords, sizes, gather.sizes):
        coord = coordinates.bounded(
            coordinates.unnormalize(coord, size, align_corners, fused),
            size, padding_mode)
        start, fraction = coordinates.straight(coord, _tolerance(static,
                                                                  dtype))
        axis_weights = cubic_weights(fraction)
        axis_taps = []
        for offset in range(4):
            tap = coordinates.pad(start + (offset - 1.0), size,
                                   padding_mode, align_corners)
            if padding_mode == "zeros":
                axis_weights[offset] = axis_weights[offset] * _in_range(
                    tap, size)
            axis_taps.append(_clamped_int(tap, size))
        taps.append(axis_taps)
        tap_weights.append(axis_weights)
    output = None
    for row in range(4):
        for col in range(4):
            term = weighted(tap_weights[1][row] * tap_weights[0][col],
                          gather([taps[0][col], taps[1][row]]))
            output = term if output is None else output + term
    return output
