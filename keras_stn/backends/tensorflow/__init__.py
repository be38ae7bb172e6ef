"""TensorFlow: the TF-ops implementation, the one TFLite export traces.

Its modules hold every TensorFlow-only formulation: the grid generator
(`grid`), the sampler (`sampling`), the coordinate path with PyTorch's
derivatives and the fused-multiply-add emulation (`coordinates`), the fast
2-D bilinear kernel and its gradient (`bilinear`), and the compilation
targets with their private detections (`compilation`). This module is their
entry under the common interface of `keras_stn.backends`, and the layer's
grid generator and sampler with the name scopes the TFLite exporter finds
them by.
"""

import tensorflow as tf

from keras_stn.backends.tensorflow import grid as _grid
from keras_stn.backends.tensorflow import sampling as _sampling
from keras_stn.core.scopes import GRID_SCOPE
from keras_stn.core.scopes import SAMPLER_SCOPE

NAME = "tensorflow"

affine_grid = _grid.affine_grid
affine_coordinates = _grid.affine_coordinates
grid_sample = _sampling.grid_sample
sample_coordinates = _sampling.sample_coordinates


def flatten(transform, params):
    return transform._tf_flatten(params)


def transform_grid(transform, params, size, align_corners):
    return transform._tf_grid(params, size, align_corners)


def warp(images, transform, params, size, interpolation, padding_mode,
         align_corners):
    with tf.name_scope(GRID_SCOPE):
        coords = transform._tf_coordinates(params, size, align_corners)
    with tf.name_scope(SAMPLER_SCOPE):
        return _sampling.sample_coordinates(
            images, coords, interpolation, padding_mode, align_corners)
