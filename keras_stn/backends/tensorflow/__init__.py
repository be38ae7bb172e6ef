"""TensorFlow: the shared kernels in TF ops, the graphs TFLite export traces.

`ops` is the TF op namespace of `keras_stn.kernels`; the package's other
modules hold every TensorFlow-only formulation: the meshgrid products per
compilation target (`grid`), the sampler's dispatch to the fast 2-D
bilinear kernel and its gradient (`sampling`, `bilinear`), the
fused-multiply-add emulation (`coordinates`) and the compilation targets
with their private detections (`compilation`). This module is their entry
under the common interface of `keras_stn.backends`, with the name scopes
the TFLite exporter finds the coordinate path by.
"""

import tensorflow as tf

from keras_stn.backends.tensorflow import clusters
from keras_stn.backends.tensorflow import ops
from keras_stn.backends.tensorflow import sampling as _sampling
from keras_stn.backends.tensorflow.grid import coordinate_dtype
from keras_stn.core.meshgrid import warn_if_degenerate
from keras_stn.core.meshgrid import warned_by_caller
from keras_stn.core.scopes import AFFINE_GRID_SCOPE
from keras_stn.core.scopes import GRID_SCOPE
from keras_stn.core.scopes import SAMPLER_SCOPE
from keras_stn.kernels import grids

NAME = "tensorflow"

grid_sample = _sampling.grid_sample
antialiased_grid_sample = _sampling.antialiased_grid_sample
sample_coordinates = _sampling.sample_coordinates


def _affine_matrices(theta, size):
    rank = len(size)
    theta = tf.cast(theta, coordinate_dtype(theta.dtype))
    return tf.reshape(theta, [-1, rank, rank + 1])


def affine_grid(theta, size, align_corners, name=None):
    """`keras_stn.affine_grid` on checked arguments (an XLA cluster in TF's
    runtime: `clusters`)."""
    return _affine(grids.affine_grid, theta, size, align_corners, name)


def affine_coordinates(theta, size, align_corners, name=None):
    """`keras_stn.affine_coordinates` on checked arguments (an XLA cluster
    in TF's runtime: `clusters`)."""
    return _affine(grids.affine_planes, theta, size, align_corners, name)


def _affine(kernel, theta, size, align_corners, name):
    size = tuple(size)
    # Here, not in the meshgrid: a cluster traces the meshgrid only once.
    warn_if_degenerate(size, align_corners, stacklevel=5)
    with tf.name_scope(name or AFFINE_GRID_SCOPE), warned_by_caller():
        return clusters.run(
            kernel.__name__,
            lambda theta: kernel(ops, _affine_matrices(theta, size), size,
                                 align_corners),
            [tf.convert_to_tensor(theta)], (size, align_corners))


def flatten(transform, params):
    """`params` as float32 (float64 kept) `[batch, num_params]`, behind a
    run-time check where the static shape cannot tell the count."""
    params = tf.convert_to_tensor(params)
    if None in tuple(params.shape)[1:]:
        check = tf.debugging.assert_equal(
            tf.reduce_prod(tf.shape(params)[1:]), transform.num_params,
            message=f"transform '{transform.name}': params must hold "
                    f"{transform.num_params} values per example")
        with tf.control_dependencies([check]):
            params = tf.identity(params)
    return grids.flatten(ops, params, transform.num_params)


def transform_grid(transform, params, size, align_corners):
    return transform.grid_in(ops, flatten(transform, params), size,
                             align_corners)


def transform_coordinates(transform, params, size, align_corners):
    return transform.coordinates_in(ops, flatten(transform, params), size,
                                    align_corners)


def warp(images, transform, params, size, interpolation, padding_mode,
         align_corners):
    """The layer's grid generator and sampler, as one XLA cluster in TF's
    runtime (`clusters`)."""
    size = tuple(size)
    images = tf.convert_to_tensor(images)
    params = tf.convert_to_tensor(params)
    if images.shape[0] is None or params.shape[0] is None:
        with tf.name_scope(SAMPLER_SCOPE):
            check = tf.debugging.assert_equal(
                tf.shape(images)[0], tf.shape(params)[0],
                message="SpatialTransformer: the images and the transform "
                        "parameters must have the same batch size")
            with tf.control_dependencies([check]):
                images = tf.identity(images)
    options = (transform, size, interpolation, padding_mode, align_corners)
    warn_if_degenerate(size, align_corners, stacklevel=4)
    with warned_by_caller():
        return clusters.run("warp", lambda images, params: _warp(
            images, params, *options), [images, params], options)


def _warp(images, params, transform, size, interpolation, padding_mode,
          align_corners):
    with tf.name_scope(GRID_SCOPE):
        coords = transform_coordinates(transform, params, size, align_corners)
    with tf.name_scope(SAMPLER_SCOPE):
        # Inside a cluster's trace (or for TFLite) this samples directly.
        return _sampling.sample_coordinates(
            images, coords, interpolation, padding_mode, align_corners)
