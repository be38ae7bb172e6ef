"""Dense deformation fields (`keras_stn.fields`, `Warp`, `IntegrateVelocity`)
against a NumPy reference written separately, on every Keras backend.

The reference samples with explicit loops over corners in pixel-index
coordinates (no normalisation at all), so it shares no arithmetic with the
implementation, which goes through normalised grids and `grid_sample`.

Tolerances: float32 bilinear sampling of values of order 1-10 agrees to
a few ulps of its terms (atol 1e-4 on fields of a few pixels, images in
[0, 1] at 1e-5); integration and composition repeat it a handful of times.
"""

import os

import keras
import numpy as np
import pytest

import keras_stn
from keras_stn import fields
from tests.conftest import EXACT_ATOL
from tests.conftest import TOLERANCES
from tests.conftest import assert_close

BACKEND = keras.backend.backend()
F32 = TOLERANCES["float32"]


# -- The NumPy reference -------------------------------------------------------


def reference_warp(images, displacement):
    """Bilinear (trilinear) sampling of `images [B, *S, C]` at p + u(p),
    x-first field in pixels, zeros outside; float64."""
    images = np.asarray(images, np.float64)
    u = np.asarray(displacement, np.float64)
    batch, *spatial, channels = images.shape
    rank = len(spatial)
    out_spatial = u.shape[1:-1]
    # Source position per array axis (the field is x first: reverse it).
    index = np.meshgrid(*[np.arange(n) for n in out_spatial], indexing="ij")
    source = [index[axis][None] + u[..., rank - 1 - axis]
              for axis in range(rank)]
    out = np.zeros((batch, *out_spatial, channels))
    low = [np.floor(s) for s in source]
    for corner in np.ndindex(*([2] * rank)):
        weight = np.ones_like(source[0])
        position = []
        for axis in range(rank):
            at = low[axis] + corner[axis]
            frac = source[axis] - low[axis]
            weight = weight * (frac if corner[axis] else 1.0 - frac)
            position.append(at)
        inside = np.ones_like(weight, bool)
        for axis in range(rank):
            inside &= (position[axis] >= 0) & (position[axis] <= spatial[axis] - 1)
        clamped = [np.clip(p, 0, n - 1).astype(int)
                   for p, n in zip(position, spatial)]
        b = np.arange(batch).reshape((batch,) + (1,) * rank)
        values = images[(np.broadcast_to(b, clamped[0].shape), *clamped)]
        out += (weight * inside)[..., None] * values
    return out


def reference_integrate(velocity, steps):
    u = np.asarray(velocity, np.float64) / 2**steps
    for _ in range(steps):
        u = u + reference_warp(u, u)
    return u


def reference_jacobian_determinant(u):
    """det(I + ∇u) with np.gradient (central inside, one-sided at edges)."""
    u = np.asarray(u, np.float64)
    rank = u.shape[-1]
    jac = np.zeros(u.shape[:-1] + (rank, rank))
    for i in range(rank):
        for j in range(rank):
            axis = rank - j  # coordinate j (x first) is array axis rank - j
            derivative = (np.gradient(u[..., i], axis=axis)
                          if u.shape[axis] > 1 else 0.0)
            jac[..., i, j] = (i == j) + derivative
    return np.linalg.det(jac)


def smooth_field(rng, spatial, amplitude, batch=2, decay=False):
    """A smooth random field: a sum of a few low-frequency sines."""
    rank = len(spatial)
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in spatial],
                        indexing="ij")
    field = np.zeros((batch, *spatial, rank))
    for b in range(batch):
        for c in range(rank):
            phase = rng.uniform(0, 2 * np.pi, rank)
            freq = rng.uniform(0.5, 1.5, rank)
            wave = np.ones(spatial)
            for axis in range(rank):
                wave = wave * np.sin(2 * np.pi * freq[axis] * grids[axis]
                                     + phase[axis])
            if decay:
                for axis in range(rank):
                    wave = wave * np.sin(np.pi * grids[axis]) ** 2
            field[b, ..., c] = amplitude * wave
    return field.astype("float32")


def np_(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


# -- warp ----------------------------------------------------------------------


class TestWarp:
    def test_zero_field_is_the_identity(self, rng):
        images = rng.random((2, 5, 7, 3), dtype="float32")
        out = fields.warp(images, np.zeros((2, 5, 7, 2), "float32"))
        # Exact on TensorFlow and JAX (near-integers snap); PyTorch's own
        # grid_sample, which the torch backend calls, is off by an ulp.
        assert_close(np_(out), images, kind="exact")

    @pytest.mark.parametrize("shift", [(1, 0), (-2, 1), (0, 3)])
    def test_integer_translations_are_exact(self, rng, shift):
        images = rng.random((1, 6, 8, 1), dtype="float32")
        u = np.zeros((1, 6, 8, 2), "float32")
        u[..., 0], u[..., 1] = shift
        got = np_(fields.warp(images, u))
        expected = np.zeros_like(images)
        dx, dy = shift
        for i in range(6):
            for j in range(8):
                if 0 <= i + dy < 6 and 0 <= j + dx < 8:
                    expected[0, i, j] = images[0, i + dy, j + dx]
        assert_close(got, expected, kind="exact")

    @pytest.mark.parametrize("spatial", [(9, 11), (5, 6, 7)])
    def test_against_the_numpy_reference(self, rng, spatial):
        images = rng.random((2, *spatial, 2), dtype="float32")
        u = smooth_field(rng, spatial, amplitude=2.5)
        np.testing.assert_allclose(np_(fields.warp(images, u)),
                                   reference_warp(images, u), atol=1e-5)

    @pytest.mark.parametrize("spatial", [(9, 11), (5, 6, 7)])
    def test_ij_indexing_is_the_reversed_last_axis(self, rng, spatial):
        images = rng.random((2, *spatial, 1), dtype="float32")
        u = smooth_field(rng, spatial, amplitude=2.0)
        assert_close(np_(fields.warp(images, u[..., ::-1].copy(), indexing="ij")), np_(fields.warp(images, u)), kind="exact")

    def test_border_padding_clamps(self):
        images = np.arange(4, dtype="float32").reshape(1, 1, 4, 1)
        u = np.full((1, 1, 4, 2), 0.0, "float32")
        u[..., 0] = 10.0
        out = np_(fields.warp(images, u, padding_mode="border"))
        np.testing.assert_allclose(out[0, 0, :, 0], [3, 3, 3, 3])

    def test_bad_arguments(self):
        images = np.zeros((1, 4, 4, 1), "float32")
        with pytest.raises(ValueError, match="argument `displacement`"):
            fields.warp(images, np.zeros((1, 4, 4, 3), "float32"))
        with pytest.raises(ValueError, match="argument `indexing`"):
            fields.warp(images, np.zeros((1, 4, 4, 2), "float32"),
                        indexing="yx")
        with pytest.raises(TypeError, match="argument `displacement`"):
            fields.warp(images, np.zeros((1, 4, 4, 2), "int32"))
        with pytest.raises(ValueError, match="same rank"):
            fields.warp(images, np.zeros((1, 4, 4, 4, 3), "float32"))


# -- integrate -------------------------------------------------------------------


class TestIntegrate:
    def test_zero_steps_return_the_velocity(self, rng):
        v = smooth_field(rng, (6, 6), 1.0)
        np.testing.assert_array_equal(np_(fields.integrate(v, steps=0)), v)

    def test_a_constant_velocity_integrates_to_itself(self):
        v = np.full((1, 16, 16, 2), 0.75, "float32")
        u = np_(fields.integrate(v, steps=5))
        # Away from the border (where zeros padding reads zero velocity) the
        # flow of a constant field is a translation.
        np.testing.assert_allclose(u[:, 2:10, 2:10], 0.75, atol=1e-5)
        u = np_(fields.integrate(v, steps=5, padding_mode="border"))
        np.testing.assert_allclose(u, 0.75, atol=1e-5)

    @pytest.mark.parametrize("spatial", [(12, 10), (6, 7, 5)])
    def test_against_the_numpy_reference(self, rng, spatial):
        v = smooth_field(rng, spatial, amplitude=3.0)
        np.testing.assert_allclose(np_(fields.integrate(v, steps=7)),
                                   reference_integrate(v, 7), atol=1e-4)

    def test_smooth_velocities_give_no_folds(self, rng):
        v = smooth_field(rng, (32, 32), amplitude=4.0)
        u = fields.integrate(v, steps=7)
        assert float(np_(fields.folding_fraction(u))) == 0.0
        assert np_(fields.jacobian_determinant(u)).min() > 0

    def test_bad_steps(self):
        with pytest.raises(ValueError, match="argument `steps`"):
            fields.integrate(np.zeros((1, 4, 4, 2), "float32"), steps=-1)


# -- compose and invert ----------------------------------------------------------


class TestComposeAndInvert:
    def test_constant_fields_add(self):
        a = np.full((1, 8, 8, 2), 1.0, "float32")
        b = np.full((1, 8, 8, 2), 2.0, "float32")
        c = np_(fields.compose(a, b))
        assert_close(c[:, :5, :5], 3.0, kind="exact")

    @pytest.mark.parametrize("spatial", [(24, 20), (10, 9, 8)])
    def test_warping_twice_is_warping_once_by_the_composition(
            self, rng, spatial):
        # The documented identity: warp(warp(I, a), b) == warp(I, compose(a,
        # b)) up to interpolation. Bilinear interpolation reproduces a
        # linear image exactly, and is linear, so on a linear image both
        # sides are I(p + b(p) + interp(a)(p + b(p))) exactly, while fields
        # that vanish at the border keep every sample inside.
        rank = len(spatial)
        index = np.meshgrid(*[np.arange(n) for n in spatial], indexing="ij")
        image = sum((axis + 1) * 0.1 * index[axis] for axis in range(rank))
        image = np.repeat(image[None, ..., None], 2, 0).astype("float32")
        a = smooth_field(rng, spatial, 1.5, decay=True)
        b = smooth_field(rng, spatial, 1.5, decay=True)
        twice = np_(fields.warp(fields.warp(image, a), b))
        once = np_(fields.warp(image, fields.compose(a, b)))
        np.testing.assert_allclose(once, twice, atol=1e-5)
        # Integer constant fields compose exactly.
        a = np.full_like(a, 1.0)
        b = np.full_like(b, -2.0)
        # (to a few ulps of values up to 4: PyTorch's kernel does not snap)
        np.testing.assert_allclose(
            np_(fields.warp(image, fields.compose(a, b))),
            np_(fields.warp(fields.warp(image, a), b)), atol=EXACT_ATOL,
            rtol=1e-6)

    def test_compose_with_ij_indexing(self, rng):
        a = smooth_field(rng, (10, 12), 1.0)
        b = smooth_field(rng, (10, 12), 1.0)
        assert_close(np_(fields.compose(a[..., ::-1].copy(), b[..., ::-1].copy(),
                               indexing="ij"))[..., ::-1], np_(fields.compose(a, b)), kind="exact")

    def test_invert_gives_a_residual_below_the_documented_tolerance(
            self, rng):
        # The docstring's claim: 1.5 px amplitude, derivatives <= 0.3.
        u = smooth_field(rng, (48, 48), amplitude=1.5, decay=True)
        grad = max(np.abs(np.gradient(u, axis=a)).max() for a in (1, 2))
        assert grad <= 0.3
        residual = np_(fields.compose(u, fields.invert(u, iterations=20)))
        margin = 4
        assert np.abs(residual[:, margin:-margin, margin:-margin]).max() < 0.02

    def test_invert_of_a_translation_is_the_opposite_translation(self):
        u = np.full((1, 8, 8, 2), 1.5, "float32")
        np.testing.assert_allclose(np_(fields.invert(u)), -1.5, atol=1e-5)


# -- Jacobians and folding ------------------------------------------------------


class TestJacobian:
    def test_affine_fields_have_the_matrix_determinant(self):
        matrix = np.array([[1.2, 0.3], [-0.1, 0.8]])
        i, j = np.meshgrid(np.arange(6), np.arange(7), indexing="ij")
        points = np.stack([j, i], -1).astype(float)  # x, y
        u = (points @ matrix.T - points)[None].astype("float32")
        det = np_(fields.jacobian_determinant(u))
        np.testing.assert_allclose(det, np.linalg.det(matrix), atol=1e-5)

    @pytest.mark.parametrize("spatial", [(9, 8), (5, 6, 7), (1, 5)])
    def test_against_np_gradient(self, rng, spatial):
        u = smooth_field(rng, spatial, amplitude=2.0)
        np.testing.assert_allclose(np_(fields.jacobian_determinant(u)),
                                   reference_jacobian_determinant(u),
                                   atol=1e-4)
        np.testing.assert_allclose(
            np_(fields.jacobian_determinant(u[..., ::-1].copy(),
                                            indexing="ij")),
            reference_jacobian_determinant(u), atol=1e-4)

    def test_folding_fraction_counts_non_positive_determinants(self):
        u = np.zeros((1, 1, 10, 2), "float32")
        # x -> -x on the right half: det = -1 on those pixels (one-sided
        # differences at the edge and centre as np.gradient).
        x = np.arange(10, dtype="float32")
        u[0, 0, :, 0] = np.where(x < 5, 0.0, -2 * x + 9)
        expected = np.mean(reference_jacobian_determinant(u) <= 0)
        assert float(np_(fields.folding_fraction(u))) == pytest.approx(
            expected)
        assert 0.3 < expected < 0.7


# -- affine fields and resize ----------------------------------------------------


class TestAffineAndResize:
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("size", [(7, 9), (4, 5, 6)])
    def test_affine_field_warps_as_grid_sample(self, rng, align_corners, size):
        rank = len(size)
        theta = np.eye(rank, rank + 1)[None] + rng.normal(
            0, 0.1, (2, rank, rank + 1))
        theta = theta.astype("float32")
        images = rng.random((2, *size, 2), dtype="float32")
        u = fields.affine_to_displacement(theta, size, align_corners)
        expected = keras_stn.grid_sample(
            images, keras_stn.affine_grid(theta, size, align_corners),
            align_corners=align_corners)
        np.testing.assert_allclose(np_(fields.warp(images, u)),
                                   np_(expected), atol=1e-5)

    def test_identity_theta_gives_a_zero_field(self):
        u = fields.affine_to_displacement(
            np.array([[1, 0, 0, 0, 1, 0]], "float32"), (5, 6))
        np.testing.assert_allclose(np_(u), 0.0, atol=1e-5)

    def test_resize_rescales_the_values(self):
        u = np.zeros((1, 4, 6, 2), "float32")
        u[..., 0], u[..., 1] = 1.0, -0.5
        big = np_(fields.resize(u, (8, 18)))
        assert big.shape == (1, 8, 18, 2)
        np.testing.assert_allclose(big[..., 0], 3.0, atol=1e-5)
        np.testing.assert_allclose(big[..., 1], -1.0, atol=1e-5)

    def test_resize_keeps_the_physical_map_of_an_affine_field(self):
        theta = np.array([[1.1, 0.1, 0.05, -0.1, 0.9, 0.1]], "float32")
        small = fields.affine_to_displacement(theta, (8, 8))
        big = fields.affine_to_displacement(theta, (16, 16))
        # Bilinear resampling of an affine field is exact inside; the
        # border pixels clamp.
        np.testing.assert_allclose(np_(fields.resize(small, (16, 16)))[
            :, 1:-1, 1:-1], np_(big)[:, 1:-1, 1:-1], atol=1e-4)


# -- Smoothness penalties --------------------------------------------------------


class TestPenalties:
    @pytest.mark.parametrize("spatial", [(7, 9), (4, 5, 6)])
    def test_gradient_penalty_is_voxelmorphs_grad_l2(self, rng, spatial):
        u = smooth_field(rng, spatial, 2.0).astype(np.float64)
        rank = len(spatial)
        expected = sum(np.mean(np.diff(u, axis=a) ** 2)
                       for a in range(1, rank + 1)) / rank
        assert float(np_(fields.gradient_penalty(u.astype("float32")))) == (
            pytest.approx(expected, rel=1e-5))

    def test_bending_energy_of_an_affine_field_is_zero(self):
        theta = np.array([[1.1, 0.1, 0.05, -0.1, 0.9, 0.1]], "float32")
        u = fields.affine_to_displacement(theta, (9, 9))
        assert float(np_(fields.bending_energy(u))) < 1e-9

    def test_bending_energy_against_np_gradient(self, rng):
        u = smooth_field(rng, (8, 9), 2.0).astype(np.float64)
        energy = 0.0
        for a in (1, 2):
            for b in (1, 2):
                second = np.gradient(np.gradient(u, axis=a), axis=b)
                energy = energy + np.sum(second**2, axis=-1)
        got = float(np_(fields.bending_energy(u.astype("float32"))))
        assert got == pytest.approx(np.mean(energy), rel=1e-4)

    def test_loss_and_regularizer(self, rng):
        u = smooth_field(rng, (6, 6), 1.0)
        loss = fields.SmoothnessLoss("l2")
        assert float(np_(loss(np.zeros_like(u), u))) == pytest.approx(
            float(np_(fields.gradient_penalty(u))), rel=1e-5)
        reg = fields.SmoothnessRegularizer(0.5, "bending")
        assert float(np_(reg(u))) == pytest.approx(
            0.5 * float(np_(fields.bending_energy(u))), rel=1e-5)
        restored = fields.SmoothnessLoss.from_config(loss.get_config())
        assert restored.penalty == "l2"
        with pytest.raises(ValueError, match="argument `penalty`"):
            fields.SmoothnessLoss("l1")
        with pytest.raises(ValueError, match="argument `weight`"):
            fields.SmoothnessRegularizer(-1.0)


# -- The layers --------------------------------------------------------------


def _registration_model(diffeomorphic):
    moving = keras.Input((12, 12, 1))
    fixed = keras.Input((12, 12, 1))
    x = keras.layers.Concatenate()([moving, fixed])
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    field = keras.layers.Conv2D(2, 3, padding="same",
                                kernel_initializer="zeros")(x)
    if diffeomorphic:
        field = keras_stn.IntegrateVelocity(steps=4)(field)
    warped = keras_stn.Warp()([moving, field])
    return keras.Model([moving, fixed], [warped, field])


class TestLayers:
    def test_config_round_trip(self):
        layer = keras_stn.Warp(padding_mode="border", indexing="ij")
        clone = keras_stn.Warp.from_config(layer.get_config())
        assert (clone.padding_mode, clone.indexing) == ("border", "ij")
        layer = keras_stn.IntegrateVelocity(steps=3)
        assert keras_stn.IntegrateVelocity.from_config(
            layer.get_config()).steps == 3

    def test_bad_configuration(self):
        with pytest.raises(ValueError, match="argument `steps`"):
            keras_stn.IntegrateVelocity(steps=1.5)
        with pytest.raises(ValueError, match="padding_mode"):
            keras_stn.Warp(padding_mode="wrap")
        with pytest.raises(ValueError, match="two inputs"):
            keras_stn.Warp()(keras.Input((4, 4, 1)))
        with pytest.raises(ValueError, match="displacement"):
            keras_stn.Warp()([keras.Input((4, 4, 1)), keras.Input((4, 4, 3))])

    @pytest.mark.parametrize("diffeomorphic", [False, True])
    def test_trains_saves_and_reloads(self, tmp_path, rng, diffeomorphic):
        model = _registration_model(diffeomorphic)
        model.compile("adam", loss=["mse", fields.SmoothnessLoss("l2")],
                      loss_weights=[1.0, 0.01])
        moving = rng.random((8, 12, 12, 1), dtype="float32")
        fixed = np.roll(moving, 1, axis=2)
        zeros = np.zeros((8, 12, 12, 2), "float32")
        history = model.fit([moving, fixed], [fixed, zeros], epochs=2,
                            batch_size=4, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        kernel = model.layers[-3].kernel if not diffeomorphic else None
        if kernel is not None:
            assert np.abs(np_(kernel)).max() > 0  # gradients reached it
        path = os.path.join(tmp_path, "registration.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
        for got, want in zip(restored.predict([moving, fixed], verbose=0),
                             model.predict([moving, fixed], verbose=0)):
            np.testing.assert_allclose(got, want, **F32)


# -- Gradients and TFLite (TensorFlow) ---------------------------------------------

tensorflow_only = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="tf.test.compute_gradient and TFLite "
    "export are TensorFlow tools")


@tensorflow_only
def test_gradients_to_images_and_field_match_finite_differences(rng):
    import tensorflow as tf

    images = rng.random((1, 5, 6, 1))
    # Fractions in [0.2, 0.8]: off the integer grid, where bilinear sampling
    # is smooth (at integers it has kinks, tested in test_sampling.py).
    u = rng.integers(-1, 2, (1, 5, 6, 2)) + rng.uniform(0.2, 0.8, (1, 5, 6, 2))

    def warped(images, u):
        return fields.warp(images, u)

    theoretical, numerical = tf.test.compute_gradient(
        warped, [tf.constant(images, tf.float64), tf.constant(u, tf.float64)])
    for got, want in zip(theoretical, numerical):
        assert_close(got, want, kind="exact")
    assert np.abs(theoretical[1]).max() > 0.01


@tensorflow_only
def test_registration_model_exports_to_builtins_only_tflite(tmp_path, rng):
    model = _registration_model(diffeomorphic=True)
    path = str(tmp_path / "registration.tflite")
    keras_stn.export_tflite(model, path)
    ops = keras_stn.tflite_ops(path)
    assert not [op for op in ops if "FLEX" in op or "CUSTOM" in op], ops
    moving = rng.random((2, 12, 12, 1), dtype="float32")
    fixed = rng.random((2, 12, 12, 1), dtype="float32")
    got = keras_stn.run_tflite(path, [moving, fixed])
    want = model.predict([moving, fixed], verbose=0)
    got = got if isinstance(got, (list, tuple)) else [got]
    for g, w in zip(sorted(got, key=lambda a: a.shape[-1]),
                    sorted(want, key=lambda a: a.shape[-1])):
        np.testing.assert_allclose(g, w, atol=1e-4)


# -- SpatialTransformer(transform="displacement") --------------------------------


def _field_net(resolution):
    """A localisation net emitting a constant field at `resolution` that
    shifts by one pixel of a 12-pixel input in x: resolution / 12 of its
    own pixels (a zero kernel and that bias)."""
    return keras.Sequential([
        keras.layers.AveragePooling2D(12 // resolution),
        keras.layers.Conv2D(2, 1, kernel_initializer="zeros",
                            bias_initializer=keras.initializers.Constant(
                                [resolution / 12, 0.0])),
    ])


class TestDisplacementTransform:
    @pytest.mark.parametrize("resolution", [3, 6, 12])
    def test_a_field_at_any_resolution_is_resized_and_warped(
            self, rng, resolution):
        layer = keras_stn.SpatialTransformer(_field_net(resolution),
                                             transform="displacement",
                                             padding_mode="border")
        images = rng.random((2, 12, 12, 1), dtype="float32")
        got = np_(layer(images))
        # A constant field of (1, 0) input pixels: column j reads j + 1.
        np.testing.assert_allclose(got[:, :, :-1], images[:, :, 1:],
                                   atol=1e-5)

    def test_other_output_sizes_and_return_theta(self, rng):
        layer = keras_stn.SpatialTransformer(
            _field_net(6), transform="displacement", output_size=(6, 6),
            return_theta=True)
        images = rng.random((2, 12, 12, 1), dtype="float32")
        out, field = layer(images)
        assert tuple(out.shape) == (2, 6, 6, 1) and tuple(field.shape) == (
            2, 6, 6, 2)
        # Output pixel p of 6 sits at input 2p + 0.5 (an identity resize),
        # shifted by one input pixel in x.
        j, i = np.meshgrid(np.arange(6), np.arange(6))
        source = np.stack([2 * j + 1.5, 2 * i + 0.5], -1)
        # reference_warp takes fields over an output of the image's grid:
        # sample the 12-pixel image at the source points directly.
        expected = np.zeros((2, 6, 6, 1))
        for b in range(2):
            for y in range(6):
                for x in range(6):
                    sx, sy = source[y, x]
                    x0, y0 = int(np.floor(sx)), int(np.floor(sy))
                    fx, fy = sx - x0, sy - y0
                    for dy, wy in ((0, 1 - fy), (1, fy)):
                        for dx, wx in ((0, 1 - fx), (1, fx)):
                            yy, xx = y0 + dy, x0 + dx
                            if 0 <= yy < 12 and 0 <= xx < 12:
                                expected[b, y, x] += wy * wx * images[b, yy, xx]
        np.testing.assert_allclose(np_(out), expected, atol=1e-5)
        assert_close(np_(field)[..., 0], 1.0, kind="exact")

    def test_a_net_of_the_wrong_shape_is_refused_at_build_time(self):
        loc = keras.Sequential([keras.layers.Flatten(),
                                keras_stn.localization_head("affine")])
        layer = keras_stn.SpatialTransformer(loc, transform="displacement")
        with pytest.raises(ValueError, match="displacement field"):
            layer.build((None, 12, 12, 1))

    def test_saves_and_reloads(self, tmp_path, rng):
        model = keras.Sequential([
            keras.Input((12, 12, 1)),
            keras_stn.SpatialTransformer(_field_net(6),
                                         transform="displacement")])
        path = os.path.join(tmp_path, "displacement.keras")
        model.save(path)
        images = rng.random((2, 12, 12, 1), dtype="float32")
        np.testing.assert_allclose(
            keras.saving.load_model(path).predict(images, verbose=0),
            model.predict(images, verbose=0), **F32)


@pytest.mark.parametrize("spatial", [(12, 15), (7, 9, 11)])
def test_matches_voxelmorphs_own_functions(spatial):
    """`indexing="ij"` fields in voxels, zeros padding: VoxelMorph 0.3's
    `spatial_transform` (`F.grid_sample(align_corners=True)` at p + u) and
    `integrate_vec` (7 squarings) give the same fields and warps. Runs where
    voxelmorph is installed (`pip install voxelmorph`; not a dependency)."""
    torch = pytest.importorskip("torch")
    vxm = pytest.importorskip("voxelmorph.functional")
    rng = np.random.default_rng(0)
    rank = len(spatial)
    images = rng.uniform(size=(2, *spatial, 3)).astype("float32")
    displacement = (2.5 * rng.normal(size=(2, *spatial, rank))).astype(
        "float32")
    velocity = (1.5 * rng.normal(size=(2, *spatial, rank))).astype("float32")

    def channels_first(array):
        return torch.tensor(np.moveaxis(array, -1, 1))

    def channels_last(tensor):
        return np.moveaxis(tensor.numpy(), 1, -1)

    theirs = channels_last(vxm.spatial_transform(
        channels_first(images), channels_first(displacement),
        non_spatial_dims=(0, 1)))
    # float32: the same bilinear sums, rounded by another unnormalisation.
    assert_close(np_(fields.warp(images, displacement, indexing="ij")),
                 theirs)
    theirs = channels_last(vxm.integrate_vec(channels_first(velocity), 7,
                                             non_spatial_dims=(0,)))
    # Seven compositions, each of float32 bilinear samples of the field.
    assert_close(np_(fields.integrate(velocity, 7, indexing="ij")), theirs,
                 kind="gradient")
