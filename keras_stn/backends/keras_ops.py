"""The op namespace of `keras_stn.kernels` in `keras.ops`: JAX, and PyTorch
for what `F.grid_sample` / `F.affine_grid` do not cover.

Sizes stay Python numbers (the shapes are static on these backends), so
the coordinate arithmetic on them folds away.
"""

import keras
import numpy as np
from keras import ops as _ops

from keras_stn.core.coordinates import coordinate_dtype as _coordinate_dtype

abs = _ops.abs  # noqa: A001 - the namespace's name for it
concatenate = _ops.concatenate
equal = _ops.equal
expand_dims = _ops.expand_dims
floor = _ops.floor
log = _ops.log
logical_and = _ops.logical_and
matmul = _ops.matmul
not_equal = _ops.not_equal
ones_like = _ops.ones_like
reshape = _ops.reshape
stack = _ops.stack
stop_gradient = _ops.stop_gradient
where = _ops.where
zeros_like = _ops.zeros_like


def dtype(value):
    return keras.backend.standardize_dtype(value.dtype)


def cast(value, dtype):
    return _ops.cast(value, dtype)


def _is_number(value):
    return isinstance(value, (int, float))


def maximum(x, y):
    if _is_number(x) and _is_number(y):
        return max(x, y)
    return _ops.maximum(x, y)


def minimum(x, y):
    if _is_number(x) and _is_number(y):
        return min(x, y)
    return _ops.minimum(x, y)


def clip(value, low, high):
    return _ops.clip(value, low, high)


def shape(value):
    return [int(size) for size in value.shape]


def size_as(size, dtype):
    return float(size)


def zeros(shape, dtype):
    return _ops.zeros(tuple(shape), dtype)


def constant(array, dtype):
    return _ops.convert_to_tensor(np.asarray(array), dtype=dtype)


def arange(count):
    return _ops.arange(count, dtype="int32")


def take(flat, index):
    return _ops.take(flat, index, axis=0)


def average_pool_2x2(images):
    """2×2 box averages of `[batch, height, width, channels]` (even sizes)."""
    return _ops.average_pool(images, 2, strides=2, padding="valid",
                             data_format="channels_last")


def weighted(weight, values):
    return _ops.cast(weight, dtype(values))[..., None] * values


def meshgrid_points(matrices, base):
    """`[batch, N, rows]`: `base [N, k + 1] @ θᵀ` for `matrices [batch,
    rows, k + 1]`, as PyTorch's affine_grid forms it."""
    return _ops.matmul(constant(base, dtype(matrices)),
                       _ops.transpose(matrices, (0, 2, 1)))


def meshgrid_rows(rows, base):
    """Each row `[batch, k + 1]` times every meshgrid point: one product of
    the stacked rows, then split (`[batch, N]` each)."""
    points = meshgrid_points(_ops.stack(rows, axis=1), base)
    return [points[..., row] for row in range(len(rows))]


def round_half_to_even(value):
    # keras.ops.round rounds half to even on every backend, like nearbyint.
    return _ops.round(value)


def zero_coordinate_gradient(values, coords):
    # Rounding has a zero derivative on these backends already.
    return values


def fused_unnormalize(coord, size):  # pragma: no cover - TF only
    raise NotImplementedError(
        "fused_unnormalize: XLA contracts the multiply-add by itself")


# -- Helpers of the backends that use this namespace (not kernels' ops) ----


def convert(value):
    return _ops.convert_to_tensor(value)


def coordinate_dtype(value):
    return _coordinate_dtype(dtype(value))
