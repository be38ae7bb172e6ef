"""The TensorFlow sampler: the shared kernels (`keras_stn.kernels.sampler`)
in TFLite-builtin TF ops, and the fast 2-D bilinear kernel where the image
size is static.

Every gather index is clamped into range and non-finite coordinates are
neutralised before they are cast to integers, so any grid, however hostile,
yields finite output and no out-of-bounds read. Arguments arrive checked
(`keras_stn.sampling`).
"""

import tensorflow as tf

from keras_stn.backends.tensorflow import bilinear
from keras_stn.backends.tensorflow import clusters
from keras_stn.backends.tensorflow import ops
from keras_stn.backends.tensorflow.compilation import current_target
from keras_stn.backends.tensorflow.compilation import recording_gradients
from keras_stn.backends.tensorflow.grid import coordinate_dtype
from keras_stn.core.scopes import GRID_SAMPLE_SCOPE as SCOPE
from keras_stn.kernels import antialias
from keras_stn.kernels import coordinates
from keras_stn.kernels import sampler


def grid_sample(images, grid, interpolation, padding_mode, align_corners,
                name=None):
    """`keras_stn.grid_sample` on checked arguments, in TF ops (an XLA
    cluster in TF's runtime: `clusters`)."""
    with tf.name_scope(name or SCOPE):
        images, (grid,) = checked_at_run_time(
            tf.convert_to_tensor(images), [tf.convert_to_tensor(grid)])
        options = (interpolation, padding_mode, align_corners)
        return clusters.run("grid_sample",
                            lambda images, grid: _sample_grid(images, grid,
                                                              *options),
                            [images, grid], options)


def _sample_grid(images, grid, interpolation, padding_mode, align_corners):
    grid = tf.cast(grid, coordinate_dtype(grid.dtype))
    # Per-axis slices: single-output ops, which int8 export keeps in float
    # by name (an UNPACK is faster in TFLite but breaks that).
    spatial = images.shape.rank - 2
    return _sample(images, [grid[..., axis] for axis in range(spatial)],
                   interpolation, padding_mode, align_corners)


def antialiased_grid_sample(images, grid, padding_mode, align_corners,
                            name=None):
    """`keras_stn.grid_sample(..., antialias=True)` on checked arguments
    (bilinear 2-D images of static size), in TF ops (an XLA cluster in TF's
    runtime: `clusters`)."""
    with tf.name_scope(name or SCOPE):
        images, (grid,) = checked_at_run_time(
            tf.convert_to_tensor(images), [tf.convert_to_tensor(grid)])

        def body(images, grid):
            grid = tf.cast(grid, coordinate_dtype(grid.dtype))
            return antialias.sample(ops, images, [grid[..., 0], grid[..., 1]],
                                    padding_mode, align_corners)

        return clusters.run("antialiased_grid_sample", body, [images, grid],
                            (padding_mode, align_corners))


def sample_coordinates(images, coords, interpolation, padding_mode,
                       align_corners, name=None):
    """`keras_stn.sample_coordinates` on checked arguments, in TF ops (an
    XLA cluster in TF's runtime: `clusters`)."""
    with tf.name_scope(name or SCOPE):
        images, coords = checked_at_run_time(
            tf.convert_to_tensor(images),
            [tf.convert_to_tensor(coord) for coord in coords])
        options = (interpolation, padding_mode, align_corners)
        return clusters.run(
            "sample_coordinates",
            lambda images, *coords: sample_checked(images, list(coords),
                                                   *options),
            [images, *coords], options)


def sample_checked(images, coords, interpolation, padding_mode,
                   align_corners):
    """The sampler on per-axis coordinates already checked
    (`checked_at_run_time`), in the current target's formulation."""
    dtype = coordinate_dtype(coords[0].dtype)
    return _sample(images, [tf.cast(c, dtype) for c in coords],
                   interpolation, padding_mode, align_corners)


def _sample(images, coords, interpolation, padding_mode, align_corners):
    """The sampler proper, on validated images and per-axis coordinates."""
    spatial = images.shape.rank - 2
    value_dtype = (tf.float64 if tf.float64 in (images.dtype, coords[0].dtype)
                   else tf.float32)
    # PyTorch's 2-D kernel rounds the unnormalisation as a fused
    # multiply-add, which decides the derivative's side at integers. XLA on
    # CPU contracts the plain formula into one already; TF's runtime needs
    # float64 arithmetic for it (which TFLite lacks), worth its cost only
    # when a gradient may be taken.
    target = current_target()
    fused = spatial == 2 and target == "runtime" and recording_gradients()
    if (interpolation == "bilinear" and spatial == 2
            and None not in images.shape[1:] and images.shape[-1] != 0):
        height, width = images.shape[1], images.shape[2]
        x, y = [coordinates.source(ops, coord, ops.size_as(size, coord.dtype),
                                   padding_mode, align_corners, fused)
                for coord, size in zip(coords, (width, height))]
        padded = bilinear.pad_images(tf.cast(images, value_dtype))
        return tf.cast(
            bilinear.bilinear(padded, x, y, height, width, target),
            images.dtype)
    return sampler.sample(ops, images, coords, interpolation, padding_mode,
                          align_corners, fused)


def checked_at_run_time(images, coords):
    """`images` and `coords` behind run-time checks of what static shapes
    could not tell: an empty spatial axis, or batch sizes that differ (which
    the gathers would otherwise broadcast silently). They run in TF's
    runtime, outside any XLA cluster (which would compile them away);
    TFLite's converter drops them."""
    spatial = images.shape.rank - 2
    checks = []
    if None in images.shape[1:spatial + 1]:
        checks.append(tf.debugging.assert_positive(
            tf.shape(images)[1:spatial + 1],
            message="grid_sample: expected `images` to have non-empty "
                    "spatial dimensions"))
    if images.shape[0] is None or coords[0].shape[0] is None:
        checks.append(tf.debugging.assert_equal(
            tf.shape(images)[0], tf.shape(coords[0])[0],
            message="grid_sample: arguments `images` and `grid` must have "
                    "the same batch size"))
    if not checks:
        return images, coords
    with tf.control_dependencies(checks):
        return tf.identity(images), [tf.identity(c) for c in coords]
