"""Sampler: gather-based bilinear / nearest interpolation of images at a grid.

Every operation here is a TFLite builtin (floor, cast, minimum/maximum,
select, elementwise arithmetic, reshape, gather), every gather index is
clamped into range, and non-finite coordinates are neutralised before they are
cast to integers, so any grid, however hostile, yields finite output and no
out-of-bounds read.
"""

import itertools

import tensorflow as tf

from keras_stn import _bilinear
from keras_stn.grid import coordinate_dtype

_SUPPORTED_INTERPOLATION = ("bilinear", "nearest", "bicubic")
# PyTorch's (and OpenCV's) cubic convolution coefficient.
_CUBIC_A = -0.75
_SUPPORTED_PADDING_MODES = ("zeros", "border", "reflection")

# Coordinates farther than this outside the image are all equivalent for the
# `zeros` and `border` modes; clamping to it keeps int casts safe.
_OUTSIDE_MARGIN = 2.0
# Beyond 2**23 a float32 has no fractional part: reflection of such a
# coordinate is meaningless, so it is clamped there first.
_REFLECTION_LIMIT = 2.0**23


def check_interpolation(interpolation):
    """Raises a `ValueError` unless `interpolation` is supported."""
    if interpolation not in _SUPPORTED_INTERPOLATION:
        raise ValueError(
            "Invalid value for argument `interpolation`. Expected one of "
            f"{_SUPPORTED_INTERPOLATION}. Received: "
            f"interpolation={interpolation!r}"
        )


def check_padding_mode(padding_mode):
    """Raises a `ValueError` unless `padding_mode` is supported."""
    if padding_mode not in _SUPPORTED_PADDING_MODES:
        raise ValueError(
            "Invalid value for argument `padding_mode`. Expected one of "
            f"{_SUPPORTED_PADDING_MODES}. Received: "
            f"padding_mode={padding_mode!r}"
        )


def check_align_corners(align_corners):
    """Raises a `TypeError` unless `align_corners` is a bool."""
    if not isinstance(align_corners, bool):
        raise TypeError(
            "Invalid value for argument `align_corners`. Expected a bool. "
            f"Received: align_corners={align_corners!r}"
        )


def _dim(tensor, axis):
    """Static size of `axis` when known, else its run-time size."""
    static = tensor.shape[axis]
    return static if static is not None else tf.shape(tensor)[axis]


def _unnormalize(coord, size, align_corners):
    """Maps [-1, 1] to pixel coordinates, with PyTorch's operation order."""
    if align_corners:
        return (coord + 1.0) / 2.0 * (size - 1.0)
    return ((coord + 1.0) * size - 1.0) / 2.0


def _reflect(coord, twice_low, twice_high):
    """Reflects `coord` into [twice_low / 2, twice_high / 2], as PyTorch does."""
    minimum = twice_low / 2.0
    # A zero span only happens for a single pixel with align_corners=True,
    # where the final clip sends everything to 0 anyway.
    span = tf.maximum((twice_high - twice_low) / 2.0, 1.0)
    coord = tf.abs(coord - minimum)
    flips = tf.floor(coord / span)
    extra = coord - flips * span
    even = tf.equal(flips - 2.0 * tf.floor(flips / 2.0), 0.0)
    return tf.where(even, extra + minimum, span - extra + minimum)


def _snap_to_pixel_centres(coord, size):
    """Rounds coordinates lying within a few ulps of an integer onto it.

    The normalised coordinates of pixel centres ((2i + 1) / W - 1 …) are not
    representable exactly, so an identity or integer-pixel warp lands a few
    ulps off the centres (about W × 6e-8 px: 3e-5 px at 600 px), which
    blends in a neighbour by as much. Snapping those makes such warps exact
    at any size; it moves no coordinate by more than 2⁻²⁰ × max(W, |x|)
    (1e-4 px at 100 px), and the gradient passes straight through.
    """
    relative = 2.0**-49 if coord.dtype == tf.float64 else 2.0**-20
    nearest = tf.round(coord)
    tolerance = tf.maximum(tf.abs(coord), size) * relative
    snapped = tf.where(tf.abs(coord - nearest) <= tolerance, nearest, coord)
    return coord + tf.stop_gradient(snapped - coord)


def _pixel_coordinates(coord, size, padding_mode, align_corners):
    """Pixel coordinates along one axis, finite and bounded, before padding."""
    coord = _unnormalize(coord, size, align_corners)
    # NaN compares unequal to itself: send it well outside the image.
    coord = tf.where(tf.equal(coord, coord), coord, -_OUTSIDE_MARGIN)
    if padding_mode == "reflection":
        coord = tf.clip_by_value(coord, -_REFLECTION_LIMIT, _REFLECTION_LIMIT)
    else:
        coord = tf.clip_by_value(
            coord, -_OUTSIDE_MARGIN, size - 1.0 + _OUTSIDE_MARGIN
        )
    return coord


def _pad_coordinates(coord, size, padding_mode, align_corners):
    """Applies `"border"` / `"reflection"` to pixel coordinates, as PyTorch."""
    if padding_mode == "reflection":
        if align_corners:
            coord = _reflect(coord, 0.0, 2.0 * (size - 1.0))
        else:
            coord = _reflect(coord, -1.0, 2.0 * size - 1.0)
    if padding_mode != "zeros":
        coord = tf.clip_by_value(coord, 0.0, size - 1.0)
    return coord


def _source_coordinates(coord, size, padding_mode, align_corners,
                        snap=True):
    """Pixel coordinates along one axis after padding, finite and bounded."""
    size = tf.cast(size, coord.dtype)
    coord = _pixel_coordinates(coord, size, padding_mode, align_corners)
    if snap:
        coord = _snap_to_pixel_centres(coord, size)
    return _pad_coordinates(coord, size, padding_mode, align_corners)


def _cubic_weights(t):
    """The 4 cubic-convolution weights of taps -1, 0, 1, 2 at offset t."""
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]


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


def grid_sample(
    images,
    grid,
    interpolation="bilinear",
    padding_mode="zeros",
    align_corners=False,
    name=None,
):
    """Samples a batch of NHWC images (or NDHWC volumes) at grid coordinates.

    Equal to `torch.nn.functional.grid_sample(input, grid, mode,
    padding_mode, align_corners)` to float precision, with images in NHWC
    (channels last) where PyTorch takes NCHW, and volumes in NDHWC where it
    takes NCDHW. Gradients flow to both `images` and `grid` (the latter is
    zero almost everywhere for `"nearest"`).

    Convention:
        `grid[b, i, j] = (x, y)` in [-1, 1], x (width) first; -1 and 1 are the
        outer edges of the corner pixels (`align_corners=False`) or their
        centres (`align_corners=True`), as in PyTorch. The grid of the
        identity θ `[[1, 0, 0], [0, 1, 0]]` returns the input unchanged.
        Samples outside the image read zeros (`"zeros"`, blended per corner,
        so a sample half a pixel outside gets half its weight), the nearest
        edge pixel (`"border"`) or the image mirrored at its edges
        (`"reflection"`). Non-finite coordinates read as far outside.
        Volumes add z (depth) as the grid's third coordinate.

    Args:
        images: float tensor `[batch, height, width, channels]`, or a
            volume `[batch, depth, height, width, channels]`.
        grid: float tensor `[batch, out_height, out_width, 2]` (volumes:
            `[batch, out_depth, out_height, out_width, 3]`).
        interpolation: `"bilinear"` (trilinear on volumes, as PyTorch's
            "bilinear"), `"nearest"` (ties round to even, as PyTorch's
            `nearbyint`) or `"bicubic"` (images only: cubic convolution with
            A = −0.75 over 4×4 taps, as PyTorch's; it may overshoot the
            input's range).
        padding_mode: `"zeros"`, `"border"` or `"reflection"`.
        align_corners: bool, as in PyTorch.
        name: optional name scope.

    Returns:
        A tensor `[batch, out_height, out_width, channels]` (volumes:
        `[batch, out_depth, out_height, out_width, channels]`) of `images`'
        dtype. Coordinates and weights are float32 (float64 for a float64
        grid), whatever the dtype of `images` or `grid`.

    Example:

    >>> images = tf.reshape(tf.range(12, dtype="float32"), [1, 3, 4, 1])
    >>> identity = keras_stn.affine_grid([[1.0, 0, 0, 0, 1, 0]], (3, 4))
    >>> out = keras_stn.grid_sample(images, identity)
    >>> bool(tf.reduce_all(out == images))
    True
    """
    check_interpolation(interpolation)
    check_padding_mode(padding_mode)
    check_align_corners(align_corners)
    with tf.name_scope(name or "grid_sample"):
        images = tf.convert_to_tensor(images)
        grid = tf.convert_to_tensor(grid)
        _check_inputs(images, grid)

        grid = tf.cast(grid, coordinate_dtype(grid.dtype))
        # Per-axis slices: single-output ops, which int8 export keeps in
        # float by name (an UNPACK is faster in TFLite but breaks that).
        spatial = images.shape.rank - 2
        return _sample(images, [grid[..., axis] for axis in range(spatial)],
                       interpolation, padding_mode, align_corners)


def sample_coordinates(images, coords, interpolation="bilinear",
                       padding_mode="zeros", align_corners=False, name=None):
    """`grid_sample` with the grid given as one tensor per axis.

    What `SpatialTransformer` runs: a grid generator that produces the x and
    y planes separately saves TFLite and TF's runtime from slicing the
    innermost axis of a `[batch, height, width, 2]` grid.

    Args:
        images: as in `grid_sample`.
        coords: list of float tensors `[batch, out_height, out_width]` (x,
            y), or three (x, y, z) `[batch, out_depth, out_height,
            out_width]` for volumes: the grid's last axis, split.
        interpolation, padding_mode, align_corners, name: as in
            `grid_sample`.

    Returns:
        As `grid_sample(images, tf.stack(coords, -1), ...)`.

    Example:

    >>> images = tf.reshape(tf.range(6, dtype="float32"), [1, 2, 3, 1])
    >>> coords = keras_stn.affine_coordinates([[1.0, 0, 0, 0, 1, 0]], (2, 3))
    >>> out = keras_stn.sample_coordinates(images, coords)
    >>> bool(tf.reduce_all(out == images))
    True
    """
    check_interpolation(interpolation)
    check_padding_mode(padding_mode)
    check_align_corners(align_corners)
    with tf.name_scope(name or "grid_sample"):
        images = tf.convert_to_tensor(images)
        coords = [tf.convert_to_tensor(coord) for coord in coords]
        grid_shape = coords[0].shape.concatenate([len(coords)])
        _check_inputs(images, tf.TensorSpec(grid_shape, coords[0].dtype))
        dtype = coordinate_dtype(coords[0].dtype)
        return _sample(images, [tf.cast(c, dtype) for c in coords],
                       interpolation, padding_mode, align_corners)


def _sample(images, coords, interpolation, padding_mode, align_corners):
    """The sampler proper, on validated images and per-axis coordinates."""
    coord_dtype = coords[0].dtype
    value_dtype = (
        tf.float64
        if tf.float64 in (images.dtype, coord_dtype)
        else tf.float32
    )
    spatial = images.shape.rank - 2
    if interpolation == "bicubic" and spatial == 3:
        raise ValueError(
            "Invalid value for argument `interpolation`: 'bicubic' "
            "samples 2-D images only (as in PyTorch). Use 'bilinear' "
            "(trilinear on volumes) or 'nearest'. Received: "
            f"images.shape={images.shape}"
        )
    # Per axis, x first: sizes (width, height[, depth]) and the strides
    # of a flattened image.
    sizes = [_dim(images, axis) for axis in range(spatial, 0, -1)]
    sizes_f = [tf.cast(size, coord_dtype) for size in sizes]
    # The fast kernel needs static image sizes; others take the generic path.
    if (interpolation == "bilinear" and spatial == 2
            and None not in images.shape[1:]):
        height, width = images.shape[1], images.shape[2]
        x, y = [
            _source_coordinates(coord, size, padding_mode,
                                align_corners, snap=False)
            for coord, size in zip(coords, sizes_f)
        ]
        padded = _bilinear.pad_images(tf.cast(images, value_dtype))
        output = _bilinear.bilinear(padded, x, y, height, width)
        return tf.cast(output, images.dtype)

    strides = [1]
    for size in sizes[:-1]:
        strides.append(strides[-1] * size)
    channels = _dim(images, spatial + 1)
    flat = tf.reshape(images, [-1, channels])
    # Offsets of each image in `flat`, from the run-time batch size.
    offsets = tf.reshape(
        tf.range(tf.shape(images)[0]) * (strides[-1] * sizes[-1]),
        [-1] + [1] * spatial,
    )

    def gather(indices):
        index = offsets
        for axis in reversed(range(spatial)):
            step = indices[axis]
            if not (isinstance(strides[axis], int) and strides[axis] == 1):
                step = step * strides[axis]
            index = index + step
        return tf.cast(tf.gather(flat, index), value_dtype)

    def weighted(weight, values):
        return tf.expand_dims(tf.cast(weight, value_dtype), -1) * values

    if interpolation == "bicubic":
        return tf.cast(
            _bicubic(coords, sizes_f, padding_mode, align_corners,
                     gather, weighted),
            images.dtype,
        )

    coords = [
        _source_coordinates(coord, size, padding_mode, align_corners)
        for coord, size in zip(coords, sizes_f)
    ]
    if interpolation == "nearest":
        rounded = [_round_half_to_even(coord) for coord in coords]
        values = gather([
            _clamped_int(index, size)
            for index, size in zip(rounded, sizes_f)
        ])
        if padding_mode == "zeros":
            mask = _in_range(rounded[0], sizes_f[0])
            for index, size in zip(rounded[1:], sizes_f[1:]):
                mask = mask * _in_range(index, size)
            values = weighted(mask, values)
        return tf.cast(values, images.dtype)

    # Linear in every axis: 2 corners per axis, per-axis weights.
    corners, weights = [], []
    for coord, size in zip(coords, sizes_f):
        low = tf.floor(coord)
        high = low + 1.0
        low_weight, high_weight = high - coord, coord - low
        if padding_mode == "zeros":
            # A corner outside the image contributes zero: masking the
            # per-axis weights masks every corner on that row/column.
            low_weight = low_weight * _in_range(low, size)
            high_weight = high_weight * _in_range(high, size)
        corners.append((_clamped_int(low, size), _clamped_int(high, size)))
        weights.append((low_weight, high_weight))
    output = None
    # x varies fastest: (y0, x0), (y0, x1), (y1, x0), (y1, x1), ...
    for choice in itertools.product((0, 1), repeat=spatial):
        choice = choice[::-1]  # per axis, x first
        weight = weights[0][choice[0]]
        for axis in range(1, spatial):
            weight = weight * weights[axis][choice[axis]]
        term = weighted(weight, gather(
            [corners[axis][choice[axis]] for axis in range(spatial)]))
        output = term if output is None else output + term
    return tf.cast(output, images.dtype)


def _bicubic(coords, sizes, padding_mode, align_corners, gather, weighted):
    """PyTorch's bicubic: the 4×4 taps around the unpadded coordinate, each
    tap coordinate padded (clipped / reflected) on its own."""
    taps, tap_weights = [], []
    for coord, size in zip(coords, sizes):
        coord = _pixel_coordinates(coord, size, padding_mode, align_corners)
        coord = _snap_to_pixel_centres(coord, size)
        start = tf.floor(coord)
        axis_weights = _cubic_weights(coord - start)
        axis_taps = []
        for offset in range(4):
            tap = _pad_coordinates(start + (offset - 1.0), size, padding_mode,
                                   align_corners)
            if padding_mode == "zeros":
                axis_weights[offset] = axis_weights[offset] * _in_range(tap, size)
            axis_taps.append(_clamped_int(tap, size))
        taps.append(axis_taps)
        tap_weights.append(axis_weights)
    output = 0.0
    for row in range(4):
        for col in range(4):
            output += weighted(tap_weights[1][row] * tap_weights[0][col],
                               gather([taps[0][col], taps[1][row]]))
    return output


def _check_inputs(images, grid):
    if not images.dtype.is_floating:
        raise TypeError(
            "Invalid dtype for argument `images`. Expected a floating dtype "
            f"(cast integer images first). Received: images.dtype="
            f"{images.dtype.name}"
        )
    if images.shape.rank not in (4, 5):
        raise ValueError(
            "Invalid shape for argument `images`. Expected a rank-4 tensor "
            "[batch, height, width, channels] (or rank 5 [batch, depth, "
            f"height, width, channels]). Received: images.shape={images.shape}"
        )
    if not grid.dtype.is_floating:
        raise TypeError(
            "Invalid dtype for argument `grid`. Expected a floating dtype. "
            f"Received: grid.dtype={grid.dtype.name}"
        )
    spatial = images.shape.rank - 2
    if grid.shape.rank != images.shape.rank or grid.shape[-1] not in (
        spatial, None
    ):
        layout = ("[batch, out_height, out_width, 2] whose last axis holds "
                  "(x, y)") if spatial == 2 else (
            "[batch, out_depth, out_height, out_width, 3] whose last axis "
            "holds (x, y, z)")
        raise ValueError(
            f"Invalid shape for argument `grid`. Expected a rank-"
            f"{spatial + 2} tensor {layout}. Received: grid.shape={grid.shape}"
        )
    if (
        images.shape[0] is not None
        and grid.shape[0] is not None
        and images.shape[0] != grid.shape[0]
    ):
        raise ValueError(
            "Arguments `images` and `grid` must have the same batch size. "
            f"Received: images.shape={images.shape}, grid.shape={grid.shape}"
        )
