"""The op namespace of `keras_stn.kernels` in TF ops, TFLite builtins only.

Every function lowers to a TFLite builtin (floor, cast, minimum/maximum,
select, elementwise arithmetic, reshape, gather, fully-connected), so what
the kernels build converts without Flex ops; shapes unknown until run time
are read with `tf.shape`. Scalar `where` branches stay scalars, which
TFLite's SELECT_V2 broadcasts (it has no ZEROS_LIKE).
"""

import tensorflow as tf

from keras_stn.backends.tensorflow.coordinates import fused_unnormalize  # noqa: F401 (the namespace)
from keras_stn.backends.tensorflow.grid import times_meshgrid

abs = tf.abs  # noqa: A001 - the namespace's name for it
equal = tf.equal
expand_dims = tf.expand_dims
floor = tf.floor
log = tf.math.log
logical_and = tf.logical_and
matmul = tf.matmul
not_equal = tf.not_equal
ones_like = tf.ones_like
stop_gradient = tf.stop_gradient
zeros_like = tf.zeros_like
maximum = tf.maximum
minimum = tf.minimum


def dtype(value):
    return value.dtype.name


def cast(value, dtype):
    return tf.cast(value, dtype)


def where(condition, x, y):
    # Python-number branches become scalar constants of the other branch's
    # dtype (SELECT_V2 broadcasts them).
    if isinstance(x, (int, float)):
        x = tf.constant(x, y.dtype)
    if isinstance(y, (int, float)):
        y = tf.constant(y, x.dtype)
    return tf.where(condition, x, y)


def clip(value, low, high):
    return tf.clip_by_value(value, low, high)


def shape(value):
    """Static sizes where known, else run-time scalars."""
    dynamic = tf.shape(value)
    return [size if size is not None else dynamic[axis]
            for axis, size in enumerate(value.shape)]


def _shape_tensor(shape):
    if all(isinstance(size, int) for size in shape):
        return list(shape)
    return tf.stack([tf.cast(size, tf.int32) for size in shape])


def reshape(value, shape):
    return tf.reshape(value, _shape_tensor(shape))


def size_as(size, dtype):
    return tf.cast(size, dtype)


def stack(values, axis=0):
    return tf.stack(values, axis)


def concatenate(values, axis=0):
    return tf.concat(values, axis)


def zeros(shape, dtype):
    return tf.zeros(_shape_tensor(shape), dtype)


def constant(array, dtype):
    return tf.constant(array, dtype=dtype)


def arange(count):
    return tf.range(count)


def take(flat, index):
    return tf.gather(flat, index)


def average_pool_2x2(images):
    """2×2 box averages of `[batch, height, width, channels]` (even sizes):
    TFLite's AVERAGE_POOL_2D."""
    return tf.nn.avg_pool2d(images, 2, 2, "VALID")


def weighted(weight, values):
    """`weight [..]` times `values [.., channels]`, in `values`' dtype."""
    return tf.expand_dims(tf.cast(weight, values.dtype), -1) * values


def meshgrid_points(matrices, base):
    """`[batch, N, rows]`: every meshgrid point times each row of
    `matrices [batch, rows, k + 1]` (one product, then a transpose)."""
    return tf.transpose(times_meshgrid(matrices, base), [0, 2, 1])


def meshgrid_rows(rows, base):
    """One product per row `[batch, k + 1]` (slicing rows out of a joint
    product costs more than the product itself in TFLite)."""
    return [times_meshgrid(row, base) for row in rows]


def round_half_to_even(value):
    """Rounds like C's `nearbyint` (PyTorch's nearest mode): ties to even."""
    floor = tf.floor(value)
    fraction = value - floor
    odd = tf.equal(floor - 2.0 * tf.floor(floor / 2.0), 1.0)
    round_up = tf.logical_or(
        fraction > 0.5, tf.logical_and(tf.equal(fraction, 0.5), odd))
    return floor + tf.cast(round_up, value.dtype)


def zero_coordinate_gradient(values, coords):
    """`values`, with a zero gradient (as PyTorch's) rather than none for
    coordinates they are piecewise constant in."""

    @tf.custom_gradient
    def attach(values, *coords):
        def gradient(upstream):
            return [upstream] + [tf.zeros_like(coord) for coord in coords]

        return tf.identity(values), gradient

    return attach(values, *coords)
