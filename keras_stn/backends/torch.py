"""PyTorch: `torch.nn.functional.affine_grid` / `grid_sample` themselves.

keras_stn's conventions are PyTorch's (`tests/test_backends.py` checks the
equivalence against the TensorFlow path, values and gradients, kinks
included), so the affine grid and every sampling mode call PyTorch's own
kernels, after the guard the TensorFlow path applies to hostile
coordinates: NaN reads as outside, and coordinates are clamped a margin
beyond the image (±2²³ pixels for reflection), which reads the same. The
other transforms' grids are the shared kernels (`keras_stn.kernels`) in
`keras.ops`.
"""

import warnings

import torch
import torch.nn.functional as F

from keras_stn.backends import keras_ops as ops
from keras_stn.core import coordinates as _coordinates
from keras_stn.core.meshgrid import warn_if_degenerate
from keras_stn.kernels import antialias as _antialias
from keras_stn.kernels import grids

NAME = "torch"

_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def flatten(transform, params):
    return grids.flatten(ops, ops.convert(params), transform.num_params)


def affine_grid(theta, size, align_corners, name=None):
    theta = grids.affine_matrices(ops, ops.convert(theta), len(size))
    warn_if_degenerate(size, align_corners, stacklevel=4)
    with warnings.catch_warnings():
        # Said above in keras_stn's words (as the other backends say it).
        warnings.filterwarnings("ignore", message=".*unit-size grids",
                                category=UserWarning)
        return F.affine_grid(theta, (theta.shape[0], 1, *size),
                             align_corners=align_corners)


def affine_coordinates(theta, size, align_corners, name=None):
    return grids.split(affine_grid(theta, size, align_corners))


def transform_grid(transform, params, size, align_corners):
    params = flatten(transform, params)
    if transform.name in ("affine", "affine_3d"):
        return affine_grid(params, size, align_corners)
    if transform.expansion_matrices() is not None:
        expansion, offset = transform.expansion_matrices()
        expansion = torch.as_tensor(expansion, dtype=params.dtype,
                                    device=params.device)
        offset = torch.as_tensor(offset, dtype=params.dtype,
                                 device=params.device)
        return affine_grid(params @ expansion + offset, size, align_corners)
    return transform.grid_in(ops, params, size, align_corners)


def transform_coordinates(transform, params, size, align_corners):
    return grids.split(transform_grid(transform, params, size, align_corners))


def _normalized(pixel, size, align_corners):
    """The normalised coordinate of pixel coordinate `pixel`."""
    if align_corners:
        return 2.0 * pixel / (size - 1) - 1.0 if size > 1 else 0.0
    return (2.0 * pixel + 1.0) / size - 1.0


def _guarded(grid, sizes, padding_mode, align_corners):
    """`grid` with NaN sent outside and every coordinate clamped where it
    reads the same (as `_coordinates.bounded` on the TensorFlow path)."""
    margin = float(_coordinates.MARGIN)
    low, high, nan = [], [], []
    for size in sizes:
        if padding_mode == "reflection":
            limit = _coordinates.REFLECTION_LIMIT
            bounds = (-limit, limit)
        else:
            bounds = (-margin, size - 1.0 + margin)
        if align_corners and size == 1:
            bounds = (-1.0, 1.0)  # every coordinate reads the one pixel
        low.append(min(_normalized(bounds[0], size, align_corners), -1.0))
        high.append(max(_normalized(bounds[1], size, align_corners), 1.0))
        nan.append(_normalized(-margin, size, align_corners))

    def constant(values):
        return torch.tensor(values, dtype=grid.dtype, device=grid.device)

    grid = torch.where(torch.isnan(grid), constant(nan), grid)
    return torch.clamp(grid, constant(low), constant(high))


def grid_sample(images, grid, interpolation, padding_mode, align_corners,
                name=None):
    images, grid = ops.convert(images), ops.convert(grid)
    spatial = images.dim() - 2
    coordinates = ops.coordinate_dtype(grid)
    dtype = (torch.float64 if torch.float64 in (images.dtype,
                                                _TORCH_DTYPES[coordinates])
             else torch.float32)
    if images.shape[-1] == 0:
        return images.new_zeros((*grid.shape[:-1], 0))
    sizes = list(images.shape[spatial:0:-1])  # x first
    grid = _guarded(grid.to(_TORCH_DTYPES[coordinates]), sizes, padding_mode,
                    align_corners).to(dtype)
    channels_first = images.to(dtype).permute(0, spatial + 1,
                                              *range(1, spatial + 1))
    output = F.grid_sample(channels_first, grid, mode=interpolation,
                           padding_mode=padding_mode,
                           align_corners=align_corners)
    return output.permute(0, *range(2, spatial + 2), 1).to(images.dtype)


def antialiased_grid_sample(images, grid, padding_mode, align_corners,
                            name=None):
    """The mip-map sampler of `keras_stn.kernels.antialias` in `keras.ops`
    (torch's `grid_sample` has no prefilter)."""
    images, grid = ops.convert(images), ops.convert(grid)
    grid = grid.to(_TORCH_DTYPES[ops.coordinate_dtype(grid)])
    return _antialias.sample(ops, images, grids.split(grid), padding_mode,
                             align_corners)


def sample_coordinates(images, coords, interpolation, padding_mode,
                       align_corners, name=None):
    return grid_sample(images, torch.stack(list(coords), -1), interpolation,
                       padding_mode, align_corners)


def warp(images, transform, params, size, interpolation, padding_mode,
         align_corners):
    grid = transform_grid(transform, params, size, align_corners)
    return grid_sample(images, grid, interpolation, padding_mode,
                       align_corners)
