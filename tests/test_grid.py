"""Grid generator: meshgrid and affine_grid, on every Keras backend."""

import keras
import numpy as np
import pytest

import keras_stn
from keras_stn.grid import meshgrid
from tests import reference
from tests.conftest import degenerate_grid_warning
from tests.conftest import assert_close

BACKEND = keras.backend.backend()


def np_(value):
    return keras.ops.convert_to_numpy(value)


def dtype_of(value):
    return keras.backend.standardize_dtype(value.dtype)


SIZES = [(1, 1), (1, 5), (4, 1), (3, 4), (5, 5), (6, 7)]


class TestMeshgrid:
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("size", SIZES)
    def test_matches_reference(self, size, align_corners):
        with degenerate_grid_warning(size, align_corners):
            grid = np_(meshgrid(*size, align_corners=align_corners))
        expected = reference.affine_grid(
            [[1, 0, 0], [0, 1, 0]], *size, align_corners
        )[0]
        assert grid.shape == size + (2,)
        assert grid.dtype == np.float32
        assert_close(grid, expected, kind="exact")

    def test_corner_conventions(self):
        # align_corners=True: corner pixel centres at ±1.
        grid = np_(meshgrid(3, 5, align_corners=True))
        np.testing.assert_array_equal(grid[0, :, 0], [-1, -0.5, 0, 0.5, 1])
        np.testing.assert_array_equal(grid[:, 0, 1], [-1, 0, 1])
        # align_corners=False: ±1 are pixel edges, centres half a pixel in
        # (PyTorch's linspace(-1, 1, 4) * 3 / 4 rounds ±0.25 one ulp inward).
        grid = np_(meshgrid(2, 4, align_corners=False))
        assert_close(grid[0, :, 0], [-0.75, -0.25, 0.25, 0.75], kind="exact")
        np.testing.assert_array_equal(grid[:, 0, 1], [-0.5, 0.5])

    @pytest.mark.parametrize("size", [(0, 3), (3, -1), (2.5, 3), (True, 3)])
    def test_bad_size(self, size):
        with pytest.raises((ValueError, TypeError), match="size"):
            meshgrid(*size)


class TestAffineGrid:
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("size", SIZES)
    def test_matches_torch_golden(self, golden, size, align_corners):
        prefix = f"affine_grid/{align_corners}/{size[0]}/{size[1]}"
        theta = golden[prefix + "/theta"]
        with degenerate_grid_warning(size, align_corners):
            grid = np_(keras_stn.affine_grid(theta, size, align_corners))
        assert_close(grid, golden[prefix + "/grid"])

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_matches_numpy_reference(self, rng, align_corners):
        theta = rng.normal(size=(4, 2, 3)).astype(np.float32)
        grid = np_(keras_stn.affine_grid(theta, (5, 6), align_corners))
        expected = reference.affine_grid(theta, 5, 6, align_corners)
        assert_close(grid, expected)

    def test_flat_and_matrix_theta_agree(self, rng):
        theta = rng.normal(size=(3, 2, 3)).astype(np.float32)
        # Bit for bit on one formulation: TF's default path runs a call
        # compiled or not depending on what ran before it, and the two
        # formulations may round the grid's products an ulp apart.
        with keras_stn.use_jit_compile(False):
            a = keras_stn.affine_grid(theta, (4, 4))
            b = keras_stn.affine_grid(theta.reshape(3, 6), (4, 4))
        np.testing.assert_array_equal(np_(a), np_(b))
        a = keras_stn.affine_grid(theta, (4, 4))
        b = keras_stn.affine_grid(theta.reshape(3, 6), (4, 4))
        assert_close(np_(a), np_(b), rtol=0, atol=1e-6)  # 2 ulps below 8

    def test_identity_is_meshgrid(self):
        theta = np.tile([[1.0, 0, 0, 0, 1, 0]], (2, 1)).astype(np.float32)
        grid = keras_stn.affine_grid(theta, (3, 7))
        np.testing.assert_array_equal(np_(grid)[1], np_(meshgrid(3, 7)))

    def test_grid_is_float32_for_float16_theta(self):
        theta = keras.ops.convert_to_tensor([[1.0, 0, 0, 0, 1, 0]], "float16")
        assert dtype_of(keras_stn.affine_grid(theta, (2, 2))) == "float32"

    @pytest.mark.skipif(
        BACKEND == "jax" and not __import__("jax").config.jax_enable_x64,
        reason="JAX keeps float64 only with jax_enable_x64")
    def test_float64_theta_keeps_float64(self):
        theta = keras.ops.convert_to_tensor([[1.0, 0, 0, 0, 1, 0]], "float64")
        assert dtype_of(keras_stn.affine_grid(theta, (2, 2))) == "float64"

    @pytest.mark.skipif(BACKEND != "tensorflow",
                        reason="batch sizes known only at run time exist in "
                        "TensorFlow graphs")
    def test_dynamic_batch(self):
        import tensorflow as tf

        fn = tf.function(
            lambda t: keras_stn.affine_grid(t, (3, 4)),
            input_signature=[tf.TensorSpec([None, 6], tf.float32)],
        )
        for batch in (1, 5):
            theta = np.tile([[1.0, 0, 0, 0, 1, 0]], (batch, 1)).astype("f4")
            assert fn(theta).shape == (batch, 3, 4, 2)

    @pytest.mark.parametrize("shape", [(2, 5), (2, 3, 3), (6,), (2, 2, 2, 3)])
    def test_bad_theta_shape(self, shape):
        with pytest.raises(ValueError, match="theta"):
            keras_stn.affine_grid(np.zeros(shape, np.float32), (3, 3))

    def test_integer_theta(self):
        with pytest.raises(TypeError, match="theta"):
            keras_stn.affine_grid(np.zeros((1, 6), np.int32), (3, 3))

    @pytest.mark.parametrize("size", [(3,), (3, 3, 3, 3), "33", (3, 0)])
    def test_bad_size(self, size):
        with pytest.raises(ValueError, match="size"):
            keras_stn.affine_grid(np.zeros((1, 6), np.float32), size)
