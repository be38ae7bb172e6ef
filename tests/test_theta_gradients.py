"""θ gradients where sampling has kinks, against PyTorch's recorded values.

At the identity θ, where every spatial transformer starts training, each
pixel coordinate lies a few ulps from an integer, and the side it lies on
decides which corners the derivative is taken against. These golden values
were recorded with torch 2.13 (`tests/golden/make_torch_golden.py`); sizes
include ones where the side differs between a fused and an unfused
rounding of the unnormalisation, so only PyTorch's exact arithmetic passes.
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import keras_stn

PADDINGS = ("zeros", "border", "reflection")
EXECUTIONS = ("eager", "function", "xla")


def theta_gradient(images, theta, upstream, interpolation, padding_mode,
                   align_corners, execution, planar=False):
    size = upstream.shape[1:3]

    def gradient(images, theta):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            if planar:  # the layer's path
                coords = keras_stn.affine_coordinates(theta, size,
                                                      align_corners)
                out = keras_stn.sample_coordinates(
                    images, coords, interpolation, padding_mode,
                    align_corners)
            else:
                grid = keras_stn.affine_grid(theta, size, align_corners)
                out = keras_stn.grid_sample(images, grid, interpolation,
                                            padding_mode, align_corners)
            loss = tf.reduce_sum(out * upstream)
        return tape.gradient(loss, theta)

    if execution != "eager":
        gradient = tf.function(gradient, jit_compile=execution == "xla")
    return gradient(tf.constant(images), tf.constant(theta)).numpy()


def _relative(actual, expected):
    return np.abs(actual - expected).max() / max(1.0, np.abs(expected).max())


IDENTITY_MODES = list(itertools.product(("bilinear", "bicubic"), PADDINGS,
                                        (False, True)))


def _sizes(execution, padding_mode, every_size):
    """Eagerly, all four golden sizes (both paths); compiled, the sizes
    where the roundings differ: a fused unnormalisation at 11 × 18 px,
    reflection's half-pixel shift at 13 × 17 px (`every_size`: both)."""
    if execution == "eager":
        return ((5, 6), (11, 18), (13, 17), (28, 28))
    if every_size:
        return ((11, 18), (13, 17))
    return ((13, 17),) if padding_mode == "reflection" else ((11, 18),)


@pytest.mark.parametrize("execution", EXECUTIONS)
@pytest.mark.parametrize("interpolation,padding_mode,align_corners",
                         IDENTITY_MODES)
def test_identity_theta_matches_torch(golden, execution, interpolation,
                                      padding_mode, align_corners):
    check_identity_theta(golden, execution, interpolation, padding_mode,
                         align_corners, every_size=False)


@pytest.mark.slow
@pytest.mark.parametrize("execution", EXECUTIONS[1:])
@pytest.mark.parametrize("interpolation,padding_mode,align_corners",
                         IDENTITY_MODES)
def test_identity_theta_matches_torch_at_every_size(
        golden, execution, interpolation, padding_mode, align_corners):
    check_identity_theta(golden, execution, interpolation, padding_mode,
                         align_corners, every_size=True)


def check_identity_theta(golden, execution, interpolation, padding_mode,
                         align_corners, every_size):
    identity = np.tile(np.eye(2, 3, dtype=np.float32), (2, 1, 1))
    for height, width in _sizes(execution, padding_mode, every_size):
        prefix = f"identity_theta/{height}/{width}"
        expected = golden[f"{prefix}/{interpolation}/{padding_mode}/"
                          f"{align_corners}"]
        for planar in (False, True) if execution == "eager" else (True,):
            actual = theta_gradient(
                golden[prefix + "/images"], identity,
                golden[prefix + "/upstream"], interpolation, padding_mode,
                align_corners, execution, planar)
            # float32 sums of ~1500 terms of order 1: 1e-5 relative. A
            # derivative taken on the wrong side is off by order 1.
            assert _relative(actual, expected) < 1e-5, (
                height, width, planar, actual, expected)


@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("align_corners", [False, True])
def test_constant_image_identity(golden, padding_mode, align_corners):
    """The issue's probe: a constant 5×6 image does not change under small
    moves of θ with border/reflection padding, so the θ gradient is 0 (it
    used to be taken against the zero padding beyond the border)."""
    constant = np.full((1, 5, 6, 1), 2.5, np.float32)
    expected = golden[f"constant_identity/{padding_mode}/{align_corners}"]
    actual = theta_gradient(constant, np.eye(2, 3, dtype=np.float32)[None],
                            np.ones_like(constant), "bilinear", padding_mode,
                            align_corners, "eager")
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-5)
    if padding_mode != "zeros":
        np.testing.assert_array_equal(actual, np.zeros_like(actual))


@pytest.mark.parametrize("execution", EXECUTIONS)
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("align_corners", [False, True])
def test_random_rotations_and_scales(golden, execution, padding_mode,
                                     align_corners):
    expected = golden[f"random_theta/{padding_mode}/{align_corners}"]
    actual = theta_gradient(
        golden["random_theta/images"], golden["random_theta/theta"],
        golden["random_theta/upstream"], "bilinear", padding_mode,
        align_corners, execution)
    per_item = np.abs(actual - expected).max((1, 2)) / np.maximum(
        1.0, np.abs(expected).max((1, 2)))
    assert per_item.max() < 1e-4, per_item
