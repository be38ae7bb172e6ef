"""The TF formulations of the meshgrid products (`keras_stn.kernels.grids`).

One matmul in TF's runtime and TFLite (a FULLY_CONNECTED), broadcast
multiply-adds under XLA. The batch comes from θ at run time, so no
batch-sized constant enters a graph.
"""

import tensorflow as tf

from keras_stn.backends.tensorflow.compilation import current_target
from keras_stn.core import coordinates as _coordinates


def coordinate_dtype(dtype):
    """`keras_stn.core.coordinates.coordinate_dtype` as a TF dtype."""
    return tf.as_dtype(_coordinates.coordinate_dtype(tf.as_dtype(dtype).name))


def times_meshgrid(weights, base, target=None):
    """`[..., N]`: rows `weights [..., k + 1]` times each meshgrid point
    `base [N, k + 1]` (`keras_stn.core.meshgrid.homogeneous_meshgrid`).

    The last axis of `weights` must be static. `target` (`compilation`,
    default: the current one) picks broadcast multiply-adds for XLA, one
    matmul otherwise.
    """
    target = target or current_target()
    if weights.shape[-1] != base.shape[1]:
        raise ValueError(
            f"The grid generator needs rows of {base.shape[1]} static "
            f"entries for a {base.shape[1] - 1}-D meshgrid. Received: "
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
        terms = [weights[..., col : col + 1]
                 * tf.constant(base[:, col], dtype=weights.dtype)
                 for col in range(base.shape[1])]
        # The runtime's matmul (and PyTorch's affine_grid on an Intel Xeon;
        # on an AMD EPYC it rounds each product, then sums) round the first
        # product, then add each further one in a fused multiply-add. XLA
        # contracts `a * b + c * d` into fma(a, b, c * d), rounding the
        # right-hand product first: so the first term goes on the right.
        # Another order moves points an ulp, enough to flip the side of a
        # pixel centre a point next to it takes (a 2/3 zoom puts every
        # point there), and with it the pixel difference its dθ reads.
        result = terms[1] + terms[0]
        for term in terms[2:]:
            result = result + term

        def gradient(upstream):
            flat = tf.reshape(upstream, [-1, base.shape[0]])
            d_weights = tf.matmul(flat, tf.constant(base, dtype=flat.dtype))
            return tf.reshape(d_weights, tf.shape(weights))

        return result, gradient

    return products(weights)
