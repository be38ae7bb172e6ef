"""Grid generator: normalised target coordinates and the affine grid.

Convention (shared by every grid and sampling function of `keras_stn`):
    Coordinates are normalised to [-1, 1], x (width) first, then y (height).
    With `align_corners=True`, -1 and 1 are the centres of the corner pixels;
    with `align_corners=False` (the default), they are the outer edges of the
    corner pixels, exactly as in PyTorch's `affine_grid` / `grid_sample`.
    θ maps target (output) coordinates to source (input) coordinates; the
    identity affine θ is `[[1, 0, 0], [0, 1, 0]]`.
"""

import functools
import warnings
from fractions import Fraction

import keras
import numpy as np
import tensorflow as tf

from keras_stn import backends
from keras_stn._compilation import current_target


# Default name scope of the grid ops (export keeps it in float).
SCOPE = "affine_grid"


def check_size(size, ranks=(2,), argument="size"):
    """Returns `size` as a tuple of positive Python ints, or raises.

    Args:
        size: the value to check.
        ranks: allowed lengths (2: `(height, width)`, 3: `(depth, height,
            width)`).
        argument: the argument's name, for the error message.
    """
    expected = " or ".join(
        "(height, width)" if rank == 2 else "(depth, height, width)"
        for rank in ranks
    )
    message = (
        f"Invalid value for argument `{argument}`. Expected a tuple "
        f"{expected} of positive ints. Received: {argument}={size!r}"
    )
    if not isinstance(size, (tuple, list)) or len(size) not in ranks:
        raise ValueError(message)
    checked = []
    for dim in size:
        if isinstance(dim, (bool, np.bool_)) or not isinstance(
            dim, (int, np.integer)
        ):
            raise TypeError(message)
        if dim < 1:
            raise ValueError(message)
        checked.append(int(dim))
    return tuple(checked)


_UNIT_SIZE_WARNING = (
    "align_corners=True with a one-pixel axis in size {size}: the normalised "
    "coordinates of that axis span nothing, so the grid is degenerate there "
    "(its single pixel sits at 0, as in PyTorch's affine_grid, which warns "
    "alike). Use align_corners=False for one-pixel axes."
)


def _round(value, dtype):
    """An exact rational rounded once to `dtype` (float32 or float64).

    `float()` of a `Fraction` rounds correctly to float64, which holds every
    value rounded here exactly when the target is float32.
    """
    return dtype(float(value))


def _linspace(num, align_corners, dtype):
    """Normalised coordinates of `num` pixel centres, bit for bit PyTorch's.

    PyTorch's `affine_grid` lays the centres out as `linspace(-1, 1, num)`
    (scaled by `(num - 1) / num` for `align_corners=False`), and its
    linspace rounds `start + step * i` (first half) or `end - step * (num -
    1 - i)` (second half) once, a fused multiply-add. Reproducing those
    roundings exactly matters at the identity θ: every pixel coordinate is
    then a few ulps from an integer, and the side of it decides which
    corners a bilinear derivative is taken against. `dtype` is `np.float32`
    or `np.float64`, the dtype of the grid.
    """
    if num == 1:
        # A single pixel sits at the centre, 0, whatever align_corners (as in
        # PyTorch >= 1.3).
        return np.zeros(1, dtype)
    step = Fraction(float(dtype(2) / dtype(num - 1)))
    half = num // 2
    values = np.array([
        _round(-1 + step * index if index < half
               else 1 - step * (num - 1 - index), dtype)
        for index in range(num)
    ], dtype)
    if not align_corners:
        # Two roundings, as PyTorch's `range * (num - 1) / num`.
        values = values * dtype(num - 1) / dtype(num)
    return values


def meshgrid(height, width, align_corners=False):
    """Normalised coordinates of every pixel centre of a target image.

    Convention:
        Coordinates in [-1, 1], x then y, `align_corners` as in PyTorch's
        `affine_grid`: with `True`, -1 and 1 are the centres of the corner
        pixels; with `False`, they are the outer edges of the corner pixels.

    Args:
        height: int, number of rows of the target image.
        width: int, number of columns of the target image.
        align_corners: bool, see the convention above.

    Returns:
        A float32 tensor of shape `[height, width, 2]` holding `(x, y)`.

    Example:

    >>> grid = keras_stn.grid.meshgrid(2, 3, align_corners=True)
    >>> grid[0, :, 0].numpy().tolist()
    [-1.0, 0.0, 1.0]
    """
    height, width = check_size((height, width))
    base = _homogeneous_meshgrid((height, width), align_corners)
    return tf.constant(base.reshape(height, width, 3)[..., :2])


def _homogeneous_meshgrid(size, align_corners, dtype=np.float32):
    """NumPy `[prod(size), len(size) + 1]` of `(x, y[, z], 1)`, read-only.

    Row-major over `size` (`(height, width)` or `(depth, height, width)`),
    x varying fastest, in `dtype` (`np.float32` or `np.float64`). Warns, as
    PyTorch's `affine_grid` does, when `align_corners=True` meets a
    one-pixel axis.
    """
    size = tuple(size)
    if align_corners and 1 in size:
        warnings.warn(_UNIT_SIZE_WARNING.format(size=size), stacklevel=3)
    return _cached_meshgrid(size, align_corners, np.dtype(dtype).type)


@functools.lru_cache(maxsize=64)
def _cached_meshgrid(size, align_corners, dtype):
    axes = [_linspace(num, align_corners, dtype) for num in size]  # z?, y, x
    mesh = np.meshgrid(*axes, indexing="ij")
    coords = [axis.ravel() for axis in reversed(mesh)]  # x, y, z?
    coords.append(np.ones_like(coords[0]))
    base = np.stack(coords, axis=-1).astype(dtype)
    base.flags.writeable = False
    return base


def coordinate_dtype(dtype):
    """The dtype grids are computed in: float64 if given float64, else float32."""
    return tf.float64 if tf.as_dtype(dtype) == tf.float64 else tf.float32


def times_meshgrid(weights, size, align_corners, target=None):
    """`[..., N]`: rows `weights [..., k + 1]` times each meshgrid point.

    The meshgrid is `(x, y[, z], 1)` over `size` (N points, x fastest); the
    last axis of `weights` must be static. `target` (`_compilation`,
    default: the current one) picks broadcast multiply-adds for XLA, one
    matmul otherwise.
    """
    target = target or current_target()
    dtype = np.float64 if weights.dtype == tf.float64 else np.float32
    base = _homogeneous_meshgrid(size, align_corners, dtype)  # [N, k + 1]
    if weights.shape[-1] != base.shape[1]:
        raise ValueError(
            f"The grid generator needs rows of {base.shape[1]} static "
            f"entries for a {len(size)}-D size {size}. Received: "
            f"shape={weights.shape}"
        )
    if target == "xla":
        return _times_meshgrid_xla(weights, base)
    # One plain matmul [rows, k + 1] @ [k + 1, N] (a FULLY_CONNECTED in
    # TFLite). The batch comes from θ at run time: no batch-sized constant.
    leading = tf.shape(weights)[:-1]
    products = tf.matmul(tf.reshape(weights, [-1, base.shape[1]]),
                         tf.constant(base, dtype=weights.dtype),
                         transpose_b=True)
    return tf.reshape(products, tf.concat([leading, [base.shape[0]]], 0))


def _times_meshgrid_xla(weights, base):
    """`times_meshgrid` for XLA, which runs a dot with k + 1 = 3 as a slow
    generic loop but fuses broadcast multiply-adds; the gradient, a sum over
    the N points, is a dot XLA runs well (its reductions were 2× slower)."""

    @tf.custom_gradient
    def products(weights):
        result = None
        for col in range(base.shape[1]):
            term = weights[..., col : col + 1] * tf.constant(
                base[:, col], dtype=weights.dtype)
            result = term if result is None else result + term

        def gradient(upstream):
            flat = tf.reshape(upstream, [-1, base.shape[0]])
            d_weights = tf.matmul(flat, tf.constant(base, dtype=flat.dtype))
            return tf.reshape(d_weights, tf.shape(weights))

        return result, gradient

    return products(weights)


def affine_grid(theta, size, align_corners=False, name=None):
    """Sampling grid of a batch of 2-D (or 3-D) affine transforms.

    Equal to `torch.nn.functional.affine_grid(theta, (B, C, H, W),
    align_corners)` (or `(B, C, D, H, W)` for volumes) to float precision;
    the result is batch-first with the coordinates last, as PyTorch's is.

    Convention:
        Coordinates in [-1, 1], x then y (then z). θ maps target (output)
        coordinates to source (input) coordinates: `grid[b, i, j] = θ[b] @
        (x_j, y_i, 1)`. `align_corners` has PyTorch's meaning. The identity
        θ is `[[1, 0, 0], [0, 1, 0]]` (3-D: `[[1, 0, 0, 0], [0, 1, 0, 0],
        [0, 0, 1, 0]]`) and gives the target's meshgrid.

    Args:
        theta: float tensor `[batch, 2, 3]` or `[batch, 6]` (row-major);
            for volumes `[batch, 3, 4]` or `[batch, 12]`.
        size: tuple `(height, width)` of the target (output) image, or
            `(depth, height, width)` of a target volume.
        align_corners: bool, as in PyTorch.
        name: optional name scope.

    Returns:
        A float32 tensor `[batch, height, width, 2]` of `(x, y)` source
        coordinates (`[batch, depth, height, width, 3]` of `(x, y, z)` for
        volumes; float64 if `theta` is float64), whatever the dtype of
        `theta`.

    Example:

    >>> theta = tf.constant([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    >>> keras_stn.affine_grid(theta, (4, 5)).shape
    TensorShape([1, 4, 5, 2])
    >>> keras_stn.affine_grid(tf.eye(3, 4)[None], (2, 4, 5)).shape
    TensorShape([1, 2, 4, 5, 3])
    """
    size = check_size(size, ranks=(2, 3))
    theta, backend = backends.checked(theta)
    _check_theta(theta, size)
    if backend.NAME != "tensorflow":
        return backend.affine_grid(theta, size, align_corners)
    with tf.name_scope(name or SCOPE):
        theta = _affine_matrices(theta, size)
        # [batch, k, N] products of θ's rows with the meshgrid, points last.
        grid = tf.transpose(
            times_meshgrid(theta, size, align_corners, current_target()),
            [0, 2, 1])
        return tf.reshape(grid, [-1, *size, len(size)])


def affine_coordinates(theta, size, align_corners=False, name=None):
    """`affine_grid` as one tensor per axis: `[x, y]` (volumes `[x, y, z]`).

    Equal to the slices `affine_grid(...)[..., i]`, produced without the
    `[..., 2]` axis, which TFLite and TF's runtime would otherwise have to
    slice apart again; pair it with `sample_coordinates`.

    Args:
        theta: float tensor `[batch, 2, 3]` or `[batch, 6]` (volumes
            `[batch, 3, 4]` or `[batch, 12]`), as in `affine_grid`.
        size: `(height, width)` of the target (volumes `(depth, height,
            width)`).
        align_corners: bool, as in PyTorch.
        name: optional name scope.

    Returns:
        A list of float32 tensors `[batch, *size]` (float64 for a float64
        `theta`): x, y (and z for volumes).

    Example:

    >>> x, y = keras_stn.affine_coordinates([[1.0, 0, 0, 0, 1, 0]], (2, 4))
    >>> np.round(x.numpy(), 6).tolist()
    [[[-0.75, -0.25, 0.25, 0.75], [-0.75, -0.25, 0.25, 0.75]]]
    >>> y.numpy().tolist()
    [[[-0.5, -0.5, -0.5, -0.5], [0.5, 0.5, 0.5, 0.5]]]
    """
    size = check_size(size, ranks=(2, 3))
    theta, backend = backends.checked(theta)
    _check_theta(theta, size)
    if backend.NAME != "tensorflow":
        grid = backend.affine_grid(theta, size, align_corners)
        return [grid[..., axis] for axis in range(len(size))]
    with tf.name_scope(name or SCOPE):
        theta = _affine_matrices(theta, size)
        target = current_target()
        # One product per row of θ: slicing rows out of a joint product
        # costs more than the product itself in TFLite.
        return [
            tf.reshape(times_meshgrid(theta[:, row], size, align_corners,
                                      target), [-1, *size])
            for row in range(len(size))
        ]


def _check_theta(theta, size):
    """Raises unless `theta` (any backend's tensor) fits a `size` grid."""
    rank = len(size)
    dtype = keras.backend.standardize_dtype(theta.dtype)
    if not dtype.startswith(("float", "bfloat")):
        raise TypeError(
            "Invalid dtype for argument `theta`. Expected a floating "
            f"dtype. Received: theta.dtype={dtype}"
        )
    shape = tf.TensorShape(theta.shape)
    rows, cols = rank, rank + 1
    if not (
        (shape.rank == 3 and shape[1:].as_list() in ([rows, cols], [None, None]))
        or (shape.rank == 2 and shape[1] in (rows * cols, None))
    ):
        raise ValueError(
            f"Invalid shape for argument `theta`. Expected [batch, {rows}, "
            f"{cols}] or [batch, {rows * cols}] for a {rank}-D size "
            f"{size}. Received: theta.shape={shape}"
        )


def _affine_matrices(theta, size):
    """Checked TF θ as float32 (float64) `[batch, k, k + 1]` matrices."""
    rank = len(size)
    theta = tf.cast(theta, coordinate_dtype(theta.dtype))
    return tf.reshape(theta, [-1, rank, rank + 1])
