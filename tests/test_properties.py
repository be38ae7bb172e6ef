"""Property tests at the kinks: values and derivatives of `grid_sample`
against the independent NumPy reference (`tests/reference.py`), on points
drawn where bilinear and bicubic sampling are not smooth: the integer
lattice, ±0.5 px, the borders, just outside and far outside.

Sizes are drawn so that every normalised coordinate maps to its pixel
coordinate exactly in float32 (powers of two, or powers of two plus one with
`align_corners=True`): the side of an integer a point lies on is then the
same for the reference and for the implementation, and the comparison at
the kinks is well defined.

Every backend runs them (on PyTorch through `F.grid_sample`, elsewhere the
shared kernels); the XLA and run-time-shape variants are TensorFlow's.
"""

import itertools

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_stn
from tests import reference
from tests.autodiff import backend_vjp
from tests.autodiff import tensorflow_vjp
from tests.conftest import assert_close

BACKEND = keras.backend.backend()
tensorflow_only = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="XLA and run-time shapes: the TensorFlow path's own variants")

# Sizes whose unnormalisation is exact in float32 at quarter pixels.
EXACT_SIZES = {False: (1, 2, 4, 8), True: (2, 3, 5, 9)}
PADDINGS = ("zeros", "border", "reflection")
# (rank, interpolation, padding_mode, align_corners): bicubic is 2-D only.
MODES = [(rank, *mode) for rank, interpolations in (
    (2, ("bilinear", "nearest", "bicubic")), (3, ("bilinear", "nearest")))
    for mode in itertools.product(interpolations, PADDINGS, (False, True))]
POINTS = 12

# JAX and TensorFlow's default path (XLA clusters) compile each new shape
# and mode: fewer examples there; TF's runtime path and PyTorch take all
# twelve (`test_at_kinks_in_tf_runtime`).
SETTINGS = settings(max_examples={"jax": 3, "tensorflow": 2}.get(BACKEND, 12),
                    deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def pixel_coordinates(draw, size):
    """A pixel coordinate of an axis of `size` pixels, at a kink or near."""
    kind = draw(st.sampled_from(
        ["lattice", "half", "border", "outside", "far", "quarter"]))
    if kind == "lattice":
        return float(draw(st.integers(-2, size + 1)))
    if kind == "half":
        return draw(st.integers(-2, size)) + 0.5
    if kind == "border":
        return draw(st.sampled_from([0.0, size - 1.0, -0.5, size - 0.5,
                                     -1.0, float(size)]))
    if kind == "outside":
        return draw(st.sampled_from([-1.25, -1.5, -2.0, size + 0.25,
                                     size + 0.75, size + 1.0]))
    if kind == "far":
        return draw(st.sampled_from([-(size + 10.0), size + 10.0, -1000.25,
                                     1000.25]))
    return draw(st.integers(-8, 4 * size + 4)) / 4.0


def normalised(pixel, size, align_corners):
    if align_corners:
        return 2.0 * pixel / (size - 1) - 1.0
    return (2.0 * pixel + 1.0) / size - 1.0


@st.composite
def cases(draw, rank, align_corners):
    sizes = [draw(st.sampled_from(EXACT_SIZES[align_corners]))
             for _ in range(rank)]  # x first
    points = [[normalised(draw(pixel_coordinates(size)), size, align_corners)
               for size in sizes] for _ in range(POINTS)]
    return sizes, np.asarray(points, np.float64)


def check_against_reference(sizes, points, interpolation, padding_mode,
                            align_corners, execution="default"):
    rank = len(sizes)
    rng = np.random.default_rng(len(points))
    channels = 2
    # Small integers: sums of products stay exact in float32.
    images = rng.integers(-4, 5, size=(1, *sizes[::-1], channels)).astype(
        np.float32)
    grid = points.reshape((1,) + (1,) * (rank - 1) + (len(points), rank))
    grid = grid.astype(np.float32)
    upstream = rng.integers(-3, 4, size=grid.shape[:-1] + (channels,)).astype(
        np.float32)
    expected, jacobian = reference.sample_with_gradient(
        images, grid, interpolation, padding_mode, align_corners)
    expected_gradient = np.einsum("...c,...ck->...k", upstream, jacobian)

    def sample(images, grid):
        return keras_stn.grid_sample(images, grid, interpolation,
                                     padding_mode, align_corners)

    if execution == "xla":
        out, (_, gradient) = tensorflow_vjp(sample, [images, grid], upstream,
                                            jit_compile=True)
    elif execution == "default" and BACKEND == "tensorflow":
        # In a `tf.function`: TF's default path, the warp compiled as XLA
        # clusters inside TF's runtime.
        out, (_, gradient) = tensorflow_vjp(sample, [images, grid], upstream,
                                            graph=True)
    elif execution == "runtime":
        with keras_stn.use_jit_compile(False):
            out, (_, gradient) = tensorflow_vjp(sample, [images, grid],
                                                upstream)
    else:
        out, (_, gradient) = backend_vjp(sample, [images, grid], upstream)
    # Exact arithmetic on both sides, up to float32 summation order.
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=0,
                               atol=1e-3)


@pytest.mark.parametrize("rank,interpolation,padding_mode,align_corners",
                         MODES)
def test_at_kinks(rank, interpolation, padding_mode, align_corners):
    @SETTINGS
    @given(cases(rank, align_corners))
    def run(case):
        check_against_reference(*case, interpolation, padding_mode,
                                align_corners)

    run()


@tensorflow_only
@pytest.mark.parametrize("rank,interpolation,padding_mode,align_corners",
                         MODES)
def test_at_kinks_in_tf_runtime(rank, interpolation, padding_mode,
                                align_corners):
    # TF's runtime formulation (the clusters turned off), all twelve.
    @settings(SETTINGS, max_examples=12)
    @given(cases(rank, align_corners))
    def run(case):
        check_against_reference(*case, interpolation, padding_mode,
                                align_corners, execution="runtime")

    run()


@tensorflow_only
@pytest.mark.parametrize("interpolation,padding_mode,align_corners",
                         [("bilinear", p, a) for p in ("zeros", "border",
                                                       "reflection")
                          for a in (False, True)])
def test_2d_at_kinks_under_xla(interpolation, padding_mode, align_corners):
    @settings(SETTINGS, max_examples=4)
    @given(cases(2, align_corners))
    def run(case):
        check_against_reference(*case, interpolation, padding_mode,
                                align_corners, execution="xla")

    run()


@tensorflow_only
def test_dynamic_size_path_matches_reference_at_kinks():
    """The generic 2-D path (image size known only at run time) against the
    reference at every lattice and half-pixel point of a 4×8 image."""
    import tensorflow as tf

    pixels_x = np.arange(-2, 10.5, 0.5)
    pixels_y = np.arange(-2, 6.5, 0.5)
    points = np.array([[normalised(x, 8, False), normalised(y, 4, False)]
                       for x in pixels_x for y in pixels_y])
    for padding_mode in ("zeros", "border", "reflection"):
        rng = np.random.default_rng(1)
        images = rng.integers(-4, 5, size=(1, 4, 8, 2)).astype(np.float32)
        grid = points.reshape(1, 1, -1, 2).astype(np.float32)
        upstream = rng.integers(-3, 4, size=(1, 1, len(points), 2)).astype(
            np.float32)
        expected, jacobian = reference.sample_with_gradient(
            images, grid, "bilinear", padding_mode, False)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 2]),
                                      tf.TensorSpec([None, 1, None, 2])])
        def run(images, grid):
            with tf.GradientTape() as tape:
                tape.watch(grid)
                out = keras_stn.grid_sample(images, grid, "bilinear",
                                            padding_mode)
                loss = tf.reduce_sum(out * upstream)
            return out, tape.gradient(loss, grid)

        out, gradient = run(images, grid)
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(
            gradient.numpy(),
            np.einsum("...c,...ck->...k", upstream, jacobian), atol=1e-4)


@pytest.mark.skipif(
    BACKEND == "torch", reason="the snap is the shared kernels'; PyTorch's "
    "own grid_sample blends the neighbour in by the few ulps")
@pytest.mark.parametrize("execution", [
    "eager", pytest.param("graph", marks=tensorflow_only),
    pytest.param("xla", marks=tensorflow_only)])
@pytest.mark.parametrize("interpolation,rank", [("bilinear", 2),
                                                ("bicubic", 2),
                                                ("bilinear", 3)])
@pytest.mark.parametrize("offset_ulps", [-30, -8, 8, 30])
def test_snap_keeps_the_derivative_side(execution, interpolation, rank,
                                        offset_ulps):
    """A coordinate a few ulps from an integer reads that pixel exactly (the
    snap) but is differentiated on the side it lies: 1.5e-5 px below 5 on
    [4, 5], as PyTorch does (the snap once moved it to [5, 6]). A single
    ulp is left out: which side unnormalising rounds it to is float32
    arithmetic's call, not the reference's."""
    size = 28
    pixel = np.float32(5.0)
    for _ in range(abs(offset_ulps)):
        pixel = np.nextafter(pixel, np.float32(np.sign(offset_ulps) * 100))
    coord = np.float32(normalised(float(pixel), size, False))
    point = [coord] + [np.float32(normalised(2.0, size, False))] * (rank - 1)
    grid = np.asarray(point, np.float32).reshape((1,) * (rank + 1) + (rank,))
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(1,) + (size,) * rank + (1,)).astype(np.float32)
    _, jacobian = reference.sample_with_gradient(images, grid, interpolation,
                                                 "zeros", False)

    def sample(images, grid):
        return keras_stn.grid_sample(images, grid, interpolation)

    ones = np.ones(grid.shape[:-1] + (1,), np.float32)
    if execution in ("xla", "graph"):
        # "graph": TF's default path in a `tf.function` (XLA clusters).
        out, (_, gradient) = tensorflow_vjp(
            sample, [images, grid], ones, jit_compile=execution == "xla",
            graph=True)
    else:
        out, (_, gradient) = backend_vjp(sample, [images, grid], ones)
    # The value is pixel 5 itself (bilinear) or the cubic through it.
    exactly_at_five = reference.sample_with_gradient(
        images, np.asarray([normalised(5.0, size, False)] + point[1:],
                           np.float64).reshape(grid.shape),
        interpolation, "zeros", False)[0]
    assert_close(out, exactly_at_five, kind="exact")
    assert_close(gradient[..., 0], jacobian[..., 0, 0], kind="gradient")
