"""JAX: the shared kernels in `keras.ops` (`keras_ops`), compiled by
`jax.jit`, and a 2-D bilinear kernel with a hand-written derivative.

Compiled, XLA fuses the sampler's elementwise work around its gathers and
contracts the unnormalisation into one fused multiply-add, the rounding
PyTorch's CPU kernel has (which side of an integer a coordinate at the
identity θ falls on decides the corners of its derivative); the grid's
products are one 2-D dot (`_times_meshgrid`), rounded as TF's path rounds
them (and PyTorch's `affine_grid` on an Intel Xeon; on an AMD EPYC PyTorch
rounds each product before summing). Inside a jitted training step these
functions inline.

Bilinear sampling of images runs the padded kernel of
`keras_stn.kernels.bilinear` (the formulation of TensorFlow's, with
PyTorch's values and derivatives) under `jax.custom_vjp`: the framework's
derivative of the generic sampler scatters every corner through its clamps
and masks and sums each corner's channels with a reduction, which XLA's CPU
code runs several times slower than this one (`benchmarks/README.md`).
"""

import functools

import jax
import jax.numpy as jnp

from keras_stn.backends import keras_ops
from keras_stn.kernels import antialias as _antialias
from keras_stn.kernels import bilinear as _bilinear
from keras_stn.kernels import coordinates as _coordinates
from keras_stn.kernels import grids
from keras_stn.kernels import sampler

NAME = "jax"


def _times_meshgrid(weights, base):
    """`[..., N]`: rows `weights [..., k + 1]` times each meshgrid point
    `base [N, k + 1]`, as one 2-D dot `[rows, k + 1] @ [k + 1, N]`.

    XLA's CPU dot rounds these three-term sums in a shape-dependent order:
    the batched `base @ θᵀ` of `keras_ops` was an ulp off PyTorch's
    `affine_grid` (on an Intel Xeon, where it is TF's fused chain) in
    11-13 % of the entries of B8 40² and B2 224² grids; this orientation
    matches it bit for bit on those and on B64/B256 28² (not on tiny ones,
    B3 4² or B1 5×7, which PyTorch rounds without fused multiply-adds).
    An ulp decides the side of a pixel centre a point next to it takes (a
    2/3 zoom puts every point there), and so the pixel difference its
    derivative reads.
    """
    leading = weights.shape[:-1]
    products = jnp.matmul(weights.reshape(-1, base.shape[1]),
                          jnp.asarray(base, weights.dtype).T)
    return products.reshape(*leading, base.shape[0])


class _Ops:
    """`keras_ops`, with the meshgrid products of `_times_meshgrid`."""

    def __getattr__(self, name):
        return getattr(keras_ops, name)

    @staticmethod
    def meshgrid_points(matrices, base):
        return jnp.swapaxes(_times_meshgrid(matrices, base), 1, 2)

    @staticmethod
    def meshgrid_rows(rows, base):
        return [_times_meshgrid(row, base) for row in rows]


ops = _Ops()


def flatten(transform, params):
    return grids.flatten(ops, ops.convert(params), transform.num_params)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _affine_grid(theta, size, align_corners):
    return grids.affine_grid(
        ops, grids.affine_matrices(ops, ops.convert(theta), len(size)), size,
        align_corners)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _affine_coordinates(theta, size, align_corners):
    return grids.affine_planes(
        ops, grids.affine_matrices(ops, ops.convert(theta), len(size)), size,
        align_corners)


def affine_grid(theta, size, align_corners, name=None):
    return _affine_grid(theta, tuple(size), align_corners)


def affine_coordinates(theta, size, align_corners, name=None):
    return _affine_coordinates(theta, tuple(size), align_corners)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _transform_grid(transform, params, size, align_corners):
    return transform.grid_in(ops, flatten(transform, params), size,
                             align_corners)


def transform_grid(transform, params, size, align_corners):
    return _transform_grid(transform, params, tuple(size), align_corners)


def transform_coordinates(transform, params, size, align_corners):
    return grids.split(transform_grid(transform, params, size, align_corners))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _grid_sample(images, grid, interpolation, padding_mode, align_corners):
    grid = ops.cast(grid, ops.coordinate_dtype(grid))
    return _sample(images, grids.split(grid), interpolation, padding_mode,
                   align_corners)


def grid_sample(images, grid, interpolation, padding_mode, align_corners,
                name=None):
    return _grid_sample(images, grid, interpolation, padding_mode,
                        align_corners)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _antialiased_grid_sample(images, grid, padding_mode, align_corners):
    grid = ops.cast(grid, ops.coordinate_dtype(grid))
    return _antialias.sample(ops, images, grids.split(grid), padding_mode,
                             align_corners)


def antialiased_grid_sample(images, grid, padding_mode, align_corners,
                            name=None):
    return _antialiased_grid_sample(images, grid, padding_mode,
                                    align_corners)


def sample_coordinates(images, coords, interpolation, padding_mode,
                       align_corners, name=None):
    return _grid_sample(images, ops.stack(coords, axis=-1), interpolation,
                        padding_mode, align_corners)


@functools.partial(jax.jit, static_argnums=(1, 3, 4, 5, 6))
def warp(images, transform, params, size, interpolation, padding_mode,
         align_corners):
    grid = transform.grid_in(ops, flatten(transform, params), tuple(size),
                             align_corners)
    return _sample(images, grids.split(grid), interpolation, padding_mode,
                   align_corners)


def _sample(images, coords, interpolation, padding_mode, align_corners):
    """The sampler: the padded kernel for bilinear images, the shared
    kernels otherwise."""
    if (interpolation != "bilinear" or len(coords) != 2
            or images.shape[-1] == 0):
        return sampler.sample(ops, images, coords, interpolation,
                              padding_mode, align_corners)
    _, height, width, _ = images.shape
    # As the shared sampler: float64 if either is, else float32.
    value_dtype = ("float64" if jnp.float64 in (images.dtype, coords[0].dtype)
                   else "float32")
    x, y = [_coordinates.source(ops, coord, float(size), padding_mode,
                                align_corners)
            for coord, size in zip(coords, (width, height))]
    pad = (_bilinear.PAD_BEFORE, _bilinear.PAD_AFTER)
    padded = jnp.pad(images.astype(value_dtype), ((0, 0), pad, pad, (0, 0)))
    return _padded_bilinear(padded, x, y).astype(images.dtype)


# At most this many channels are dotted with the upstream gradient as an
# unrolled sum: XLA's CPU reduction over a short minor axis is 4x slower.
_UNROLLED_CHANNELS = 8


@jax.custom_vjp
def _padded_bilinear(padded, x, y):
    """Bilinear samples of zero-padded images `[batch, height + PAD_BEFORE
    + PAD_AFTER, width + …, channels]` at pixel coordinates `x`, `y`
    (`[batch, *out]`, finite, within `MARGIN` pixels of the image)."""
    return _padded_bilinear_forward(padded, x, y)[0]


def _padded_bilinear_forward(padded, x, y):
    batch, padded_height, padded_width, channels = padded.shape
    height = padded_height - _bilinear.PAD_BEFORE - _bilinear.PAD_AFTER
    width = padded_width - _bilinear.PAD_BEFORE - _bilinear.PAD_AFTER
    (x0, ax), (y0, ay) = (_bilinear.split(ops, x, width),
                          _bilinear.split(ops, y, height))
    top_left = _bilinear.top_left_index(ops, x0, y0, batch, height, width)
    flat = padded.reshape(-1, channels)
    values = [flat.at[index].get(mode="clip")
              for index in _bilinear.corner_indices(top_left, width)]
    output = None
    for weight, value in zip(_bilinear.weights(ax, ay), values):
        term = weight.astype(value.dtype)[..., None] * value
        output = term if output is None else output + term
    return _unfused(output), (padded, top_left, ax, ay)


def _unfused(values):
    """`values`, bit for bit, behind a rounding to their own precision.

    XLA's CPU compiler hands a reduction and the elementwise ops that feed
    it to YNNPACK as one fusion, which runs the weighted sum of the corners
    4-8x slower than XLA's own loop (a loss summed over the warped images:
    B=32 224×224×3, 80 ms against 11). YNNPACK has no reduce-precision op,
    so this one, an identity at the values' own width, keeps the sum out of
    that fusion. (An optimisation barrier does not: the CPU compiler drops
    barriers before it fuses.)
    """
    info = jnp.finfo(values.dtype)
    return jax.lax.reduce_precision(values, exponent_bits=info.nexp,
                                    mantissa_bits=info.nmant)


def _padded_bilinear_backward(residuals, upstream):
    padded, top_left, ax, ay = residuals
    shape = padded.shape
    channels = shape[-1]
    width = shape[2] - _bilinear.PAD_BEFORE - _bilinear.PAD_AFTER
    flat = jnp.zeros((shape[0] * shape[1] * shape[2], channels),
                     upstream.dtype)
    rows = upstream.reshape(-1, channels)
    for weight, index in zip(_bilinear.weights(ax, ay),
                             _bilinear.corner_indices(top_left, width)):
        flat = flat.at[index.reshape(-1)].add(
            weight.astype(rows.dtype).reshape(-1, 1) * rows, mode="clip")
    source = padded.reshape(-1, channels)
    values = [source.at[index].get(mode="clip")
              for index in _bilinear.corner_indices(top_left, width)]
    if channels <= _UNROLLED_CHANNELS:
        dots = [sum(value[..., c] * upstream[..., c] for c in range(channels))
                for value in values]
    else:
        dots = [jnp.sum(value * upstream, -1) for value in values]
    d_x, d_y = _bilinear.coordinate_gradient(
        ax, ay, [dot.astype(ax.dtype) for dot in dots])
    return flat.reshape(shape), d_x, d_y


_padded_bilinear.defvjp(_padded_bilinear_forward, _padded_bilinear_backward)
