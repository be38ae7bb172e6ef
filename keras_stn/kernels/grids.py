"""Grid generators: rows of θ times the meshgrid of the output.

The meshgrid is PyTorch's, bit for bit (`keras_stn.core.meshgrid`); the
products are the namespace's `meshgrid_rows` / `meshgrid_points`, which
each framework forms as its compilers run best (a TF graph picks one per
compilation target).
"""

import numpy as np

from keras_stn.core.coordinates import PROJECTIVE_EPSILON
from keras_stn.core.coordinates import coordinate_dtype
from keras_stn.core.meshgrid import homogeneous_meshgrid


def _meshgrid(ops, values, size, align_corners):
    dtype = np.float64 if ops.dtype(values) == "float64" else np.float32
    return homogeneous_meshgrid(size, align_corners, dtype)


def planes(ops, rows, size, align_corners):
    """Per row `[batch, k + 1]` of `rows`, its product with every meshgrid
    point `(x, y[, z], 1)` of `size`: a list of `[batch, *size]`."""
    base = _meshgrid(ops, rows[0], size, align_corners)
    return [ops.reshape(plane, (-1, *size))
            for plane in ops.meshgrid_rows(rows, base)]


def affine_planes(ops, theta, size, align_corners):
    """The per-axis coordinates `[x, y[, z]]` of checked affine θ `[batch,
    k, k + 1]`, each `[batch, *size]`."""
    return planes(ops, [theta[:, row] for row in range(len(size))], size,
                  align_corners)


def affine_grid(ops, theta, size, align_corners):
    """The grid `[batch, *size, k]` of checked affine θ `[batch, k, k + 1]`
    (PyTorch's `affine_grid`: the meshgrid times θᵀ)."""
    base = _meshgrid(ops, theta, size, align_corners)
    return ops.reshape(ops.meshgrid_points(theta, base),
                       (-1, *size, len(size)))


def projective_planes(ops, params, size, align_corners):
    """`[u / w, v / w]` of homographies `[batch, 8]` (h33 = 1), with `w`
    kept `PROJECTIVE_EPSILON` away from zero, its sign kept."""
    # One product per row of H: no [..., 3] axis to transpose or split
    # (int8 export would quantise those ops too).
    last = ops.concatenate([params[:, 6:8], ops.ones_like(params[:, :1])], 1)
    u, v, w = planes(ops, [params[:, 0:3], params[:, 3:6], last], size,
                     align_corners)
    w = ops.where(w >= 0.0, ops.maximum(w, PROJECTIVE_EPSILON),
                  ops.minimum(w, -PROJECTIVE_EPSILON))
    return [u / w, v / w]


def interpolated_grid(ops, matrix, positions, size):
    """The grid `[batch, *size, 2]` of `matrix [H * W, K] @ positions
    [batch, K, 2]` (a thin-plate spline's constant interpolation matrix)."""
    matrix = ops.constant(matrix, ops.dtype(positions))
    grid = ops.matmul(ops.expand_dims(matrix, 0), positions)
    return ops.reshape(grid, (-1, *size, 2))


def affine_matrices(ops, theta, rank):
    """Checked θ as float32 (float64 kept) `[batch, rank, rank + 1]`."""
    return ops.reshape(flatten(ops, theta, rank * (rank + 1)),
                       (-1, rank, rank + 1))


def split(grid):
    """`grid [..., k]` as its k per-axis planes `[x, y[, z]]`."""
    return [grid[..., axis] for axis in range(grid.shape[-1])]


def flatten(ops, params, count):
    """`params` as float32 (float64 kept) `[batch, count]`."""
    dtype = coordinate_dtype(ops.dtype(params))
    return ops.reshape(ops.cast(params, dtype), (-1, count))
