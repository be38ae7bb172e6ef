"""Dense deformation fields: warping, integration, composition, inversion,
Jacobians and smoothness penalties, for image registration.

Convention:
    A displacement `u` is a tensor `[batch, height, width, 2]` (volumes:
    `[batch, depth, height, width, 3]`) in pixels (voxels) of the image it
    is applied to. It defines the sampling map φ_u(p) = p + u(p): output
    position → input position, in pixel-index coordinates with pixel
    centres at integers (pixel (row i, column j) is at x = j, y = i). Its
    last axis is ordered `(x, y[, z])` like `keras_stn.affine_grid`'s;
    `indexing="ij"` takes fields ordered as the array's axes, `(row, col)`
    or `(depth, row, col)`, as VoxelMorph writes them. `warp(images, u)`
    reads `images` at φ_u(p) for every output pixel p, so a field of
    constant `(+2, 0)` shows the content 2 pixels to the right.

Every function is written in `keras.ops`, so it runs on the TensorFlow,
JAX and PyTorch backends with gradients to images and fields, and the
sampling goes through `keras_stn.grid_sample` (on TensorFlow: builtins-only
TFLite). Fields read outside the image with `padding_mode="zeros"` unless
told otherwise: a displacement read beyond the border is zero, which keeps
`warp(warp(I, a), b) == warp(I, compose(a, b))` exact at the border too, and
is what VoxelMorph's integration does.
"""

import keras
import numpy as np
from keras import ops

from keras_stn.core.checks import check_align_corners
from keras_stn.core.checks import check_antialias
from keras_stn.core.checks import check_interpolation
from keras_stn.core.checks import check_padding_mode
from keras_stn.core.checks import check_size
from keras_stn.core.coordinates import coordinate_dtype
from keras_stn.core.meshgrid import homogeneous_meshgrid
from keras_stn.grid import affine_grid
from keras_stn.kernels import differences
from keras_stn.sampling import grid_sample

SUPPORTED_INDEXING = ("xy", "ij")
SUPPORTED_PENALTIES = ("l2", "bending")


# -- Checks and conventions ---------------------------------------------------


def check_indexing(indexing):
    if indexing not in SUPPORTED_INDEXING:
        raise ValueError(
            "Invalid value for argument `indexing`. Expected one of "
            f"{SUPPORTED_INDEXING}. Received: indexing={indexing!r}")


def check_count(value, argument, minimum):
    """`value` as an int >= `minimum`, or a `ValueError` naming `argument`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, np.integer)) or value < minimum:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected an int >= "
            f"{minimum}. Received: {argument}={value!r}")
    return int(value)


def _field(value, argument="displacement"):
    """`value` as a float tensor `[batch, *spatial, rank]`, rank 2 or 3."""
    if not isinstance(value, keras.KerasTensor):
        value = ops.convert_to_tensor(value)
    dtype = keras.backend.standardize_dtype(value.dtype)
    if not dtype.startswith(("float", "bfloat")):
        raise TypeError(
            f"Invalid dtype for argument `{argument}`. Expected a floating "
            f"dtype. Received: {argument}.dtype={dtype}")
    shape = tuple(value.shape)
    if len(shape) not in (4, 5) or shape[-1] != len(shape) - 2:
        raise ValueError(
            f"Invalid shape for argument `{argument}`. Expected [batch, "
            "height, width, 2] or [batch, depth, height, width, 3] (one "
            "displacement component per spatial axis, last). Received: "
            f"{argument}.shape={shape}")
    if None in shape[1:-1]:
        raise ValueError(
            f"Invalid shape for argument `{argument}`. Expected static "
            f"spatial dimensions. Received: {argument}.shape={shape}")
    return value


def _to_xy(field, indexing):
    """The field's last axis in `(x, y[, z])` order."""
    check_indexing(indexing)
    if indexing == "xy":
        return field
    return ops.flip(field, axis=-1)


def _from_xy(field, indexing):
    return field if indexing == "xy" else ops.flip(field, axis=-1)


def _spatial(field):
    return tuple(int(size) for size in field.shape[1:-1])


def _xy_sizes(spatial):
    """Sizes per coordinate, x first: `(width, height[, depth])`."""
    return tuple(reversed(spatial))


def _normalised_base(spatial, dtype):
    """`[1, *spatial, rank]` normalised coordinates of the pixel centres
    (`align_corners=False`), x first: the identity grid."""
    base = homogeneous_meshgrid(spatial, False, np.float32)[:, :-1]
    return ops.convert_to_tensor(
        np.array(base).reshape((1, *spatial, len(spatial))), dtype=dtype)


def _pixel_scale(image_spatial, dtype):
    """`[rank]`: normalised units per pixel of an image, x first."""
    return ops.convert_to_tensor(
        np.array([2.0 / size for size in _xy_sizes(image_spatial)],
                 np.float32), dtype=dtype)


def _sampling_grid(displacement_xy, image_spatial):
    """The normalised grid (`align_corners=False`) of φ_u for an image of
    `image_spatial` size: the output pixel centres, mapped onto the image
    as by an identity resize, plus u in the image's pixels."""
    spatial = _spatial(displacement_xy)
    dtype = coordinate_dtype(keras.backend.standardize_dtype(
        displacement_xy.dtype))
    displacement_xy = ops.cast(displacement_xy, dtype)
    return (_normalised_base(spatial, dtype)
            + displacement_xy * _pixel_scale(image_spatial, dtype))


# -- Warping -----------------------------------------------------------------


def warp(images, displacement, interpolation="bilinear", padding_mode="zeros",
         indexing="xy", antialias=False):
    """Samples `images` at φ_u(p) = p + u(p) for every output pixel p.

    Convention:
        See the module: `displacement` in pixels of `images`, last axis
        `(x, y[, z])` (`indexing="xy"`) or the array's axis order
        (`indexing="ij"`, VoxelMorph's). With a field of another spatial
        size than `images`, p is the output pixel's centre mapped onto the
        image as by an identity resize (`affine_grid` of the identity with
        `align_corners=False`), plus u in the image's pixels.

    Args:
        images: float tensor `[batch, height, width, channels]` (volumes
            `[batch, depth, height, width, channels]`).
        displacement: float tensor `[batch, out_height, out_width, 2]`
            (volumes `[batch, out_depth, out_height, out_width, 3]`).
        interpolation: as in `keras_stn.grid_sample` (default bilinear;
            trilinear on volumes).
        padding_mode: as in `keras_stn.grid_sample` (default `"zeros"`).
        indexing: `"xy"` or `"ij"`, the order of the field's last axis.
        antialias: bool (default False): prefilter where the warp shrinks
            the image, as `keras_stn.grid_sample(..., antialias=True)`
            (bilinear 2-D images).

    Returns:
        `images` warped: `[batch, *out_spatial, channels]`, of `images`'
        dtype. Differentiable with respect to `images` and `displacement`.

    Example:

    >>> images = np.arange(12, dtype="float32").reshape(1, 3, 4, 1)
    >>> shift = np.zeros((1, 3, 4, 2), "float32"); shift[..., 0] = 1.0
    >>> out = keras_stn.fields.warp(images, shift)
    >>> np.asarray(out)[0, 0, :, 0].tolist()
    [1.0, 2.0, 3.0, 0.0]
    """
    check_interpolation(interpolation)
    check_padding_mode(padding_mode)
    check_indexing(indexing)
    check_antialias(antialias, interpolation)
    displacement = _to_xy(_field(displacement), indexing)
    if not isinstance(images, keras.KerasTensor):
        images = ops.convert_to_tensor(images)
    if len(images.shape) != len(displacement.shape):
        raise ValueError(
            "Arguments `images` and `displacement` must have the same rank "
            "(a 2-D field warps images, a 3-D field volumes). Received: "
            f"images.shape={tuple(images.shape)}, "
            f"displacement.shape={tuple(displacement.shape)}")
    image_spatial = tuple(images.shape[1:-1])
    if None in image_spatial:
        raise ValueError(
            "Invalid shape for argument `images`. Expected static spatial "
            f"dimensions. Received: images.shape={tuple(images.shape)}")
    grid = _sampling_grid(displacement, image_spatial)
    return grid_sample(images, grid, interpolation=interpolation,
                       padding_mode=padding_mode, align_corners=False,
                       antialias=antialias)


def _sample_field(field_xy, displacement_xy, padding_mode):
    """The field `field_xy` (x-first) read at φ of `displacement_xy`."""
    return warp(field_xy, displacement_xy, "bilinear", padding_mode, "xy")


# -- Integration, composition, inversion --------------------------------------


def integrate(velocity, steps=7, padding_mode="zeros", indexing="xy"):
    """Scaling and squaring: the displacement of the time-1 flow of a
    stationary velocity field.

    The velocity is divided by 2**steps, then composed with itself `steps`
    times (u ← u + u∘φ_u). The result is diffeomorphic when the scaled
    velocity is small (its Jacobian determinant stays positive), as in
    VoxelMorph's `VecInt`.

    Args:
        velocity: float tensor, a field as in the module's convention.
        steps: int >= 0; `steps=0` returns the velocity itself.
        padding_mode: how the field reads beyond the border while it is
            composed with itself (`"zeros"`, VoxelMorph's, or `"border"`).
        indexing: `"xy"` or `"ij"`; the result has the same order.

    Returns:
        The displacement, of `velocity`'s shape.

    Example:

    >>> velocity = np.full((1, 8, 8, 2), 0.5, "float32")
    >>> u = keras_stn.fields.integrate(velocity, steps=4)
    >>> round(float(np.asarray(u)[0, 4, 2, 0]), 4)
    0.5
    """
    steps = check_count(steps, "steps", minimum=0)
    check_padding_mode(padding_mode)
    velocity = _field(velocity, "velocity")
    if steps == 0:
        return velocity
    field = _to_xy(velocity, indexing) * (1.0 / 2**steps)
    for _ in range(steps):
        field = field + _sample_field(field, field, padding_mode)
    return _from_xy(field, indexing)


def compose(a, b, padding_mode="zeros", indexing="xy"):
    """The displacement c with φ_c = φ_a ∘ φ_b: c(p) = b(p) + a(p + b(p)).

    Warping by `a`, then by `b`, equals warping once by c:
    `warp(warp(I, a), b) == warp(I, compose(a, b))`, up to interpolation
    (exactly where the fields are constant or affine and the samples fall
    inside the image; with zeros padding also where p + b(p) falls
    outside, since both sides then read zeros).

    Args:
        a: the field applied first to the image (the outer map).
        b: the field applied second (the inner map), of the output's size.
        padding_mode: how `a` reads beyond the border (default `"zeros"`).
        indexing: `"xy"` or `"ij"`, for both fields and the result.

    Returns:
        The composed displacement, of `b`'s shape.

    Example:

    >>> a = np.full((1, 4, 4, 2), 1.0, "float32")
    >>> b = np.full((1, 4, 4, 2), 0.5, "float32")
    >>> c = keras_stn.fields.compose(a, b)
    >>> float(np.asarray(c)[0, 1, 1, 0])
    1.5
    """
    check_padding_mode(padding_mode)
    a = _to_xy(_field(a, "a"), indexing)
    b = _to_xy(_field(b, "b"), indexing)
    if len(a.shape) != len(b.shape):
        raise ValueError(
            "Arguments `a` and `b` must be fields of the same rank. "
            f"Received: a.shape={tuple(a.shape)}, b.shape={tuple(b.shape)}")
    return _from_xy(b + _sample_field(a, b, padding_mode), indexing)


def invert(displacement, iterations=20, padding_mode="border", indexing="xy"):
    """An approximate inverse w of a displacement u, with φ_u ∘ φ_w ≈ id.

    Fixed-point iteration w ← −u ∘ φ_w, from w = −u. It converges where u
    is a contraction (its largest spatial derivative below 1); on smooth
    fields `compose(u, invert(u))` is then ≈ 0 to within interpolation
    error: `tests/test_fields.py` measures max |compose(u, invert(u))| <
    0.02 px on a smooth 48×48 field of 1.5 px amplitude (derivatives ≤
    0.3) after 20 iterations, away from the border by more than the
    field's amplitude.

    Args:
        displacement: the field to invert.
        iterations: int >= 1, fixed-point steps (error shrinks about
            geometrically with the field's largest derivative).
        padding_mode: how `u` reads beyond the border (default `"border"`,
            which keeps the inverse of a translation exact at the edges).
        indexing: `"xy"` or `"ij"`; the result has the same order.

    Returns:
        The inverse displacement, of `displacement`'s shape.
    """
    iterations = check_count(iterations, "iterations", minimum=1)
    check_padding_mode(padding_mode)
    field = _to_xy(_field(displacement), indexing)
    inverse = -field
    for _ in range(iterations):
        inverse = -_sample_field(field, inverse, padding_mode)
    return _from_xy(inverse, indexing)


# -- Affine fields and resolution ---------------------------------------------


def affine_to_displacement(theta, size, align_corners=False):
    """The dense displacement of an affine θ in keras_stn's convention.

    `warp(images, affine_to_displacement(theta, size, align_corners))`
    equals `grid_sample(images, affine_grid(theta, size, align_corners),
    align_corners=align_corners)` for images of spatial size `size`.

    Args:
        theta: float tensor `[batch, 2, 3]` / `[batch, 6]` (volumes
            `[batch, 3, 4]` / `[batch, 12]`), mapping output to input
            coordinates, as in `keras_stn.affine_grid`.
        size: `(height, width)` (volumes `(depth, height, width)`) of the
            images, and of the field.
        align_corners: bool, the meaning θ's normalised coordinates have.

    Returns:
        A float32 field `[batch, *size, rank]`, x first, in pixels.

    Example:

    >>> theta = np.array([[1, 0, 0.5, 0, 1, 0]], "float32")  # x + 0.5
    >>> u = keras_stn.fields.affine_to_displacement(theta, (4, 4))
    >>> float(np.asarray(u)[0, 0, 0, 0])  # 0.5 normalised = 1 pixel
    1.0
    """
    size = check_size(size, ranks=(2, 3))
    check_align_corners(align_corners)
    grid = affine_grid(theta, size, align_corners)
    dtype = keras.backend.standardize_dtype(grid.dtype)
    sizes = np.array(_xy_sizes(size), np.float64)
    if align_corners:
        scale, offset = (sizes - 1.0) / 2.0, (sizes - 1.0) / 2.0
    else:
        scale, offset = sizes / 2.0, (sizes - 1.0) / 2.0
    # Pixel indices of the output, x first.
    base = np.stack(np.meshgrid(*[np.arange(n) for n in size],
                                indexing="ij")[::-1], axis=-1)[None]
    pixels = grid * ops.convert_to_tensor(scale, dtype) + ops.convert_to_tensor(
        offset, dtype)
    return pixels - ops.convert_to_tensor(base, dtype)


def resize(displacement, size, indexing="xy"):
    """The field at another resolution, its values rescaled with it.

    The field is resampled bilinearly (pixel centres aligned, as an image
    resize with half-pixel centres; border padding), and each component
    multiplied by the ratio of the new to the old size along its axis, so
    it moves the same physical point at the new resolution.

    Args:
        displacement: the field.
        size: `(height, width)` (volumes `(depth, height, width)`), the new
            spatial size.
        indexing: `"xy"` or `"ij"`; the result has the same order.

    Returns:
        The field `[batch, *size, rank]`.

    Example:

    >>> u = np.full((1, 4, 4, 2), 1.0, "float32")
    >>> float(np.asarray(keras_stn.fields.resize(u, (8, 8)))[0, 3, 3, 0])
    2.0
    """
    field = _to_xy(_field(displacement), indexing)
    rank = len(field.shape) - 2
    size = check_size(size, ranks=(rank,))
    old = _spatial(field)
    if size != old:
        dtype = keras.backend.standardize_dtype(field.dtype)
        grid = ops.broadcast_to(_normalised_base(size, dtype),
                                (ops.shape(field)[0], *size, rank))
        field = grid_sample(field, grid, padding_mode="border")
        ratio = np.array(_xy_sizes(size), np.float32) / np.array(
            _xy_sizes(old), np.float32)
        field = field * ops.convert_to_tensor(
            ratio, keras.backend.standardize_dtype(field.dtype))
    return _from_xy(field, indexing)


# -- Jacobians -----------------------------------------------------------------


def _along(values, axis, start, stop):
    return differences.along(values, axis, start, stop)


def _derivative(values, axis):
    """d values / d index along `axis` (`kernels.differences.derivative`
    in `keras.ops`)."""
    return differences.derivative(ops, values, axis)


def _jacobian(field_xy):
    """J[i][j] = δ_ij + ∂u_i/∂x_j as nested lists of `[batch, *spatial]`,
    coordinates x first."""
    rank = len(field_xy.shape) - 2
    # The spatial array axis of coordinate j (x: the last spatial axis).
    axes = [rank - j for j in range(rank)]
    components = [field_xy[..., i] for i in range(rank)]
    return [[_derivative(components[i], axes[j]) + (1.0 if i == j else 0.0)
             for j in range(rank)] for i in range(rank)]


def jacobian_determinant(displacement, indexing="xy"):
    """det ∇φ_u = det(I + ∇u) at every pixel.

    Derivatives are central differences inside and one-sided at the border
    (as `np.gradient`), in pixels; the result is differentiable. Values ≤ 0
    mark folding (φ_u not locally invertible).

    Args:
        displacement: the field.
        indexing: `"xy"` or `"ij"` (the determinant is the same).

    Returns:
        `[batch, height, width]` (volumes `[batch, depth, height, width]`).

    Example:

    >>> u = np.zeros((1, 5, 5, 2), "float32")
    >>> u[..., 0] = np.arange(5, dtype="float32") * 0.5  # stretch x by 1.5
    >>> float(np.asarray(keras_stn.fields.jacobian_determinant(u))[0, 2, 2])
    1.5
    """
    field = _to_xy(_field(displacement), indexing)
    j = _jacobian(field)
    if len(j) == 2:
        return j[0][0] * j[1][1] - j[0][1] * j[1][0]
    return (j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
            - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
            + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0]))


def folding_fraction(displacement, indexing="xy"):
    """The fraction of pixels (of the whole batch) where det ∇φ_u ≤ 0.

    Args:
        displacement: the field.
        indexing: `"xy"` or `"ij"`.

    Returns:
        A float32 scalar in [0, 1].
    """
    det = jacobian_determinant(displacement, indexing)
    return ops.mean(ops.cast(det <= 0.0, "float32"))


# -- Smoothness penalties ------------------------------------------------------


def gradient_penalty(displacement):
    """VoxelMorph's `Grad('l2')`: the mean squared forward difference of the
    field along each spatial axis, averaged over the axes.

    Args:
        displacement: the field (either indexing: the penalty is the same).

    Returns:
        A scalar.
    """
    field = _field(displacement)
    rank = len(field.shape) - 2
    total = 0.0
    for axis in range(1, rank + 1):
        size = field.shape[axis]
        if size < 2:
            continue
        total = total + ops.mean(ops.square(
            _along(field, axis, 1, None) - _along(field, axis, 0, -1)))
    return total / rank


def bending_energy(displacement):
    """The bending energy of the field: the mean over pixels of the sum,
    over components, of its squared second derivatives (u_xx² + u_yy² +
    2 u_xy², and the z terms on volumes), with the derivatives of
    `jacobian_determinant` (`np.gradient` twice).

    Args:
        displacement: the field (either indexing: the energy is the same).

    Returns:
        A scalar.
    """
    field = _field(displacement)
    rank = len(field.shape) - 2
    axes = range(1, rank + 1)
    first = {axis: _derivative(field, axis) for axis in axes}
    energy = 0.0
    for a in axes:
        for b in axes:
            if b < a:
                continue
            second = _derivative(first[a], b)
            weight = 1.0 if a == b else 2.0
            energy = energy + weight * ops.sum(ops.square(second), axis=-1)
    return ops.mean(energy)


_PENALTIES = {"l2": gradient_penalty, "bending": bending_energy}


def _check_penalty(penalty):
    if penalty not in SUPPORTED_PENALTIES:
        raise ValueError(
            "Invalid value for argument `penalty`. Expected one of "
            f"{SUPPORTED_PENALTIES}. Received: penalty={penalty!r}")


@keras.saving.register_keras_serializable(package="keras_stn")
class SmoothnessLoss(keras.losses.Loss):
    """A smoothness penalty of a predicted field as a Keras loss.

    `y_true` is ignored (pass zeros): the loss is the penalty of `y_pred`.

    Args:
        penalty: `"l2"` (`gradient_penalty`, VoxelMorph's `Grad('l2')`) or
            `"bending"` (`bending_energy`).
        **kwargs: passed to `keras.losses.Loss` (`name`, `reduction`, ...).

    Example:

    >>> loss = keras_stn.fields.SmoothnessLoss("l2")
    >>> field = np.zeros((2, 4, 4, 2), "float32")
    >>> float(loss(field, field))
    0.0
    """

    def __init__(self, penalty="l2", name="smoothness", **kwargs):
        _check_penalty(penalty)
        super().__init__(name=name, **kwargs)
        self.penalty = penalty

    def call(self, y_true, y_pred):
        return _PENALTIES[self.penalty](y_pred)

    def get_config(self):
        return {**super().get_config(), "penalty": self.penalty}


@keras.saving.register_keras_serializable(package="keras_stn")
class SmoothnessRegularizer(keras.regularizers.Regularizer):
    """A smoothness penalty as an activity regulariser of a layer that
    outputs a field (`keras.layers.Conv2D(2, 3, activity_regularizer=...)`).

    Args:
        weight: float >= 0, the penalty's factor.
        penalty: `"l2"` or `"bending"`, as in `SmoothnessLoss`.

    Example:

    >>> reg = keras_stn.fields.SmoothnessRegularizer(0.1)
    >>> float(reg(np.zeros((1, 4, 4, 2), "float32")))
    0.0
    """

    def __init__(self, weight=1.0, penalty="l2"):
        _check_penalty(penalty)
        if isinstance(weight, bool) or not isinstance(
                weight, (int, float, np.integer, np.floating)) or not (
                    np.isfinite(weight) and weight >= 0):
            raise ValueError(
                "Invalid value for argument `weight`. Expected a finite "
                f"number >= 0. Received: weight={weight!r}")
        self.weight = float(weight)
        self.penalty = penalty

    def __call__(self, x):
        return self.weight * _PENALTIES[self.penalty](x)

    def get_config(self):
        return {"weight": self.weight, "penalty": self.penalty}
