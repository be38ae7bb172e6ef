"""`antialias=True`: exact cases (magnification is plain sampling, a 2×
shrink is the 2×2 box average, a constant stays constant), the footprint
integral of an independent NumPy reference, numerical gradients, every
backend against TensorFlow's path, TFLite, hostile grids and bad input."""

import keras
import numpy as np
import pytest

import keras_stn
from tests.conftest import REPO_ROOT  # noqa: F401 (the benchmarks' root)
from tests.test_benchmarks import _script

BACKEND = keras.backend.backend()
PADDINGS = ("zeros", "border", "reflection")


def _numpy(value):
    return keras.ops.convert_to_numpy(value)


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(size=shape).astype("float32")


def _affine(theta, batch, size):
    theta = np.tile(np.asarray(theta, "float32").reshape(1, 6), (batch, 1))
    return _numpy(keras_stn.affine_grid(theta, size))


def _rotation(angle, scale, shift=(0.0, 0.0)):
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return [c, -s, shift[0], s, c, shift[1]]


class TestExactCases:
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("padding_mode", PADDINGS)
    def test_magnification_is_plain_sampling(self, padding_mode,
                                             align_corners):
        images = _images((2, 9, 13, 3))
        # A rotation that magnifies 1.6× (and reads outside the image).
        grid = _affine(_rotation(0.7, 1.0 / 1.6, (0.3, -0.2)), 2, (15, 21))
        plain = keras_stn.grid_sample(images, grid, padding_mode=padding_mode,
                                      align_corners=align_corners)
        filtered = keras_stn.grid_sample(
            images, grid, padding_mode=padding_mode,
            align_corners=align_corners, antialias=True)
        np.testing.assert_allclose(_numpy(filtered), _numpy(plain),
                                   atol=1e-6, rtol=0)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_identity_is_exact_with_plain_derivatives(self, align_corners):
        """The identity θ puts every sample on a pixel centre (the kinks):
        the input comes back, and the derivatives are the plain sampler's
        (checked against PyTorch's there by the torch suite)."""
        from tests.autodiff import backend_vjp

        images = _images((2, 7, 9, 2))
        grid = _numpy(keras_stn.affine_grid(
            np.tile(np.eye(2, 3, dtype="float32").reshape(1, 6), (2, 1)),
            (7, 9), align_corners))
        cotangent = _images((2, 7, 9, 2), seed=5) - 0.5

        def sample(antialias):
            return lambda i, g: keras_stn.grid_sample(
                i, g, align_corners=align_corners, antialias=antialias)

        values, grads = backend_vjp(sample(True), [images, grid], cotangent)
        plain_values, plain_grads = backend_vjp(sample(False),
                                                [images, grid], cotangent)
        np.testing.assert_array_equal(values, images)
        for grad, plain in zip(grads, plain_grads):
            np.testing.assert_allclose(grad, plain, atol=1e-5, rtol=1e-5)

    def test_a_2x_shrink_is_the_box_average(self):
        images = _images((2, 16, 24, 2))
        grid = _affine([1, 0, 0, 0, 1, 0], 2, (8, 12))
        filtered = _numpy(keras_stn.grid_sample(images, grid, antialias=True))
        box = images.reshape(2, 8, 2, 12, 2, 2).mean(axis=(2, 4))
        np.testing.assert_allclose(filtered, box, atol=1e-6, rtol=0)

    @pytest.mark.parametrize("padding_mode", ["border", "reflection"])
    def test_a_constant_stays_constant(self, padding_mode):
        images = np.full((1, 37, 29, 1), 0.625, "float32")
        for theta, size in ((_rotation(0.3, 5.0), (6, 5)),
                            (_rotation(-1.1, 2.7, (0.2, 0.1)), (11, 9))):
            grid = _affine(theta, 1, size)
            filtered = _numpy(keras_stn.grid_sample(
                images, grid, padding_mode=padding_mode, antialias=True))
            np.testing.assert_allclose(filtered, 0.625, atol=1e-6)


class TestAgainstTheFootprintIntegral:
    """The error against `benchmarks/antialias_quality.py`'s NumPy
    reference (16×16 supersampling of the bilinear image over each output
    pixel), on a zone plate: at least 2.5× below plain sampling's where
    plain sampling aliases."""

    @pytest.mark.parametrize("name, theta, scale", [
        ("shrink 3", [1, 0, 0, 0, 1, 0], 3),
        ("shrink 8", [1, 0, 0, 0, 1, 0], 8),
        ("rotation + shrink 3", _rotation(np.deg2rad(30.0), 1.0), 3),
    ])
    def test_cuts_the_aliasing_error(self, name, theta, scale):
        quality = _script("antialias_quality")
        size = 96
        image = quality.test_images(size)[0]
        out = (size // scale, size // scale)
        warp = quality.affine(theta)
        truth = quality.reference(image, warp, out)
        plain = quality.rms(quality.keras_stn_samples(
            [image], warp, out, False)[0], truth)
        filtered = quality.rms(quality.keras_stn_samples(
            [image], warp, out, True)[0], truth)
        assert plain / filtered >= 2.5, (name, plain, filtered)


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="numerical gradients in float64 TF graphs")
def test_gradients_match_finite_differences():
    import tensorflow as tf

    images = tf.constant(_images((1, 12, 14, 2)), tf.float64)
    # A shrinking, rotating grid plus a small smooth perturbation: off the
    # pixel grid and off integer levels.
    grid = _affine(_rotation(0.4, 2.3, (0.05, -0.03)), 1, (5, 6))
    grid = tf.constant(grid + 0.01 * np.sin(np.arange(grid.size)).reshape(
        grid.shape), tf.float64)

    def sample(images, grid):
        return keras_stn.grid_sample(images, grid, antialias=True)

    for argument in (0, 1):
        theoretical, numerical = tf.test.compute_gradient(
            lambda x: sample(x, grid) if argument == 0 else sample(images, x),
            [images if argument == 0 else grid], delta=1e-6)
        np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-5,
                                   rtol=1e-4)
        assert np.abs(theoretical[0]).max() > 0.01


@pytest.mark.skipif(BACKEND == "tensorflow",
                    reason="compares the JAX or PyTorch path with TF's")
@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_this_backend_matches_tensorflow(padding_mode):
    import tensorflow as tf

    images = _images((2, 17, 23, 3))
    grid = _affine(_rotation(0.4, 2.5, (0.1, -0.05)), 2, (9, 11))
    got = _numpy(keras_stn.grid_sample(images, grid, padding_mode=padding_mode,
                                       antialias=True))
    want = keras_stn.grid_sample(tf.constant(images), tf.constant(grid),
                                 padding_mode=padding_mode,
                                 antialias=True).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_layer_and_fields_take_it():
    images = _images((2, 24, 32, 1))
    theta = _rotation(0.2, 3.0)
    loc = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(
        6, kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(theta))])
    layer = keras_stn.SpatialTransformer(loc, output_size=(8, 10),
                                         antialias=True)
    expected = keras_stn.grid_sample(images, _affine(theta, 2, (8, 10)),
                                     antialias=True)
    np.testing.assert_allclose(_numpy(layer(images)), _numpy(expected),
                               atol=1e-5)
    assert layer.get_config()["antialias"] is True
    # The dense field of the same warp (at the images' size) filters alike.
    field = keras_stn.fields.affine_to_displacement(
        np.tile(np.asarray(theta, "float32")[None], (2, 1)), (24, 32))
    expected = keras_stn.grid_sample(images, _affine(theta, 2, (24, 32)),
                                     antialias=True)
    np.testing.assert_allclose(
        _numpy(keras_stn.fields.warp(images, field, antialias=True)),
        _numpy(expected), atol=1e-4)


def test_hostile_grids_give_finite_values_and_gradients():
    from tests.autodiff import backend_vjp

    images = _images((1, 10, 12, 2))
    grid = _affine(_rotation(0.3, 3.0), 1, (4, 5))
    grid[0, 0, 0] = [np.nan, 0.2]
    grid[0, 1, 2] = [np.inf, -np.inf]
    grid[0, 2, 3] = [1e30, -1e30]
    for padding_mode in PADDINGS:
        def sample(images, grid, padding_mode=padding_mode):
            return keras_stn.grid_sample(images, grid,
                                         padding_mode=padding_mode,
                                         antialias=True)

        values, grads = backend_vjp(sample, [images, grid],
                                    np.ones((1, 4, 5, 2), "float32"))
        assert np.all(np.isfinite(values))
        assert all(np.all(np.isfinite(grad)) for grad in grads)


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="TFLite export is a TensorFlow tool")
def test_tflite_parity_builtins_only(tmp_path):
    loc = keras.Sequential([
        keras.layers.Conv2D(3, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras_stn.localization_head("affine", kernel_initializer=(
            keras.initializers.RandomNormal(stddev=0.3, seed=1)))])
    model = keras.Sequential([
        keras.Input((32, 40, 2)),
        keras_stn.SpatialTransformer(loc, output_size=(9, 11),
                                     padding_mode="reflection",
                                     antialias=True)])
    path = keras_stn.export_tflite(model, str(tmp_path / "aa.tflite"))
    ops = keras_stn.tflite_ops(path)
    assert "AVERAGE_POOL_2D" in ops
    assert not [op for op in ops if "FLEX" in op or "CUSTOM" in op]
    for batch in (1, 3):
        images = _images((batch, 32, 40, 2), seed=batch)
        np.testing.assert_allclose(keras_stn.run_tflite(path, images),
                                   _numpy(model(images)), atol=1e-4)


class TestBadInput:
    def test_not_a_bool(self):
        with pytest.raises(TypeError, match="`antialias`.*bool.*'yes'"):
            keras_stn.grid_sample(_images((1, 4, 4, 1)),
                                  np.zeros((1, 2, 2, 2), "float32"),
                                  antialias="yes")

    def test_bilinear_only(self):
        with pytest.raises(ValueError, match="bilinear.*'bicubic'"):
            keras_stn.grid_sample(_images((1, 4, 4, 1)),
                                  np.zeros((1, 2, 2, 2), "float32"),
                                  interpolation="bicubic", antialias=True)
        with pytest.raises(ValueError, match="bilinear.*'nearest'"):
            keras_stn.SpatialTransformer(keras.layers.Dense(6),
                                         interpolation="nearest",
                                         antialias=True)

    def test_images_only(self):
        with pytest.raises(ValueError, match="2-D images"):
            keras_stn.grid_sample(_images((1, 4, 4, 4, 1)),
                                  np.zeros((1, 2, 2, 2, 3), "float32"),
                                  antialias=True)
        layer = keras_stn.SpatialTransformer(
            keras.Sequential([keras.layers.Flatten(),
                              keras_stn.localization_head("affine_3d")]),
            antialias=True)
        with pytest.raises(ValueError, match="antialias=True.*rank 4"):
            layer.build((2, 4, 5, 6, 1))
