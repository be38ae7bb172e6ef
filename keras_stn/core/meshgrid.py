"""The normalised meshgrid of a target image or volume, in NumPy.

Bit for bit PyTorch's `affine_grid` base grid: every backend multiplies its
rows by θ (or a transform's matrices), so it is computed once, here, as a
read-only NumPy array cached per size.
"""

import contextlib
import functools
import os
import threading
import warnings
from fractions import Fraction

from keras_stn.core.overrides import overridden

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
    if not getattr(_caller_warns, "active", False):
        warn_if_degenerate(size, align_corners, stacklevel=4)
    return _cached_meshgrid(size, align_corners, np.dtype(dtype).type)


def warn_if_degenerate(size, align_corners, stacklevel=3):
    """The warning of a one-pixel axis with `align_corners=True` (for
    backends whose own grid functions stand in for the meshgrid)."""
    if align_corners and 1 in tuple(size):
        warnings.warn(_UNIT_SIZE_WARNING.format(size=tuple(size)),
                      stacklevel=stacklevel)


_caller_warns = threading.local()


@contextlib.contextmanager
def warned_by_caller():
    """`homogeneous_meshgrid` stays silent in this thread for the block:
    the caller has called `warn_if_degenerate` itself (a grid traced once
    into a cached XLA cluster must still warn at every call)."""
    with overridden(_caller_warns, "active", True):
        yield


@functools.lru_cache(maxsize=64)
def _cached_meshgrid(size, align_corners, dtype):
    # Checked here, once per size: a hit of the cache needs no check.
    check_grid_memory(size, itemsize=np.dtype(dtype).itemsize)
    try:
        return _build_meshgrid(size, align_corners, dtype)
    except MemoryError as error:
        raise GridMemoryError(
            f"Invalid value for argument `size`: the meshgrid of a {size} "
            f"grid needs {_gib(grid_bytes(size, np.dtype(dtype).itemsize))}, "
            "more than could be allocated. Received: "
            f"size={size!r}") from error


def _build_meshgrid(size, align_corners, dtype):
    axes = [_linspace(num, align_corners, dtype) for num in size]  # z?, y, x
    mesh = np.meshgrid(*axes, indexing="ij")
    coords = [axis.ravel() for axis in reversed(mesh)]  # x, y, z?
    coords.append(np.ones_like(coords[0]))
    base = np.stack(coords, axis=-1).astype(dtype)
    base.flags.writeable = False
    return base


class GridMemoryError(MemoryError, ValueError):
    """A grid larger than this process can hold (a `MemoryError` and a
    `ValueError`: the size asked for is the mistake)."""


def available_memory():
    """Bytes this process may allocate at most: the machine's physical
    memory, or the address-space limit (`ulimit -v`) when lower; `None`
    where neither can be read."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):  # pragma: no cover
        pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            limits.append(soft)
    except (ImportError, OSError, ValueError):  # pragma: no cover - Windows
        pass
    return min(limits) if limits else None


def grid_bytes(size, itemsize=4):
    """Bytes a warp to `size` needs at least: the homogeneous meshgrid
    `[N, k + 1]` and one example's grid `[N, k]`, N = prod(size)."""
    points = int(np.prod(size, dtype=np.float64))
    rank = len(size)
    return points * (2 * rank + 1) * itemsize


def _gib(count):
    return f"{count / 2**30:.1f} GiB"


def check_grid_memory(size, argument="size", itemsize=4):
    """Raises a `GridMemoryError` naming `argument` when a grid of `size`
    cannot fit in the memory this process may allocate."""
    needed = grid_bytes(size, itemsize)
    available = available_memory()
    if available is not None and needed > available:
        raise GridMemoryError(
            f"Invalid value for argument `{argument}`: a {size} grid needs "
            f"at least {_gib(needed)} ({int(np.prod(size)):,} points: the "
            f"meshgrid and one example's grid), more than the "
            f"{_gib(available)} this process may allocate. Use a smaller "
            f"size. Received: {argument}={size!r}")
