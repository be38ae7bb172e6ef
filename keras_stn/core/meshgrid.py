"""The normalised meshgrid of a target image or volume, in NumPy.

Bit for bit PyTorch's `affine_grid` base grid: every backend multiplies its
rows by θ (or a transform's matrices), so it is computed once, here, as a
read-only NumPy array cached per size.
"""

import functools
import warnings
from fractions import Fraction

import numpy as np


_UNIT_SIZE_WARNING = (
    "align_corners=True with a one-pixel axis in size {size}: the normalised "
    "coordinates of that axis span nothing, so the grid is degenerate there "
    "(its single pixel sits at 0, as in PyTorch's affine_grid, which warns "
    "alike). Use align_corners=False for one-pixel axes."
)


def _round(value, dtype):
    """An exact rational rounded once to `dtype` (float32 or float64).

    `float()` of a `Fraction` rounds correctly to float64, which holds every
    value rounded here exactly when the target is float32.
    """
    return dtype(float(value))


def _linspace(num, align_corners, dtype):
    """Normalised coordinates of `num` pixel centres, bit for bit PyTorch's.

    PyTorch's `affine_grid` lays the centres out as `linspace(-1, 1, num)`
    (scaled by `(num - 1) / num` for `align_corners=False`), and its
    linspace rounds `start + step * i` (first half) or `end - step * (num -
    1 - i)` (second half) once, a fused multiply-add. Reproducing those
    roundings exactly matters at the identity θ: every pixel coordinate is
    then a few ulps from an integer, and the side of it decides which
    corners a bilinear derivative is taken against. `dtype` is `np.float32`
    or `np.float64`, the dtype of the grid.
    """
    if num == 1:
        # A single pixel sits at the centre, 0, whatever align_corners (as in
        # PyTorch >= 1.3).
        return np.zeros(1, dtype)
    step = Fraction(float(dtype(2) / dtype(num - 1)))
    half = num // 2
    values = np.array([
        _round(-1 + step * index if index < half
               else 1 - step * (num - 1 - index), dtype)
        for index in range(num)
    ], dtype)
    if not align_corners:
        # Two roundings, as PyTorch's `range * (num - 1) / num`.
        values = values * dtype(num - 1) / dtype(num)
    return values


def homogeneous_meshgrid(size, align_corners, dtype=np.float32):
    """NumPy `[prod(size), len(size) + 1]` of `(x, y[, z], 1)`, read-only.

    Row-major over `size` (`(height, width)` or `(depth, height, width)`),
    x varying fastest, in `dtype` (`np.float32` or `np.float64`). Warns, as
    PyTorch's `affine_grid` does, when `align_corners=True` meets a
    one-pixel axis.
    """
    size = tuple(size)
    if align_corners and 1 in size:
        warnings.warn(_UNIT_SIZE_WARNING.format(size=size), stacklevel=3)
    return _cached_meshgrid(size, align_corners, np.dtype(dtype).type)


@functools.lru_cache(maxsize=64)
def _cached_meshgrid(size, align_corners, dtype):
    axes = [_linspace(num, align_corners, dtype) for num in size]  # z?, y, x
    mesh = np.meshgrid(*axes, indexing="ij")
    coords = [axis.ravel() for axis in reversed(mesh)]  # x, y, z?
    coords.append(np.ones_like(coords[0]))
    base = np.stack(coords, axis=-1).astype(dtype)
    base.flags.writeable = False
    return base
