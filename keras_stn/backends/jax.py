"""JAX: the shared kernels in `keras.ops` (`keras_ops`), compiled by
`jax.jit`.

Compiled, XLA fuses the sampler's elementwise work around its gathers and
contracts the unnormalisation into one fused multiply-add, the rounding
PyTorch's CPU kernel has (which side of an integer a coordinate at the
identity θ falls on decides the corners of its derivative). Inside a
jitted training step these functions inline.
"""

import functools

import jax

from keras_stn.backends import keras_ops as ops
from keras_stn.kernels import grids
from keras_stn.kernels import sampler

NAME = "jax"


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
    return sampler.sample(ops, images, grids.split(grid), interpolation,
                          padding_mode, align_corners)


def grid_sample(images, grid, interpolation, padding_mode, align_corners,
                name=None):
    return _grid_sample(images, grid, interpolation, padding_mode,
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
    return sampler.sample(ops, images, grids.split(grid), interpolation,
                          padding_mode, align_corners)
