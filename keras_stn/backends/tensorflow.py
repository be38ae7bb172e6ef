"""TensorFlow: the TF-ops implementation, the one TFLite export traces.

The arithmetic lives in `keras_stn.grid`, `keras_stn.transforms`,
`keras_stn.sampling` and the kernels they use; this module is their entry
under the common interface, and the layer's grid generator and sampler with
the name scopes the TFLite exporter finds them by.
"""

import tensorflow as tf

NAME = "tensorflow"
# Name scopes of the layer's coordinate path: int8 export keeps them float.
GRID_SCOPE = "grid_generator"
SAMPLER_SCOPE = "sampler"


def affine_grid(theta, size, align_corners):
    from keras_stn import grid

    return grid.affine_grid(theta, size, align_corners)


def flatten(transform, params):
    return transform._tf_flatten(params)


def transform_grid(transform, params, size, align_corners):
    return transform._tf_grid(params, size, align_corners)


def grid_sample(images, grid, interpolation, padding_mode, align_corners):
    from keras_stn import sampling

    return sampling.grid_sample(images, grid, interpolation, padding_mode,
                                align_corners)


def warp(images, transform, params, size, interpolation, padding_mode,
         align_corners):
    from keras_stn import sampling

    with tf.name_scope(GRID_SCOPE):
        coords = transform._tf_coordinates(params, size, align_corners)
    with tf.name_scope(SAMPLER_SCOPE):
        return sampling.sample_coordinates(
            images, coords, interpolation=interpolation,
            padding_mode=padding_mode, align_corners=align_corners)
