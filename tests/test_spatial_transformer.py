"""The SpatialTransformer layer: behaviour in models, training, dtype
policies, distribution, serialisation, SavedModel and bad input."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_stn
from tests import reference
from tests.conftest import REPO_ROOT
from tests.conftest import TOLERANCES
from tests.layer_test import check_output_dtypes
from tests.layer_test import run_layer_test
from tests.conftest import assert_close

TRANSFORMS = {"affine": 6, "attention": 3, "translation": 2, "projective": 8}


def conv_loc_net(transform="affine", **head_kwargs):
    return keras.Sequential([
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(8, activation="tanh"),
        keras_stn.localization_head(transform, **head_kwargs),
    ])


def constant_loc_net(values):
    """A localisation net whose output is `values` for every input."""
    values = np.asarray(values, np.float32)
    return keras.Sequential([
        keras.layers.Flatten(),
        keras.layers.Dense(
            values.size,
            kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(0.0),
        ),
        keras.layers.Lambda(lambda t: t + values),
    ])


@keras.saving.register_keras_serializable(package="keras_stn_tests")
class SubclassedLocNet(keras.Model):
    def __init__(self, transform="affine", **kwargs):
        super().__init__(**kwargs)
        self.transform = transform
        self.pool = keras.layers.AveragePooling2D(2)
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.head = keras_stn.localization_head(
            transform, kernel_initializer=keras.initializers.RandomNormal(
                stddev=0.01))

    def call(self, inputs, training=None):
        return self.head(self.hidden(self.flatten(self.pool(inputs))))

    def get_config(self):
        return {**super().get_config(), "transform": self.transform}


class TrainingRecorder(keras.layers.Layer):
    """Records the `training` flag it is called with (at trace time)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, inputs, training=None):
        self.seen.append(training)
        return inputs


class TestLayerHelper:
    @pytest.mark.parametrize("transform", sorted(TRANSFORMS))
    def test_each_transform(self, tmp_path, transform):
        run_layer_test(
            lambda: keras_stn.SpatialTransformer(
                conv_loc_net(transform, kernel_initializer="glorot_uniform"),
                output_size=(5, 6), transform=transform),
            input_shape=(3, 9, 10, 2), expected_output_shape=(3, 5, 6, 2),
            tmp_path=tmp_path,
        )

    @pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "bicubic"])
    @pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
    def test_modes_and_channels_first(self, tmp_path, interpolation, padding_mode):
        def make():
            loc = keras.Sequential([
                keras.layers.Flatten(),
                keras_stn.localization_head(
                    kernel_initializer=keras.initializers.RandomNormal(
                        stddev=0.05)),
            ])
            return keras_stn.SpatialTransformer(
                loc, interpolation=interpolation, padding_mode=padding_mode,
                align_corners=True, data_format="channels_first")

        if interpolation == "nearest":
            # Nearest sampling gives θ no gradient; the helper needs one to
            # reach the localisation net, so check nearest layers without
            # the fit step below.
            layer = make()
            out = layer(np.ones((2, 3, 6, 7), "float32"))
            assert out.shape == (2, 3, 6, 7)
            return
        run_layer_test(make, input_shape=(2, 3, 6, 7),
                       expected_output_shape=(2, 3, 6, 7), tmp_path=tmp_path)

    def test_subclassed_loc_net(self, tmp_path):
        run_layer_test(
            lambda: keras_stn.SpatialTransformer(SubclassedLocNet(),
                                                 output_size=(4, 4)),
            input_shape=(2, 8, 8, 1), expected_output_shape=(2, 4, 4, 1),
            tmp_path=tmp_path,
        )

    def test_functional_loc_net(self, tmp_path):
        def make():
            inputs = keras.Input((8, 8, 3))
            hidden = keras.layers.Dense(4)(keras.layers.Flatten()(inputs))
            theta = keras_stn.localization_head(
                "attention", kernel_initializer="glorot_uniform")(hidden)
            return keras_stn.SpatialTransformer(keras.Model(inputs, theta),
                                                transform="attention")

        run_layer_test(make, input_shape=(2, 8, 8, 3),
                       expected_output_shape=(2, 8, 8, 3), tmp_path=tmp_path)


class TestInModels:
    def test_first_layer_of_sequential(self):
        model = keras.Sequential([
            keras.Input((12, 12, 1)),
            keras_stn.SpatialTransformer(conv_loc_net(), output_size=(6, 6)),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ])
        assert model.output_shape == (None, 3)
        assert model(np.zeros((5, 12, 12, 1), "float32")).shape == (5, 3)

    def test_inside_functional_model(self):
        inputs = keras.Input((10, 10, 2))
        features = keras.layers.Conv2D(3, 3, padding="same")(inputs)
        warped = keras_stn.SpatialTransformer(conv_loc_net())(features)
        outputs = keras.layers.Concatenate()([warped, features])
        model = keras.Model(inputs, outputs)
        assert model.output_shape == (None, 10, 10, 6)
        assert model(np.ones((2, 10, 10, 2), "float32")).shape == (2, 10, 10, 6)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_fresh_layer_is_identity(self, rng, align_corners):
        images = rng.uniform(size=(3, 9, 7, 2)).astype(np.float32)
        layer = keras_stn.SpatialTransformer(conv_loc_net(),
                                             align_corners=align_corners)
        assert_close(layer(images).numpy(), images, kind="exact")

    def test_theta_as_matrix(self, rng):
        images = rng.uniform(size=(2, 6, 6, 1)).astype(np.float32)
        loc = keras.Sequential([
            keras.layers.Flatten(), keras_stn.localization_head(),
            keras.layers.Reshape((2, 3)),
        ])
        out = keras_stn.SpatialTransformer(loc)(images)
        assert_close(out.numpy(), images, kind="exact")

    def test_compute_output_shape(self):
        layer = keras_stn.SpatialTransformer(conv_loc_net(), output_size=(3, 5))
        assert layer.compute_output_shape((None, 8, 9, 4)) == (None, 3, 5, 4)
        layer = keras_stn.SpatialTransformer(conv_loc_net(),
                                             data_format="channels_first")
        assert layer.compute_output_shape((2, 4, 8, 9)) == (2, 4, 8, 9)

    def test_channels_first_equals_channels_last(self, rng):
        images = rng.uniform(size=(2, 7, 8, 3)).astype(np.float32)
        theta = [0.9, 0.2, 0.1, -0.3, 1.1, -0.05]
        last = keras_stn.SpatialTransformer(constant_loc_net(theta),
                                            output_size=(5, 4))
        first = keras_stn.SpatialTransformer(
            constant_loc_net(theta), output_size=(5, 4),
            data_format="channels_first")
        out_last = last(images).numpy()
        out_first = first(np.transpose(images, (0, 3, 1, 2))).numpy()
        assert_close(np.transpose(out_first, (0, 2, 3, 1)), out_last, kind="exact")

    def test_training_flag_reaches_loc_net(self):
        recorder = TrainingRecorder()
        loc = keras.Sequential([recorder, keras.layers.Flatten(),
                                keras_stn.localization_head()])
        layer = keras_stn.SpatialTransformer(loc)
        images = np.ones((1, 4, 4, 1), "float32")
        layer(images, training=True)
        layer(images, training=False)
        assert recorder.seen[-2:] == [True, False]

    def test_gradients_reach_loc_net_and_input(self, rng):
        layer = keras_stn.SpatialTransformer(
            conv_loc_net(kernel_initializer="glorot_uniform"),
            output_size=(6, 6))
        images = tf.constant(rng.uniform(size=(2, 9, 9, 1)).astype(np.float32))
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = tf.reduce_sum(layer(images) ** 2)
        grads = tape.gradient(loss, [images] + layer.trainable_weights)
        assert len(layer.trainable_weights) == 6  # conv, dense, head
        for grad in grads:
            assert grad is not None
            assert np.abs(tf.convert_to_tensor(grad).numpy()).max() > 0

    def test_fit_lowers_loss(self, rng):
        # Learn to undo a fixed shift of smooth blobs (on white noise the
        # loss would have a local minimum at every integer shift).
        rows, cols = np.mgrid[0:10, 0:10]
        centres = rng.uniform(2, 8, (64, 2, 1, 1))
        images = np.exp(-((rows - centres[:, 0]) ** 2
                          + (cols - centres[:, 1]) ** 2) / (2 * 2.0 ** 2))
        images = images[..., None].astype(np.float32)
        targets = np.zeros_like(images)
        targets[:, :, :-2] = images[:, :, 2:]
        model = keras.Sequential([
            keras.Input((10, 10, 1)),
            keras_stn.SpatialTransformer(
                keras.Sequential([keras.layers.GlobalAveragePooling2D(),
                                  keras_stn.localization_head("translation")]),
                transform="translation"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
        history = model.fit(images, targets, epochs=25, batch_size=16,
                            verbose=0)
        losses = history.history["loss"]
        assert losses[-1] < 0.5 * losses[0]
        # It found the shift: tx ≈ 2 pixels = 0.4 normalised units.
        theta = model.layers[0].localization_net(images[:4]).numpy()
        np.testing.assert_allclose(theta[:, 0], 0.4, atol=0.05)

    def test_xla_and_tf_function_match_eager(self, rng):
        images = rng.uniform(size=(2, 8, 8, 2)).astype(np.float32)
        layer = keras_stn.SpatialTransformer(
            conv_loc_net("projective", kernel_initializer="glorot_uniform"),
            transform="projective", output_size=(5, 5))
        eager = layer(images).numpy()
        for jit in (False, True):
            out = tf.function(layer, jit_compile=jit)(images).numpy()
            assert_close(out, eager, kind="exact")


class TestTransforms:
    def _sample(self, transform, params, images, size, align_corners=False):
        layer = keras_stn.SpatialTransformer(
            constant_loc_net(params), output_size=size, transform=transform,
            align_corners=align_corners)
        return layer(images).numpy()

    @pytest.mark.parametrize("transform,params,theta", [
        ("attention", [0.5, 0.2, -0.3], [0.5, 0, 0.2, 0, 0.5, -0.3]),
        ("translation", [0.25, -0.5], [1, 0, 0.25, 0, 1, -0.5]),
        ("projective", [0.9, 0.1, 0.2, -0.1, 1.2, 0.0, 0.0, 0.0],
         [0.9, 0.1, 0.2, -0.1, 1.2, 0.0]),
    ])
    def test_matches_equivalent_affine(self, rng, transform, params, theta):
        images = rng.uniform(size=(2, 8, 9, 2)).astype(np.float32)
        out = self._sample(transform, params, images, (6, 7))
        expected = reference.grid_sample(
            images, reference.affine_grid(np.tile(theta, (2, 1)), 6, 7, False),
            "bilinear", "zeros", False)
        assert_close(out, expected)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_projective_matches_reference(self, rng, align_corners):
        images = rng.uniform(size=(1, 8, 9, 2)).astype(np.float32)
        params = [1.0, 0.1, 0.05, -0.1, 0.9, 0.1, 0.2, -0.15]
        out = self._sample("projective", params, images, (6, 7), align_corners)
        grid = reference.projective_grid(params, 6, 7, align_corners)
        expected = reference.grid_sample(images, grid, "bilinear", "zeros",
                                         align_corners)
        assert_close(out, expected)

    def test_identity_parameters(self):
        for name, count in TRANSFORMS.items():
            transform = keras_stn.transforms.get(name)
            assert transform.num_params == count
            assert transform.identity.shape == (count,)
            grid = transform.grid(transform.identity[None], (4, 5)).numpy()
            assert_close(grid[0], keras_stn.grid.meshgrid(4, 5).numpy(), kind="exact")

    @pytest.mark.parametrize("control_points", [2, 3, 4])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_thin_plate_spline_matches_reference(self, rng, control_points,
                                                 align_corners):
        tps = keras_stn.transforms.ThinPlateSpline(control_points)
        assert tps.num_params == 2 * control_points**2
        control = tps.identity.reshape(-1, 2)
        positions = control + rng.normal(0, 0.1, control.shape)
        grid = tps.grid(positions.reshape(1, -1).astype(np.float32), (5, 7),
                        align_corners).numpy()[0]
        expected = reference.thin_plate_spline_grid(control, positions, 5, 7,
                                                    align_corners)
        np.testing.assert_allclose(grid, expected, atol=1e-5)
        # Identity parameters give the identity grid.
        identity = tps.grid(tps.identity[None], (5, 7), align_corners).numpy()
        np.testing.assert_allclose(
            identity[0], keras_stn.grid.meshgrid(5, 7, align_corners).numpy(),
            atol=1e-5)

    def test_thin_plate_spline_bad_control_points(self):
        for bad in (1, 2.5, True, "4"):
            with pytest.raises(ValueError, match="control_points"):
                keras_stn.transforms.ThinPlateSpline(bad)

    def test_projective_degenerate_is_finite(self):
        # w = 0 on the whole line x = 0 and negative beyond it.
        params = np.array([[1, 0, 0, 0, 1, 0, -1, 0]], np.float32)
        grid = keras_stn.transforms.get("projective").grid(params, (5, 5))
        assert np.isfinite(grid.numpy()).all()


class TestZoomedStart:
    """`Transform.zoom` and `localization_head(scale=)`: a transformer that
    starts magnified about the centre instead of at the identity."""

    @pytest.mark.parametrize("transform,tolerance", [
        ("affine", 1e-6), ("attention", 1e-6), ("projective", 1e-6),
        # The spline's grid comes from a solved interpolation matrix.
        ("tps", 1e-5)])
    def test_half_zoom_into_half_the_size_is_the_central_crop(
            self, rng, transform, tolerance):
        # Output centres of a 4-pixel axis, 0.5 × (-0.75, -0.25, 0.25, 0.75),
        # fall on the centres of input pixels 2..5 of an 8-pixel axis
        # (align_corners=False): the crop, not a blend.
        images = rng.uniform(size=(2, 8, 8, 3)).astype(np.float32)
        layer = keras_stn.SpatialTransformer(
            conv_loc_net(transform, scale=0.5), output_size=(4, 4),
            transform=transform)
        np.testing.assert_allclose(layer(images).numpy(),
                                   images[:, 2:6, 2:6], atol=tolerance)

    def test_zoom_parameters(self):
        get = keras_stn.transforms.get
        assert get("affine").zoom(0.5).tolist() == [0.5, 0, 0, 0, 0.5, 0]
        assert get("attention").zoom(2).tolist() == [2, 0, 0]
        assert get("projective").zoom(0.25).tolist() == [
            0.25, 0, 0, 0, 0.25, 0, 0, 0]
        assert get("affine_3d").zoom(0.5).reshape(3, 4).tolist() == (
            0.5 * np.eye(3, 4)).tolist()
        tps = get("tps")
        np.testing.assert_array_equal(tps.zoom(0.5), 0.5 * tps.identity)
        for name in ("affine", "attention", "translation", "projective"):
            np.testing.assert_array_equal(get(name).zoom(1), get(name).identity)

    @pytest.mark.parametrize("name", ["translation", "displacement"])
    def test_transforms_without_a_scale_refuse_to_zoom(self, name):
        transform = keras_stn.transforms.get(name)
        np.testing.assert_array_equal(transform.zoom(1.0), transform.identity)
        with pytest.raises(ValueError,
                           match=f"transform='{name}' has no scale.*scale=0.5"):
            transform.zoom(0.5)

    @pytest.mark.parametrize("scale", [0, -0.5, float("nan"), float("inf"),
                                       True, "0.5", None])
    def test_bad_scale_is_refused_by_name(self, scale):
        with pytest.raises(ValueError, match=r"`scale`.*Received: scale="):
            keras_stn.localization_head("affine", scale=scale)

    def test_bounded_head_starts_zoomed(self, rng):
        images = rng.uniform(size=(2, 8, 8, 1)).astype(np.float32)
        for activation in ("tanh", "sigmoid"):
            net = conv_loc_net("attention", scale=0.5, activation=activation)
            np.testing.assert_allclose(net(images).numpy(),
                                       [[0.5, 0, 0]] * 2, atol=1e-6)

    def test_scale_is_serialised_and_older_configs_mean_the_identity(
            self, rng, tmp_path):
        init = keras_stn.IdentityInitializer("affine", scale=0.5)
        again = keras_stn.IdentityInitializer.from_config(init.get_config())
        assert again((6,)).numpy().tolist() == [0.5, 0, 0, 0, 0.5, 0]
        older = keras_stn.IdentityInitializer.from_config(
            {"transform": "affine", "control_points": None,
             "activation": None})
        assert older((6,)).numpy().tolist() == [1, 0, 0, 0, 1, 0]
        # The model's config rebuilds a fresh net that starts zoomed.
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            keras_stn.SpatialTransformer(conv_loc_net(scale=0.5),
                                         output_size=(4, 4))])
        path = str(tmp_path / "zoomed.keras")
        model.save(path)
        images = rng.uniform(size=(1, 8, 8, 1)).astype(np.float32)
        assert_close(keras.saving.load_model(path)(images).numpy(),
                     model(images).numpy(), kind="exact")
        rebuilt = keras.Sequential.from_config(model.get_config())
        np.testing.assert_allclose(rebuilt(images).numpy(),
                                   images[:, 2:6, 2:6], atol=1e-6)


class TestDtypePolicy:
    def test_mixed_float16(self, rng):
        images = rng.uniform(size=(2, 64, 200, 1)).astype(np.float32)
        theta = [0.95, 0.05, 0.013, -0.04, 0.9, 0.021]
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_float16")
        try:
            layer = keras_stn.SpatialTransformer(constant_loc_net(theta))
            out = layer(images)
        finally:
            keras.config.set_dtype_policy(previous)
        assert out.dtype == tf.float16
        assert layer.compute_dtype == "float16"
        # Pixel coordinates near 200 in float16 would be off by up to 1/16
        # pixel; a float32 grid keeps the result within float16 rounding of
        # the values themselves.
        # θ itself comes out of the float16 localisation net rounded.
        theta16 = np.asarray(theta, np.float16)
        grid = reference.affine_grid([theta16, theta16], 64, 200, False)
        expected = reference.grid_sample(images.astype(np.float16), grid,
                                         "bilinear", "zeros", False)
        np.testing.assert_allclose(out.numpy().astype(np.float64), expected,
                                   **TOLERANCES["float16"])


    @pytest.mark.parametrize("transform", ["affine", "attention", "tps"])
    def test_return_theta_dtypes_symbolic_as_eager(self, transform):
        """Under mixed_float16 the output is float16 and θ float32, both
        symbolically and eagerly (compute_output_spec)."""
        def make_layer():
            loc_net = keras.Sequential([
                keras.layers.Flatten(), keras.layers.Dense(4),
                keras_stn.localization_head(transform)])
            return keras_stn.SpatialTransformer(
                loc_net, output_size=(6, 6), transform=transform,
                return_theta=True)

        dtypes = check_output_dtypes(make_layer, (2, 8, 8, 1))
        assert dtypes == ["float16", "float32"]
        assert check_output_dtypes(make_layer, (2, 8, 8, 1),
                                   "float32") == ["float32", "float32"]

    def test_float64_end_to_end(self, rng):
        """A float64 policy computes θ, grid and samples in float64: an
        identity warp is exact and a shift agrees with the reference to
        float64 precision."""
        images = rng.uniform(size=(2, 9, 11, 2))
        theta = [1.0, 0.0, 0.1234567890123, 0.0, 1.0, -0.05]
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float64")
        try:
            layer = keras_stn.SpatialTransformer(
                constant_loc_net(theta), return_theta=True)
            out, out_theta = layer(images)
            identity = keras_stn.SpatialTransformer(
                constant_loc_net([1.0, 0, 0, 0, 1, 0]))(images)
        finally:
            keras.config.set_dtype_policy(previous)
        assert out.dtype == tf.float64 and out_theta.dtype == tf.float64
        np.testing.assert_array_equal(identity.numpy(), images)
        grid = reference.affine_grid([out_theta.numpy()[0]] * 2, 9, 11, False)
        expected = reference.grid_sample(images, grid, "bilinear", "zeros",
                                         False)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12,
                                   atol=1e-12)


class TestDistribution:
    def test_mirrored_strategy_two_logical_cpus(self):
        # Logical devices must be set before TensorFlow initialises, so this
        # runs in a fresh interpreter.
        script = textwrap.dedent("""
            import numpy as np, tensorflow as tf, keras, keras_stn
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
            strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
            assert strategy.num_replicas_in_sync == 2
            with strategy.scope():
                loc = keras.Sequential([
                    keras.layers.Flatten(),
                    keras_stn.localization_head(
                        kernel_initializer=keras.initializers.RandomNormal(
                            stddev=0.01, seed=1))])
                model = keras.Sequential([
                    keras.Input((8, 8, 1)),
                    keras_stn.SpatialTransformer(loc, output_size=(6, 6)),
                    keras.layers.Flatten(), keras.layers.Dense(2)])
                model.compile("sgd", "mse")
            before = [w.numpy().copy() for w in loc.weights]
            x = np.random.default_rng(0).uniform(size=(8, 8, 8, 1))
            y = np.ones((8, 2))
            history = model.fit(x.astype("float32"), y.astype("float32"),
                                batch_size=8, epochs=1, verbose=0)
            assert np.isfinite(history.history["loss"][0])
            changed = [np.abs(b - w.numpy()).max() > 0
                       for b, w in zip(before, loc.weights)]
            assert all(changed), changed
            print("OK", history.history["loss"][0])
        """)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO_ROOT, env=env,
            capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "OK" in result.stdout


class TestSavedModel:
    @pytest.mark.parametrize("transform", sorted(TRANSFORMS))
    def test_export_serves_two_batch_sizes(self, rng, tmp_path, transform):
        model = keras.Sequential([
            keras.Input((9, 9, 2)),
            keras_stn.SpatialTransformer(
                conv_loc_net(transform, kernel_initializer="glorot_uniform"),
                output_size=(6, 7), transform=transform),
        ])
        path = str(tmp_path / "saved_model")
        model.export(path, verbose=False)
        served = tf.saved_model.load(path)
        for batch in (1, 5):
            images = rng.uniform(size=(batch, 9, 9, 2)).astype(np.float32)
            out = served.serve(images).numpy()
            assert out.shape == (batch, 6, 7, 2)
            assert_close(out, model(images).numpy(), kind="exact")


HOSTILE_VALUES = [np.nan, np.inf, -np.inf, 1e30, -1e30]


class TestHostileTheta:
    @pytest.mark.parametrize("transform", sorted(TRANSFORMS))
    def test_finite_output(self, rng, transform):
        # θ comes from the input: every parameter is pixel (0, 0) of channel
        # 1, one hostile value per example, then a well-behaved one; channel
        # 0 is the image whose samples must stay finite and bounded.
        # (Channel 1 is sampled too and may carry its NaN; not checked.)
        values = HOSTILE_VALUES + [0.5]
        images = np.zeros((len(values), 6, 7, 2), np.float32)
        images[..., 0] = rng.uniform(size=(len(values), 6, 7))
        images[..., 1] = np.array(values, np.float32)[:, None, None]
        num_params = TRANSFORMS[transform]
        loc_net = keras.layers.Lambda(lambda x: keras.ops.repeat(
            x[:, 0, 0, 1:2], num_params, axis=-1))
        for interpolation in ("bilinear", "nearest"):
            for padding_mode in ("zeros", "border", "reflection"):
                layer = keras_stn.SpatialTransformer(
                    loc_net, transform=transform,
                    interpolation=interpolation, padding_mode=padding_mode)
                alone = layer(images[-1:]).numpy()[..., 0]
                for fn in (layer, tf.function(layer),
                           tf.function(layer, jit_compile=True)):
                    out = fn(images).numpy()[..., 0]
                    where = (interpolation, padding_mode, fn)
                    assert np.isfinite(out).all(), where
                    assert out.min() >= 0, where
                    assert out.max() <= images[..., 0].max() + 1e-6, where
                    # The hostile examples leave the well-behaved one as
                    # it is alone.
                    assert_close(out[-1:], alone, kind="exact", err_msg=str(where))


class TestBadInput:
    def test_loc_net_not_a_layer(self):
        with pytest.raises(TypeError, match=r"localization_net.*function"):
            keras_stn.SpatialTransformer(lambda x: x)

    @pytest.mark.parametrize("argument,value", [
        ("transform", "similarity"), ("interpolation", "bicubicc"),
        ("padding_mode", "wrap"), ("data_format", "NHWC"),
    ])
    def test_unknown_names(self, argument, value):
        with pytest.raises(ValueError,
                           match=rf"`{argument}`.*Expected one of.*{value}"):
            keras_stn.SpatialTransformer(conv_loc_net(), **{argument: value})

    @pytest.mark.parametrize("output_size", [
        (28,), (0, 5), (5, -1), [3, 3, 3, 3], "28x28", 28])
    def test_bad_output_size_value(self, output_size):
        with pytest.raises(ValueError, match=r"output_size.*Received"):
            keras_stn.SpatialTransformer(conv_loc_net(),
                                         output_size=output_size)

    @pytest.mark.parametrize("output_size", [(2.5, 3), (True, 3), ("a", 3)])
    def test_bad_output_size_type(self, output_size):
        with pytest.raises(TypeError, match=r"output_size.*Received"):
            keras_stn.SpatialTransformer(conv_loc_net(),
                                         output_size=output_size)

    def test_align_corners_not_bool(self):
        with pytest.raises(TypeError, match="align_corners"):
            keras_stn.SpatialTransformer(conv_loc_net(), align_corners=1)

    def test_input_not_rank_4(self):
        layer = keras_stn.SpatialTransformer(conv_loc_net())
        with pytest.raises(ValueError, match=r"rank-4.*\(None, 8, 8\)"):
            layer(keras.Input((8, 8)))

    @pytest.mark.parametrize("transform,wrong", [
        ("affine", 4), ("attention", 6), ("projective", 6)])
    def test_loc_net_output_size_mismatch(self, transform, wrong):
        loc = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(wrong)])
        layer = keras_stn.SpatialTransformer(loc, transform=transform)
        expected = TRANSFORMS[transform]
        with pytest.raises(ValueError,
                           match=rf"{expected} values.*Received.*{wrong}\)"):
            layer.build((None, 8, 8, 1))

    def test_non_float_images(self):
        layer = keras_stn.SpatialTransformer(conv_loc_net())
        with pytest.raises(TypeError, match="floating.*int32"):
            layer(tf.zeros((1, 8, 8, 1), tf.int32))

    def test_unknown_spatial_size_needs_output_size(self):
        layer = keras_stn.SpatialTransformer(
            keras.Sequential([keras.layers.GlobalAveragePooling2D(),
                              keras_stn.localization_head()]))
        with pytest.raises(ValueError, match="output_size"):
            layer.build((None, None, None, 3))
        sized = keras_stn.SpatialTransformer(
            keras.Sequential([keras.layers.GlobalAveragePooling2D(),
                              keras_stn.localization_head()]),
            output_size=(4, 4))
        out = sized(np.ones((1, 9, 11, 3), "float32"))
        assert out.shape == (1, 4, 4, 3)


class TestThinPlateSplineLayer:
    def test_layer_helper(self, tmp_path):
        run_layer_test(
            lambda: keras_stn.SpatialTransformer(
                conv_loc_net("tps", control_points=3,
                             kernel_initializer="glorot_uniform"),
                transform="tps", control_points=3, output_size=(6, 6)),
            input_shape=(2, 9, 9, 1), expected_output_shape=(2, 6, 6, 1),
            tmp_path=tmp_path)

    @pytest.mark.parametrize("control_points", [None, 2, 5])
    def test_fresh_layer_is_identity(self, rng, control_points):
        images = rng.uniform(size=(2, 10, 11, 2)).astype(np.float32)
        layer = keras_stn.SpatialTransformer(
            conv_loc_net("tps", control_points=control_points),
            transform="tps", control_points=control_points)
        np.testing.assert_allclose(layer(images).numpy(), images, atol=1e-5)

    def test_wrong_head_size_is_caught_at_build(self):
        layer = keras_stn.SpatialTransformer(
            conv_loc_net("tps", control_points=3), transform="tps")
        with pytest.raises(ValueError, match=r"32 values.*tps"):
            layer.build((None, 9, 9, 1))

    def test_control_points_only_for_tps(self):
        with pytest.raises(ValueError, match="control_points"):
            keras_stn.SpatialTransformer(conv_loc_net(), control_points=3)
        with pytest.raises(ValueError, match="control_points"):
            keras_stn.SpatialTransformer(conv_loc_net("tps"), transform="tps",
                                         control_points=1)


class TestTrainingAids:
    def test_return_theta(self, rng):
        images = rng.uniform(size=(3, 8, 8, 1)).astype(np.float32)
        theta = [0.9, 0.1, 0.05, -0.1, 1.1, 0.0]
        layer = keras_stn.SpatialTransformer(
            keras.Sequential([keras.layers.Flatten(),
                              keras_stn.localization_head()]),
            return_theta=True, output_size=(5, 5))
        inputs = keras.Input((8, 8, 1))
        warped, predicted = layer(inputs)
        assert tuple(warped.shape) == (None, 5, 5, 1)
        assert tuple(predicted.shape) == (None, 6)
        layer.localization_net.layers[-1].bias.assign(theta)
        out, values = layer(images)
        assert_close(values.numpy(), np.tile(theta, (3, 1)), kind="exact")
        assert values.dtype == tf.float32
        assert layer.compute_output_shape((None, 8, 8, 1)) == (
            (None, 5, 5, 1), (None, 6))

    def test_identity_regularization_loss(self, rng):
        images = rng.uniform(size=(4, 8, 8, 1)).astype(np.float32)
        theta = np.array([1.2, 0.1, 0.3, 0.0, 0.8, -0.2], np.float32)
        loc = keras.Sequential([keras.layers.Flatten(),
                                keras_stn.localization_head()])
        layer = keras_stn.SpatialTransformer(loc, identity_regularization=0.5)
        layer(images)
        loc.layers[-1].bias.assign(theta)
        model = keras.Sequential([keras.Input((8, 8, 1)), layer])
        model(images)
        expected = 0.5 * np.sum((theta - [1, 0, 0, 0, 1, 0]) ** 2)
        np.testing.assert_allclose(float(sum(model.losses)), expected,
                                   rtol=1e-6)
        # It pulls θ toward the identity when trained alone.
        model.compile(keras.optimizers.SGD(0.1), loss=lambda y, p: 0.0 * p)
        history = model.fit(images, images, epochs=20, verbose=0)
        assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]
        deviation = loc(images).numpy() - [1, 0, 0, 0, 1, 0]
        assert np.sum(deviation**2, axis=-1).max() < 0.1 * np.sum(
            (theta - [1, 0, 0, 0, 1, 0]) ** 2)

    def test_localization_lr_multiplier_scales_gradients(self, rng):
        images = rng.uniform(size=(2, 9, 9, 1)).astype(np.float32)
        gradients = []
        for multiplier in (1.0, 0.1):
            keras.utils.set_random_seed(3)
            layer = keras_stn.SpatialTransformer(
                conv_loc_net(kernel_initializer="glorot_uniform"),
                localization_lr_multiplier=multiplier)
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(images) ** 2)
            gradients.append([g.numpy() for g in
                              tape.gradient(loss, layer.trainable_weights)])
            forward = layer(images).numpy()
            if multiplier == 1.0:
                reference_forward = forward
        assert_close(forward, reference_forward, kind="exact")
        for full, slow in zip(*gradients):
            np.testing.assert_allclose(slow, 0.1 * full, rtol=1e-4, atol=1e-9)

    @pytest.mark.parametrize("argument,value,error", [
        ("localization_lr_multiplier", 0.0, ValueError),
        ("localization_lr_multiplier", -1.0, ValueError),
        ("localization_lr_multiplier", "fast", TypeError),
        ("identity_regularization", -0.1, ValueError),
        ("identity_regularization", float("nan"), ValueError),
        ("return_theta", 1, TypeError),
    ])
    def test_bad_values(self, argument, value, error):
        with pytest.raises(error, match=argument):
            keras_stn.SpatialTransformer(conv_loc_net(), **{argument: value})

    def test_serialised(self, tmp_path):
        def make():
            return keras_stn.SpatialTransformer(
                conv_loc_net(kernel_initializer="glorot_uniform"),
                localization_lr_multiplier=0.1, identity_regularization=0.01,
                output_size=(5, 5))

        run_layer_test(make, input_shape=(2, 8, 8, 1),
                       expected_output_shape=(2, 5, 5, 1), tmp_path=tmp_path)
        config = make().get_config()
        assert config["localization_lr_multiplier"] == 0.1
        assert config["identity_regularization"] == 0.01
        assert config["return_theta"] is False


def volume_loc_net(**head_kwargs):
    return keras.Sequential([
        keras.layers.Conv3D(3, 3, activation="relu"),
        keras.layers.GlobalAveragePooling3D(),
        keras_stn.localization_head("affine_3d", **head_kwargs),
    ])


class TestVolumeLayer:
    def test_layer_helper(self, tmp_path):
        run_layer_test(
            lambda: keras_stn.SpatialTransformer(
                volume_loc_net(kernel_initializer="glorot_uniform"),
                output_size=(3, 4, 5)),
            input_shape=(2, 5, 6, 7, 2), expected_output_shape=(2, 3, 4, 5, 2),
            tmp_path=tmp_path)

    def test_fresh_layer_is_identity_and_channels_first_agrees(self, rng):
        volumes = rng.uniform(size=(2, 5, 6, 7, 3)).astype(np.float32)
        layer = keras_stn.SpatialTransformer(volume_loc_net())
        assert_close(layer(volumes).numpy(), volumes, kind="exact")
        theta = np.eye(3, 4).ravel() + rng.normal(0, 0.1, 12)
        last = keras_stn.SpatialTransformer(constant_loc_net(theta),
                                            output_size=(4, 4, 4))
        first = keras_stn.SpatialTransformer(constant_loc_net(theta),
                                             output_size=(4, 4, 4),
                                             data_format="channels_first")
        out_first = first(np.moveaxis(volumes, -1, 1)).numpy()
        assert_close(np.moveaxis(out_first, 1, -1), last(volumes).numpy(), kind="exact")
        assert first.compute_output_shape((None, 3, 5, 6, 7)) == (
            None, 3, 4, 4, 4)

    def test_volume_errors(self):
        with pytest.raises(ValueError, match="volumes.*affine"):
            keras_stn.SpatialTransformer(
                keras.Sequential([keras.layers.Flatten(),
                                  keras_stn.localization_head("attention")]),
                transform="attention").build((None, 4, 4, 4, 1))
        with pytest.raises(ValueError, match=r"12 values"):
            keras_stn.SpatialTransformer(keras.Sequential([
                keras.layers.Flatten(), keras_stn.localization_head("affine")
            ])).build((None, 5, 5, 5, 1))
        with pytest.raises(ValueError, match="output_size"):
            keras_stn.SpatialTransformer(
                volume_loc_net(), output_size=(4, 4)).build((None, 5, 5, 5, 1))


class TestTransformInstances:
    """The layer takes what `transforms.get` takes, and both refuse the
    same things."""

    @pytest.mark.parametrize("transform,params", [
        (keras_stn.transforms.Attention(), 3),
        (keras_stn.transforms.ThinPlateSpline(3), 18),
    ])
    def test_instance_accepted_and_serialised_by_name(self, transform,
                                                      params):
        loc_net = keras.Sequential([
            keras.layers.Flatten(),
            keras_stn.localization_head(
                transform.name,
                **({"control_points": transform.control_points}
                   if transform.name == "tps" else {}))])
        layer = keras_stn.SpatialTransformer(loc_net, transform=transform)
        out = layer(np.ones((2, 6, 6, 1), np.float32))
        assert_close(out.numpy(), np.ones((2, 6, 6, 1)), kind="exact")
        config = layer.get_config()
        assert config["transform"] == transform.name
        clone = keras_stn.SpatialTransformer.from_config(config)
        assert clone._transform.num_params == params

    def test_custom_subclass_refused_by_both(self):
        class Custom(keras_stn.transforms.Affine):
            pass

        with pytest.raises(TypeError, match="serialisable by name"):
            keras_stn.transforms.get(Custom())
        with pytest.raises(TypeError, match="serialisable by name"):
            keras_stn.SpatialTransformer(keras.layers.Dense(6),
                                         transform=Custom())

    def test_contradicting_control_points(self):
        with pytest.raises(ValueError, match="control_points"):
            keras_stn.SpatialTransformer(
                keras.layers.Dense(18),
                transform=keras_stn.transforms.ThinPlateSpline(3),
                control_points=4)
