"""JAX: the `keras.ops` formulations of `portable`, compiled by `jax.jit`.

Compiled, XLA fuses the sampler's elementwise work around its gathers and
contracts the unnormalisation into one fused multiply-add, the rounding
PyTorch's CPU kernel has (which side of an integer a coordinate at the
identity θ falls on decides the corners of its derivative). Inside a
jitted training step these functions inline.
"""

import functools

import jax

from keras_stn.backends import portable

NAME = "jax"

flatten = portable.flatten


@functools.partial(jax.jit, static_argnums=(1, 2))
def affine_grid(theta, size, align_corners):
    return portable.affine_grid(theta, tuple(size), align_corners)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def transform_grid(transform, params, size, align_corners):
    return portable.transform_grid(transform, params, tuple(size),
                                   align_corners)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def grid_sample(images, grid, interpolation, padding_mode, align_corners):
    return portable.grid_sample(images, grid, interpolation, padding_mode,
                                align_corners)


@functools.partial(jax.jit, static_argnums=(1, 3, 4, 5, 6))
def warp(images, transform, params, size, interpolation, padding_mode,
         align_corners):
    grid = portable.transform_grid(transform, params, tuple(size),
                                   align_corners)
    return portable.grid_sample(images, grid, interpolation, padding_mode,
                                align_corners)
