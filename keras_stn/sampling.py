"""Sampler: interpolation of images (or volumes) at a grid, the public ops.

Each op checks its arguments once, then makes one dispatch: to the backend
that owns the tensors (`keras_stn.backends`; TensorFlow tensors always take
the TensorFlow sampler, whose every op is a TFLite builtin), or, for
`keras.KerasTensor`s, to a symbolic Keras operation so that functional
models can be built from these ops on every backend.
"""

import keras

from keras_stn import backends
from keras_stn.core.checks import SUPPORTED_INTERPOLATION  # noqa: F401
from keras_stn.core.checks import SUPPORTED_PADDING_MODES  # noqa: F401
from keras_stn.core.checks import check_align_corners
from keras_stn.core.checks import check_antialias
from keras_stn.core.checks import check_images_and_grid
from keras_stn.core.checks import check_interpolation
from keras_stn.core.checks import check_padding_mode
from keras_stn.core.checks import check_spatial_rank
from keras_stn.core.checks import dtype_of
from keras_stn.core.checks import shape_of
from keras_stn.core.scopes import GRID_SAMPLE_SCOPE

# Default name scope of the sampler ops (export keeps it in float).
SCOPE = GRID_SAMPLE_SCOPE


def grid_sample(
    images,
    grid,
    interpolation="bilinear",
    padding_mode="zeros",
    align_corners=False,
    name=None,
    antialias=False,
):
    """Samples a batch of NHWC images (or NDHWC volumes) at grid coordinates.

    Equal to `torch.nn.functional.grid_sample(input, grid, mode,
    padding_mode, align_corners)` to float precision, with images in NHWC
    (channels last) where PyTorch takes NCHW, and volumes in NDHWC where it
    takes NCDHW. Gradients flow to both `images` and `grid` (the latter is
    zero for `"nearest"`, as PyTorch's). Where sampling has a kink, the
    derivative is PyTorch's one-sided one: at an integer pixel coordinate
    it is taken on [x, x + 1], and `"border"`/`"reflection"` give a
    coordinate on or beyond the border zero derivative.

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
        antialias: bool (default False). True filters before reading where
            the grid samples the image more sparsely than one sample per
            input pixel (a warp that shrinks it): a mip-map of 2×2 box
            averages, the level chosen per output pixel from the grid's
            own derivatives (its footprint in input pixels), the two
            nearest levels blended (`keras_stn.kernels.antialias`). Where
            the warp magnifies, the result is plain sampling. Bilinear 2-D
            images of static size only; differentiable with respect to
            images and grid; TFLite builtins only.

    Returns:
        A tensor `[batch, out_height, out_width, channels]` (volumes:
        `[batch, out_depth, out_height, out_width, channels]`) of `images`'
        dtype. Coordinates and weights are float32 (float64 for a float64
        grid), whatever the dtype of `images` or `grid`. Zero channels, an
        empty batch or an empty grid give an empty output of that shape.

    Raises:
        ValueError: for an image with an empty spatial axis, unsupported
            options, or shapes that do not match (batch sizes that differ
            only at run time raise `tf.errors.InvalidArgumentError` then).
        TypeError: for non-floating images or grid.

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
    check_antialias(antialias, interpolation)
    if backends.is_symbolic(images, grid):
        return _GridSample(interpolation, padding_mode, align_corners,
                           name, antialias).symbolic_call(images, grid)
    backend = backends.for_values(images, grid)
    images, _ = backends.checked(images, backend)
    grid, _ = backends.checked(grid, backend)
    check_images_and_grid(shape_of(images), dtype_of(images), shape_of(grid),
                          dtype_of(grid))
    check_spatial_rank(shape_of(images), interpolation)
    if antialias:
        check_antialias(antialias, interpolation, shape_of(images))
        return backend.antialiased_grid_sample(images, grid, padding_mode,
                                               align_corners, name=name)
    return backend.grid_sample(images, grid, interpolation, padding_mode,
                               align_corners, name=name)


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
    if not isinstance(coords, (list, tuple)) or not coords:
        raise TypeError(
            "Invalid value for argument `coords`. Expected a list of one "
            "tensor per spatial axis (x, y[, z]). Received: "
            f"coords={coords!r}")
    coords = list(coords)
    if backends.is_symbolic(images, *coords):
        return _SampleCoordinates(interpolation, padding_mode, align_corners,
                                  name).symbolic_call(images, coords)
    images, backend = backends.checked(images, backends.for_values(
        images, *coords))
    coords = [backends.checked(coord, backend)[0] for coord in coords]
    coord_shape = shape_of(coords[0])
    grid_shape = None if coord_shape is None else (*coord_shape, len(coords))
    check_images_and_grid(shape_of(images), dtype_of(images), grid_shape,
                          dtype_of(coords[0]))
    check_spatial_rank(shape_of(images), interpolation)
    return backend.sample_coordinates(images, coords, interpolation,
                                      padding_mode, align_corners, name=name)


def _sampled_spec(images, grid_shape):
    """The KerasTensor of sampling `images` at a grid of `grid_shape`."""
    batch = images.shape[0] if images.shape[0] is not None else grid_shape[0]
    return keras.KerasTensor((batch, *grid_shape[1:-1], images.shape[-1]),
                             dtype=images.dtype)


class _GridSample(keras.Operation):
    """`grid_sample` as a Keras operation, for symbolic (functional) calls."""

    def __init__(self, interpolation, padding_mode, align_corners, name,
                 antialias=False):
        super().__init__(name=name)
        self.options = (interpolation, padding_mode, align_corners)
        self.antialias = antialias

    def call(self, images, grid):
        return grid_sample(images, grid, *self.options,
                           antialias=self.antialias)

    def compute_output_spec(self, images, grid):
        check_images_and_grid(shape_of(images), dtype_of(images),
                              shape_of(grid), dtype_of(grid))
        check_spatial_rank(shape_of(images), self.options[0])
        check_antialias(self.antialias, self.options[0], shape_of(images))
        return _sampled_spec(images, tuple(grid.shape))


class _SampleCoordinates(keras.Operation):
    """`sample_coordinates` as a Keras operation (functional models)."""

    def __init__(self, interpolation, padding_mode, align_corners, name):
        super().__init__(name=name)
        self.options = (interpolation, padding_mode, align_corners)

    def call(self, images, coords):
        return sample_coordinates(images, coords, *self.options)

    def compute_output_spec(self, images, coords):
        grid_shape = (*coords[0].shape, len(coords))
        check_images_and_grid(shape_of(images), dtype_of(images), grid_shape,
                              dtype_of(coords[0]))
        check_spatial_rank(shape_of(images), self.options[0])
        return _sampled_spec(images, grid_shape)
