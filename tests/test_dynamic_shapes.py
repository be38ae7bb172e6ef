"""Shapes only known at run time: checked then, never silently regrouped or
broadcast (in eager mode the same cases are caught statically)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_stn
from tests.conftest import assert_close

RUNTIME_ERROR = tf.errors.InvalidArgumentError


class TestGridSample:
    def test_batch_mismatch_unknown_batch(self):
        sample = tf.function(
            keras_stn.grid_sample,
            input_signature=[tf.TensorSpec([None, 4, 4, 1]),
                             tf.TensorSpec([None, 3, 3, 2])])
        with pytest.raises(RUNTIME_ERROR, match="same batch size"):
            sample(tf.zeros([2, 4, 4, 1]), tf.zeros([1, 3, 3, 2]))
        assert sample(tf.zeros([2, 4, 4, 1]),
                      tf.zeros([2, 3, 3, 2])).shape == (2, 3, 3, 1)

    @pytest.mark.parametrize("interpolation", ["bilinear", "nearest",
                                               "bicubic"])
    def test_empty_spatial_axis_unknown_size(self, interpolation):
        sample = tf.function(
            lambda images, grid: keras_stn.grid_sample(images, grid,
                                                       interpolation),
            input_signature=[tf.TensorSpec([None, None, None, 1]),
                             tf.TensorSpec([None, 3, 3, 2])])
        with pytest.raises(RUNTIME_ERROR, match="non-empty spatial"):
            sample(tf.zeros([1, 0, 2, 1]), tf.zeros([1, 3, 3, 2]))

    def test_static_batch_mismatch_is_a_value_error(self):
        with pytest.raises(ValueError, match="same batch size"):
            keras_stn.grid_sample(np.zeros((2, 4, 4, 1), np.float32),
                                  np.zeros((1, 3, 3, 2), np.float32))


class TestTransforms:
    @pytest.mark.parametrize("name,shape", [("attention", (2, 6)),
                                            ("affine", (2, 3)),
                                            ("affine", (2, 3, 2)),
                                            ("tps", (2, 8)),
                                            ("projective", (8,))])
    def test_wrong_static_width(self, name, shape):
        transform = keras_stn.transforms.get(name)
        with pytest.raises(ValueError, match="params.shape"):
            transform.grid(np.zeros(shape, np.float32), (4, 4))

    def test_wrong_width_at_run_time(self):
        transform = keras_stn.transforms.get("attention")
        grid = tf.function(lambda params: transform.grid(params, (4, 4)),
                           input_signature=[tf.TensorSpec([None, None])])
        with pytest.raises(RUNTIME_ERROR, match="3 values per example"):
            grid(tf.zeros([2, 6]))
        assert grid(tf.constant([[1.0, 0, 0]] * 2)).shape == (2, 4, 4, 2)


def _model_with_unknown_theta_width(values_per_example):
    """A transformer whose localisation net's output width is unknown until
    run time (it reshapes its features to `[batch, -1]`)."""
    loc_net = keras.Sequential([
        keras.layers.Flatten(),
        keras.layers.Dense(values_per_example, kernel_initializer="zeros"),
        keras.layers.Lambda(
            lambda t: tf.reshape(t, tf.stack([tf.shape(t)[0], -1]))),
    ])
    inputs = keras.Input((8, 8, 1))
    outputs = keras_stn.SpatialTransformer(loc_net, output_size=(6, 6))(inputs)
    return keras.Model(inputs, outputs)


class TestLayer:
    def test_unknown_theta_width_checked_at_run_time(self):
        model = _model_with_unknown_theta_width(3)
        call = tf.function(model, input_signature=[
            tf.TensorSpec([None, 8, 8, 1])])
        with pytest.raises(RUNTIME_ERROR, match="6 values per example"):
            call(tf.zeros([2, 8, 8, 1]))

    def test_unknown_theta_width_in_saved_model(self, tmp_path):
        model = _model_with_unknown_theta_width(3)
        model.export(str(tmp_path / "model"), verbose=False)
        restored = tf.saved_model.load(str(tmp_path / "model"))
        with pytest.raises(RUNTIME_ERROR, match="6 values per example"):
            restored.serve(tf.zeros([2, 8, 8, 1]))

    def test_right_width_still_runs_and_exports_builtins_only(self, tmp_path):
        model = _model_with_unknown_theta_width(6)
        images = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype(
            np.float32)
        call = tf.function(model, input_signature=[
            tf.TensorSpec([None, 8, 8, 1])])
        expected = model(images).numpy()
        assert_close(call(images).numpy(), expected, kind="exact")
        path = keras_stn.export_tflite(model, str(tmp_path / "m.tflite"))
        ops = keras_stn.tflite_ops(path)
        assert not [op for op in ops if op.startswith("CUSTOM")], ops
        np.testing.assert_allclose(keras_stn.run_tflite(path, images),
                                   expected, atol=1e-5)

    def test_zero_channels(self):
        loc_net = keras.Sequential([
            keras.layers.Lambda(lambda t: tf.zeros([tf.shape(t)[0], 6])
                                + [1.0, 0, 0, 0, 1, 0],
                                output_shape=(6,))])
        layer = keras_stn.SpatialTransformer(loc_net, output_size=(3, 3))
        out = layer(tf.zeros([2, 4, 4, 0]))
        assert out.shape == (2, 3, 3, 0)
