"""Free-form thin-plate splines: any fixed control points (ASTER's two
rows), a localisation net on a resized copy of the input, bounded heads that
start at the identity; against a textbook NumPy spline, exact at the control
points, serialised, trained, and in TFLite."""

import keras
import numpy as np
import pytest

import keras_stn
from keras_stn import transforms
from keras_stn.core.meshgrid import homogeneous_meshgrid

BACKEND = keras.backend.backend()
ASTER = transforms.aster_control_points(20)


def _numpy(value):
    return keras.ops.convert_to_numpy(value)


def textbook_tps(controls, positions, points):
    """A thin-plate spline written from its definition (Bookstein 1989):
    f(p) = a0 + a1 x + a2 y + Σ w_i U(|p − c_i|), U(r) = r² log r², with
    the 2-D system [[K, P], [Pᵀ, 0]] [w; a] = [v; 0] solved per axis.

    Args:
        controls: `[K, 2]` control points; positions: `[K, 2]` the values
        (source positions) at them; points: `[N, 2]` where to evaluate.
    """
    def u(a, b):
        r2 = np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(r2 == 0, 0.0, r2 * np.log(r2))

    count = len(controls)
    p = np.hstack([np.ones((count, 1)), controls])
    system = np.block([[u(controls, controls), p],
                       [p.T, np.zeros((3, 3))]])
    rhs = np.vstack([positions, np.zeros((3, 2))])
    coefficients = np.linalg.solve(system, rhs)
    weights, affine = coefficients[:count], coefficients[count:]
    return (u(points, controls) @ weights
            + np.hstack([np.ones((len(points), 1)), points]) @ affine)


class TestAsterControlPoints:
    def test_two_rows_with_margins(self):
        points = transforms.aster_control_points(10, margins=(0.1, 0.25))
        assert points.shape == (10, 2) and points.dtype == np.float32
        np.testing.assert_allclose(points[:5, 1], -0.5)  # top: 2·0.25 − 1
        np.testing.assert_allclose(points[5:, 1], 0.5)
        np.testing.assert_allclose(points[:5, 0], np.linspace(-0.8, 0.8, 5),
                                   atol=1e-7)
        np.testing.assert_array_equal(points[:5, 0], points[5:, 0])

    def test_asters_default_is_twenty_points_at_point_nine(self):
        assert ASTER.shape == (20, 2)
        np.testing.assert_allclose(np.abs(ASTER).max(axis=0), [0.9, 0.9],
                                   atol=1e-7)

    @pytest.mark.parametrize("count", [3, 5, 2, 4.0, True, "20"])
    def test_bad_count(self, count):
        with pytest.raises(ValueError, match="`count`.*even int >= 4"):
            transforms.aster_control_points(count)

    @pytest.mark.parametrize("margins", [(0.5, 0.1), (-0.1, 0.1), 0.1,
                                         ("a", 0.1)])
    def test_bad_margins(self, margins):
        with pytest.raises(ValueError, match="`margins`"):
            transforms.aster_control_points(20, margins)


class TestTheSpline:
    def test_matches_a_textbook_spline(self):
        rng = np.random.default_rng(0)
        controls = rng.uniform(-1, 1, (9, 2))
        positions = controls + rng.normal(scale=0.15, size=controls.shape)
        size = (7, 11)
        tps = transforms.ThinPlateSpline(controls)
        for align_corners in (False, True):
            grid = _numpy(tps.grid(positions.reshape(1, -1).astype("float32"),
                                   size, align_corners))
            targets = homogeneous_meshgrid(size, align_corners,
                                           np.float64)[:, :2]
            expected = textbook_tps(controls, positions, targets)
            np.testing.assert_allclose(grid.reshape(-1, 2), expected,
                                       atol=2e-6, rtol=0)

    def test_passes_through_every_control_point_exactly(self):
        # Control points on pixel centres of a (5, 9) output with
        # align_corners=True: the grid there is the positions themselves.
        xs, ys = np.linspace(-1, 1, 9), np.linspace(-1, 1, 5)
        cells = [(1, 0), (4, 1), (7, 0), (2, 3), (8, 4), (5, 2), (0, 4)]
        controls = np.array([(xs[i], ys[j]) for i, j in cells])
        rng = np.random.default_rng(1)
        positions = rng.uniform(-1.2, 1.2, (2, len(cells), 2))
        grid = _numpy(transforms.ThinPlateSpline(controls).grid(
            positions.reshape(2, -1).astype("float32"), (5, 9), True))
        for k, (i, j) in enumerate(cells):
            np.testing.assert_allclose(grid[:, j, i], positions[:, k],
                                       atol=1e-6, rtol=0)

    def test_identity_parameters_give_the_identity_grid(self):
        tps = transforms.ThinPlateSpline(ASTER)
        np.testing.assert_array_equal(tps.identity, ASTER.ravel())
        grid = _numpy(tps.grid(tps.identity[None], (6, 10)))
        expected = homogeneous_meshgrid((6, 10), False)[:, :2]
        np.testing.assert_allclose(grid.reshape(-1, 2), expected, atol=1e-6)

    def test_an_int_is_the_grid_of_its_points(self):
        side = np.linspace(-1, 1, 3)
        x, y = np.meshgrid(side, side)
        as_array = transforms.ThinPlateSpline(np.stack([x.ravel(), y.ravel()],
                                                       -1))
        as_int = transforms.ThinPlateSpline(3)
        params = np.random.default_rng(2).uniform(-1, 1, (2, 18)).astype(
            "float32")
        np.testing.assert_array_equal(_numpy(as_int.grid(params, (5, 6))),
                                      _numpy(as_array.grid(params, (5, 6))))
        assert as_int.num_params == as_array.num_params == 18

    def test_equal_points_make_equal_transforms(self):
        assert transforms.ThinPlateSpline(ASTER) == transforms.get(
            "tps", control_points=ASTER.tolist())
        assert transforms.ThinPlateSpline(ASTER) != transforms.ThinPlateSpline(
            transforms.aster_control_points(10))
        assert "20 control points, 40 parameters" in repr(
            transforms.ThinPlateSpline(ASTER))

    @pytest.mark.parametrize("points, problem", [
        ([[0, 0], [1, 1]], "fewer than 3 points"),
        ([[0, 0], [0.5, 0.5], [1, 1]], "one line"),
        ([[0, 0], [1, 0], [0, 1], [1, 0]], "coincide"),
        ([[0, 0], [1, np.nan], [0, 1]], "non-finite"),
        ([[0, 0, 0], [1, 0, 0], [0, 1, 0]], "shape \\[K, 2\\]"),
        (True, "int n >= 2"),
        (1, "int n >= 2"),
        ("aster", "int n >= 2"),
    ])
    def test_bad_control_points(self, points, problem):
        with pytest.raises(ValueError, match=f"`control_points`.*{problem}"):
            transforms.ThinPlateSpline(points)


def _rectifier(activation=None, localization_size=(16, 50), seed=3):
    keras.utils.set_random_seed(seed)
    loc = keras.Sequential([
        keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras_stn.localization_head(
            "tps", control_points=ASTER, activation=activation,
            kernel_initializer=keras.initializers.RandomNormal(
                stddev=0.3, seed=seed))])
    return keras.Sequential([
        keras.Input((64, 256, 1)),
        keras_stn.SpatialTransformer(
            loc, output_size=(32, 100), transform="tps",
            control_points=ASTER, localization_size=localization_size)])


def _strips(batch=3, seed=0):
    return np.random.default_rng(seed).uniform(
        size=(batch, 64, 256, 1)).astype("float32")


class TestLocalizationSize:
    def test_the_net_sees_the_resized_input(self):
        seen = []

        class Probe(keras.layers.Layer):
            def call(self, inputs):
                seen.append(tuple(inputs.shape[1:]))
                return inputs

        loc = keras.Sequential([Probe(), keras.layers.Flatten(),
                                keras_stn.localization_head(
                                    "tps", control_points=ASTER)])
        layer = keras_stn.SpatialTransformer(
            loc, output_size=(32, 100), transform="tps", control_points=ASTER,
            localization_size=(16, 50))
        outputs = layer(_strips())
        assert tuple(outputs.shape) == (3, 32, 100, 1)
        assert set(seen) == {(16, 50, 1)}
        # The head's kernel sized for the small copy: 16·50 inputs.
        assert tuple(loc.layers[-1].kernel.shape) == (800, 40)

    def test_the_resize_is_bilinear_of_the_input(self):
        captured = {}

        class Capture(keras.layers.Layer):
            def call(self, inputs):
                captured["seen"] = inputs
                return keras.ops.zeros((keras.ops.shape(inputs)[0], 6))

        layer = keras_stn.SpatialTransformer(
            Capture(), localization_size=(8, 16), output_size=(4, 4))
        images = _strips(2)
        layer(images)
        expected = keras.ops.image.resize(images, (8, 16),
                                          interpolation="bilinear")
        np.testing.assert_allclose(_numpy(captured["seen"]),
                                   _numpy(expected), atol=1e-6)

    @pytest.mark.parametrize("size", [(16,), (0, 5), (4, 5, 6), "16x50"])
    def test_bad_values(self, size):
        with pytest.raises((ValueError, TypeError),
                           match="`localization_size`"):
            keras_stn.SpatialTransformer(keras.layers.Dense(6),
                                         localization_size=size)

    def test_volumes_are_refused_at_build(self):
        layer = keras_stn.SpatialTransformer(
            keras.Sequential([keras.layers.Flatten(),
                              keras_stn.localization_head("affine_3d")]),
            localization_size=(4, 4))
        with pytest.raises(ValueError, match="localization_size.*rank 4"):
            layer.build((2, 4, 5, 6, 1))


class TestBoundedHeads:
    @pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
    def test_starts_at_the_identity_and_stays_bounded(self, activation):
        head = keras_stn.localization_head("tps", control_points=ASTER,
                                           activation=activation)
        features = np.random.default_rng(4).normal(size=(3, 7)).astype(
            "float32")
        np.testing.assert_allclose(_numpy(head(features)),
                                   np.tile(ASTER.ravel(), (3, 1)), atol=1e-6)
        dense = head if activation == "tanh" else head.layers[0]
        dense.kernel.assign(np.full(dense.kernel.shape, 1e4, "float32"))
        bounded = _numpy(head(features))
        assert np.all(np.abs(bounded) <= 1.0) and np.all(np.isfinite(bounded))

    def test_the_layer_starts_as_the_identity(self):
        model = _rectifier("sigmoid")
        head = model.layers[0].localization_net.layers[-1].layers[0]
        head.kernel.assign(np.zeros(head.kernel.shape, "float32"))
        strips = _strips(2)
        identity = keras_stn.grid_sample(strips, keras_stn.affine_grid(
            np.tile(np.eye(2, 3, dtype="float32").reshape(1, 6), (2, 1)),
            (32, 100)))
        np.testing.assert_allclose(_numpy(model(strips)), _numpy(identity),
                                   atol=1e-4)

    def test_identity_on_the_border_cannot_be_bounded(self):
        with pytest.raises(ValueError, match="cannot start at the identity"):
            keras_stn.localization_head("tps", control_points=3,
                                        activation="tanh")
        with pytest.raises(ValueError, match="cannot start at the identity"):
            keras_stn.localization_head("affine", activation="sigmoid")

    def test_bad_activation(self):
        with pytest.raises(ValueError, match="`activation`.*relu"):
            keras_stn.localization_head("tps", control_points=ASTER,
                                        activation="relu")


def test_saves_reloads_and_trains(tmp_path):
    model = _rectifier("tanh")
    strips = _strips(4)
    before = _numpy(model(strips))
    model.save(tmp_path / "rectifier.keras")
    reloaded = keras.saving.load_model(tmp_path / "rectifier.keras")
    # Equal to float32 rounding: on TensorFlow, a repeated eager call runs
    # the compiled (XLA cluster) formulation, the first one the runtime's;
    # coordinates on a 256-pixel axis then differ by ~2e-5 px, and noise
    # images change by up to 1 per pixel.
    np.testing.assert_allclose(_numpy(reloaded(strips)), before, atol=1e-4)
    config = reloaded.layers[0].get_config()
    assert config["localization_size"] == (16, 50)
    np.testing.assert_allclose(config["control_points"], ASTER)
    # Gradients reach the localisation net through the spline.
    reloaded.compile("adam", "mse")
    net = reloaded.layers[0].localization_net
    weights = [_numpy(w).copy() for w in net.trainable_weights]
    reloaded.fit(strips, np.zeros((4, 32, 100, 1), "float32"), epochs=1,
                 verbose=0)
    assert all(np.any(_numpy(w) != old) for w, old in
               zip(net.trainable_weights, weights))


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="TFLite export is a TensorFlow tool")
def test_tflite_parity_builtins_only(tmp_path):
    model = _rectifier("sigmoid")
    path = keras_stn.export_tflite(model, str(tmp_path / "rectifier.tflite"))
    ops = keras_stn.tflite_ops(path)
    assert not [op for op in ops if "FLEX" in op or "CUSTOM" in op]
    assert "RESIZE_BILINEAR" in ops
    for batch in (1, 3):
        strips = _strips(batch, seed=batch)
        np.testing.assert_allclose(keras_stn.run_tflite(path, strips),
                                   _numpy(model(strips)), atol=1e-4)
