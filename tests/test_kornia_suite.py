"""kornia's warp tests with hard-coded values, translated to keras_stn.

Each test names the upstream test it ports (kornia/kornia,
`tests/geometry/transform/test_affine.py`). kornia describes a warp as a
forward map of pixel coordinates (source to destination) and samples with
its inverse; here the same warp is written as our θ (destination to source,
normalised as `align_corners` says) by `theta_from_pixels`. Inputs and
expected outputs are kornia's, unchanged (NCHW with one channel becomes
NHWC).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

import keras_stn

# kornia's tolerance in these tests.
TOLERANCE = dict(atol=1e-4, rtol=1e-4)
PICTURE = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]  # 4×2 (H×W)
ONES = [[1.0] * 4] * 4


def _normaliser(size, align_corners, origin):
    """3×3 map from pixel coordinates (pixel centres at integers plus
    `origin`) to normalised ones, per axis (x, y)."""
    matrix = np.eye(3)
    for axis, count in enumerate(size[::-1]):  # x: width, y: height
        if align_corners:
            scale = 2.0 / (count - 1)
            offset = -1.0 - scale * origin
        else:
            scale = 2.0 / count
            offset = (1.0 - 2.0 * origin) / count - 1.0
        matrix[axis, axis], matrix[axis, 2] = scale, offset
    return matrix


def theta_from_pixels(source_of_destination, size, align_corners, origin=0.0):
    """Our θ for a warp given as destination pixel → source pixel (2×3)."""
    pixel_map = np.vstack([np.asarray(source_of_destination, np.float64),
                           [0.0, 0.0, 1.0]])
    normaliser = _normaliser(size, align_corners, origin)
    theta = normaliser @ pixel_map @ np.linalg.inv(normaliser)
    return theta[:2].astype(np.float32)


def rotation_about(center, degrees):
    """Inverse of kornia's counter-clockwise rotation about `center`."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    center = np.asarray(center, np.float64)
    return np.hstack([rotation, (center - rotation @ center)[:, None]])


def warp(images, thetas, align_corners, execution="eager"):
    images = np.asarray(images, np.float32)
    images = images.reshape(images.shape[:3] + (1,))
    size = images.shape[1:3]

    def run(images, thetas):
        grid = keras_stn.affine_grid(thetas, size, align_corners)
        return keras_stn.grid_sample(images, grid, align_corners=align_corners)

    if execution == "xla":
        run = tf.function(run, jit_compile=True)
    return run(tf.constant(images), tf.constant(np.stack(thetas))).numpy()[
        ..., 0]


EXECUTIONS = ("eager", "xla")


@pytest.mark.parametrize("execution", EXECUTIONS)
class TestRotate:
    def test_angle90(self, execution):
        theta = theta_from_pixels(rotation_about((0.5, 1.5), 90.0), (4, 2),
                                  True)
        out = warp([PICTURE], [theta], True, execution)
        np.testing.assert_allclose(
            out, [[[0.0, 0.0], [4.0, 6.0], [3.0, 5.0], [0.0, 0.0]]],
            **TOLERANCE)

    def test_angle90_batch2(self, execution):
        thetas = [theta_from_pixels(rotation_about((0.5, 1.5), angle),
                                    (4, 2), True) for angle in (90.0, -90.0)]
        out = warp([PICTURE, PICTURE], thetas, True, execution)
        np.testing.assert_allclose(
            out, [[[0.0, 0.0], [4.0, 6.0], [3.0, 5.0], [0.0, 0.0]],
                  [[0.0, 0.0], [5.0, 3.0], [6.0, 4.0], [0.0, 0.0]]],
            **TOLERANCE)


@pytest.mark.parametrize("execution", EXECUTIONS)
class TestTranslate:
    def test_dxdy(self, execution):
        theta = theta_from_pixels([[1, 0, -1.0], [0, 1, 0.0]], (4, 2), True)
        out = warp([PICTURE], [theta], True, execution)
        np.testing.assert_allclose(
            out, [[[0.0, 1.0], [0.0, 3.0], [0.0, 5.0], [0.0, 7.0]]],
            **TOLERANCE)

    def test_dxdy_batch(self, execution):
        thetas = [theta_from_pixels([[1, 0, -dx], [0, 1, -dy]], (4, 2), True)
                  for dx, dy in ((1.0, 0.0), (1.0, 1.0))]
        out = warp([PICTURE, PICTURE], thetas, True, execution)
        np.testing.assert_allclose(
            out, [[[0.0, 1.0], [0.0, 3.0], [0.0, 5.0], [0.0, 7.0]],
                  [[0.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 5.0]]],
            **TOLERANCE)


def _scale_about_centre(factor):
    centre = 1.5  # kornia's default centre of a 4×4 image
    return [[1 / factor, 0, centre - centre / factor],
            [0, 1 / factor, centre - centre / factor]]


@pytest.mark.parametrize("execution", EXECUTIONS)
class TestScale:
    def test_scale_factor_2(self, execution):
        square = [[0.0] * 4, [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0],
                  [0.0] * 4]
        theta = theta_from_pixels(_scale_about_centre(2.0), (4, 4), True)
        out = warp([square], [theta], True, execution)
        np.testing.assert_allclose(out.sum(), 12.25, **TOLERANCE)

    def test_scale_factor_05_batch2(self, execution):
        theta = theta_from_pixels(_scale_about_centre(0.5), (4, 4), True)
        out = warp([ONES, ONES], [theta, theta], True, execution)
        expected = [[0.0] * 4, [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0],
                    [0.0] * 4]
        np.testing.assert_allclose(out, [expected, expected], **TOLERANCE)


SHEAR_X = [[0.75, 1.0, 1.0, 1.0], [0.25, 1.0, 1.0, 1.0],
           [0.0, 0.75, 1.0, 1.0], [0.0, 0.25, 1.0, 1.0]]
SHEAR_Y = [[0.75, 0.25, 0.0, 0.0], [1.0, 1.0, 0.75, 0.25],
           [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]


@pytest.mark.parametrize("execution", EXECUTIONS)
class TestShear:
    """kornia shears about the image's top-left corner (not the first pixel
    centre): coordinates in which pixel centres sit at integers + 0.5."""

    def test_shear_batch2(self, execution):
        thetas = [theta_from_pixels([[1, -shear_x, 0], [-shear_y, 1, 0]],
                                    (4, 4), False, origin=0.5)
                  for shear_x, shear_y in ((0.5, 0.0), (0.0, 0.5))]
        out = warp([ONES, ONES], thetas, False, execution)
        np.testing.assert_allclose(out, [SHEAR_X, SHEAR_Y], **TOLERANCE)


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_affine_rotate_translate(execution):
    """TestAffine2d.test_affine_rotate_translate: 180° about the centre, then
    one pixel right."""
    picture = [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [0.0] * 4,
               [0.0] * 4]
    rotation = rotation_about((1.5, 1.5), 180.0)
    # destination = R(source) + (1, 0)  =>  source = R⁻¹(destination - (1, 0))
    rotation[:, 2] -= rotation[:, :2] @ np.array([1.0, 0.0])
    theta = theta_from_pixels(rotation, (4, 4), True)
    out = warp([picture, picture], [theta, theta], True, execution)
    expected = [[0.0] * 4, [0.0] * 4, [0.0, 0.0, 1.0, 0.0],
                [0.0, 1.0, 0.0, 0.0]]
    np.testing.assert_allclose(out, [expected, expected], **TOLERANCE)
