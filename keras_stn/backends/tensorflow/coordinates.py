"""The fused-multiply-add emulation of the unnormalisation (TF's runtime).

PyTorch's 2-D CPU kernel computes `(x + 1) * size / 2 - 0.5` as one fused
multiply-add, rounded once; XLA on CPU contracts the plain formula the same
way, TF's runtime does not. The two roundings differ by an ulp, which
matters only at an integer: at the identity θ, where every pixel
coordinate is one, it picks the corners of a derivative (the snap makes the
values equal). TFLite has no float64, so only gradients pay for this.
"""

import tensorflow as tf


def fused_unnormalize(coord, size):
    """float32 `((coord + 1) * size - 1) / 2`, rounded once, as an FMA does;
    the derivative is `size / 2`."""
    half_size = size / 2.0

    @tf.custom_gradient
    def fused(coord):
        # Exact in float64 (a 24-bit coordinate times a half-integer size),
        # then rounded once to float32.
        wide = tf.cast(coord + 1.0, tf.float64) * tf.cast(half_size,
                                                           tf.float64)

        def gradient(upstream):
            return upstream * half_size

        return tf.cast(wide - 0.5, tf.float32), gradient

    return fused(coord)
