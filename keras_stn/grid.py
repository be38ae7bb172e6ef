"""Grid generator: normalised target coordinates and the affine grid.

Convention (shared by every grid and sampling function of `keras_stn`):
    Coordinates are normalised to [-1, 1], x (width) first, then y (height).
    With `align_corners=True`, -1 and 1 are the centres of the corner pixels;
    with `align_corners=False` (the default), they are the outer edges of the
    corner pixels, exactly as in PyTorch's `affine_grid` / `grid_sample`.
    θ maps target (output) coordinates to source (input) coordinates; the
    identity affine θ is `[[1, 0, 0], [0, 1, 0]]`.
"""

import keras
import numpy as np

from keras_stn import backends
from keras_stn.core.checks import check_size
from keras_stn.core.checks import check_theta
from keras_stn.core.coordinates import coordinate_dtype
from keras_stn.core.meshgrid import homogeneous_meshgrid
from keras_stn.core.scopes import AFFINE_GRID_SCOPE

# Default name scope of the grid ops (export keeps it in float).
SCOPE = AFFINE_GRID_SCOPE


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
    base = homogeneous_meshgrid((height, width), align_corners)
    return keras.ops.convert_to_tensor(
        np.array(base.reshape(height, width, 3)[..., :2]))


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
    if backends.is_symbolic(theta):
        return _AffineGrid(size, align_corners, name).symbolic_call(theta)
    theta, backend = backends.checked(theta)
    check_theta(theta, size)
    return backend.affine_grid(theta, size, align_corners, name=name)


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
    if backends.is_symbolic(theta):
        return _AffineCoordinates(size, align_corners,
                                  name).symbolic_call(theta)
    theta, backend = backends.checked(theta)
    check_theta(theta, size)
    return backend.affine_coordinates(theta, size, align_corners, name=name)


def _grid_dtype(theta):
    return coordinate_dtype(theta.dtype)


class _AffineGrid(keras.Operation):
    """`affine_grid` as a Keras operation, for symbolic (functional) calls."""

    def __init__(self, size, align_corners, name):
        super().__init__(name=name)
        self.size, self.align_corners = size, align_corners

    def call(self, theta):
        return affine_grid(theta, self.size, self.align_corners)

    def compute_output_spec(self, theta):
        check_theta(theta, self.size)
        return keras.KerasTensor(
            (theta.shape[0], *self.size, len(self.size)),
            dtype=_grid_dtype(theta))


class _AffineCoordinates(keras.Operation):
    """`affine_coordinates` as a Keras operation (functional models)."""

    def __init__(self, size, align_corners, name):
        super().__init__(name=name)
        self.size, self.align_corners = size, align_corners

    def call(self, theta):
        return affine_coordinates(theta, self.size, self.align_corners)

    def compute_output_spec(self, theta):
        check_theta(theta, self.size)
        return [keras.KerasTensor((theta.shape[0], *self.size),
                                  dtype=_grid_dtype(theta))
                for _ in self.size]
