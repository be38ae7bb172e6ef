"""The TensorFlow grid generator: θ times the meshgrid, in TFLite builtins.

Arguments arrive checked (`keras_stn.grid`). The batch comes from θ at run
time, so no batch-sized constant enters a graph.
"""

import numpy as np
import tensorflow as tf

from keras_stn.backends.tensorflow.compilation import current_target
from keras_stn.core.meshgrid import homogeneous_meshgrid

# Default name scope of the grid ops (export keeps it in float).
SCOPE = "affine_grid"


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
    base = homogeneous_meshgrid(size, align_corners, dtype)  # [N, k + 1]
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


def affine_grid(theta, size, align_corners, name=None):
    """`keras_stn.affine_grid` on checked arguments, in TF ops."""
    with tf.name_scope(name or SCOPE):
        theta = _affine_matrices(tf.convert_to_tensor(theta), size)
        # [batch, k, N] products of θ's rows with the meshgrid, points last.
        grid = tf.transpose(
            times_meshgrid(theta, size, align_corners, current_target()),
            [0, 2, 1])
        return tf.reshape(grid, [-1, *size, len(size)])


def affine_coordinates(theta, size, align_corners, name=None):
    """`keras_stn.affine_coordinates` on checked arguments, in TF ops."""
    with tf.name_scope(name or SCOPE):
        theta = _affine_matrices(tf.convert_to_tensor(theta), size)
        target = current_target()
        # One product per row of θ: slicing rows out of a joint product
        # costs more than the product itself in TFLite.
        return [
            tf.reshape(times_meshgrid(theta[:, row], size, align_corners,
                                      target), [-1, *size])
            for row in range(len(size))
        ]


def _affine_matrices(theta, size):
    """Checked TF θ as float32 (float64) `[batch, k, k + 1]` matrices."""
    rank = len(size)
    theta = tf.cast(theta, coordinate_dtype(theta.dtype))
    return tf.reshape(theta, [-1, rank, rank + 1])
