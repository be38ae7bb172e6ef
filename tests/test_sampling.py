"""Sampler: grid_sample against PyTorch golden values, a NumPy reference,
exact cases and numerical gradients."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import keras_stn
from keras_stn.backends.tensorflow import clusters
from tests import reference
from tests.conftest import degenerate_grid_warning
from tests.conftest import TOLERANCES
from tests.conftest import assert_close

INTERPOLATIONS = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")
ALL_MODES = list(itertools.product(INTERPOLATIONS, PADDING_MODES, (False, True)))
IDENTITY = np.array([1, 0, 0, 0, 1, 0], np.float32)


def identity_grid(batch, height, width, align_corners):
    theta = np.tile(IDENTITY, (batch, 1))
    with degenerate_grid_warning((height, width), align_corners):
        return keras_stn.affine_grid(theta, (height, width), align_corners)


class TestSmokeAndShapes:
    def test_output_shape_and_dtype(self, rng):
        images = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
        grid = rng.uniform(-1, 1, (2, 4, 7, 2)).astype(np.float32)
        out = keras_stn.grid_sample(images, grid)
        assert out.shape == (2, 4, 7, 3)
        assert out.dtype == tf.float32

    @pytest.mark.parametrize("interpolation,padding_mode,align_corners", ALL_MODES)
    def test_dynamic_shapes(self, rng, interpolation, padding_mode, align_corners):
        fn = tf.function(
            lambda i, g: keras_stn.grid_sample(
                i, g, interpolation, padding_mode, align_corners
            ),
            input_signature=[
                tf.TensorSpec([None, None, None, None], tf.float32),
                tf.TensorSpec([None, None, None, 2], tf.float32),
            ],
        )
        for batch in (1, 3):
            images = rng.normal(size=(batch, 5, 6, 2)).astype(np.float32)
            grid = rng.uniform(-1.3, 1.3, (batch, 3, 4, 2)).astype(np.float32)
            expected = reference.grid_sample(
                images, grid, interpolation, padding_mode, align_corners
            )
            assert_close(fn(images, grid).numpy(), expected)

    def test_same_result_eager_function_and_xla(self, rng):
        images = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
        grid = rng.uniform(-1.2, 1.2, (2, 4, 7, 2)).astype(np.float32)

        def every_mode(images, grid):
            return [keras_stn.grid_sample(images, grid, *mode)
                    for mode in ALL_MODES]

        # The runtime formulation as one graph, and the whole of it as one
        # XLA program (one compilation); the default path's per-op clusters
        # are held to the runtime formulation in tests/test_clusters.py.
        with keras_stn.use_jit_compile(False):
            graphs = tf.function(every_mode)(images, grid)
            eagers = every_mode(images, grid)
        compiled = tf.function(every_mode, jit_compile=True)(images, grid)
        for mode, graph, xla, eager in zip(ALL_MODES, graphs, compiled,
                                           eagers):
            eager = eager.numpy()
            assert_close(graph.numpy(), eager, kind="exact", err_msg=str(mode))
            # XLA fuses and reorders float operations (FMA): a few ulps of
            # values up to ~3 after bicubic's 16-term sums.
            assert_close(xla.numpy(), eager, err_msg=str(mode))


class TestExceptions:
    def test_unknown_interpolation(self):
        with pytest.raises(ValueError, match=r"interpolation.*'bicubicc'"):
            keras_stn.grid_sample(
                np.zeros((1, 2, 2, 1), "f4"), np.zeros((1, 2, 2, 2), "f4"),
                interpolation="bicubicc",
            )

    def test_unknown_padding_mode(self):
        with pytest.raises(ValueError, match=r"padding_mode.*'wrap'"):
            keras_stn.grid_sample(
                np.zeros((1, 2, 2, 1), "f4"), np.zeros((1, 2, 2, 2), "f4"),
                padding_mode="wrap",
            )

    def test_align_corners_not_bool(self):
        with pytest.raises(TypeError, match="align_corners"):
            keras_stn.grid_sample(
                np.zeros((1, 2, 2, 1), "f4"), np.zeros((1, 2, 2, 2), "f4"),
                align_corners="yes",
            )

    def test_grid_last_axis_not_two(self):
        with pytest.raises(ValueError, match=r"grid.*\(x, y\).*grid.shape"):
            keras_stn.grid_sample(
                np.zeros((1, 2, 2, 1), "f4"), np.zeros((1, 2, 2, 3), "f4")
            )

    def test_images_not_rank_4(self):
        with pytest.raises(ValueError, match=r"images.*rank-4"):
            keras_stn.grid_sample(
                np.zeros((2, 2, 1), "f4"), np.zeros((1, 2, 2, 2), "f4")
            )

    def test_integer_images(self):
        with pytest.raises(TypeError, match=r"images.*floating.*uint8"):
            keras_stn.grid_sample(
                np.zeros((1, 2, 2, 1), "uint8"), np.zeros((1, 2, 2, 2), "f4")
            )

    def test_batch_mismatch(self):
        with pytest.raises(ValueError, match="same batch size"):
            keras_stn.grid_sample(
                np.zeros((2, 2, 2, 1), "f4"), np.zeros((3, 2, 2, 2), "f4")
            )


class TestAgainstTorchGolden:
    @pytest.mark.parametrize("grid_name", ["theta", "uniform"])
    @pytest.mark.parametrize("interpolation,padding_mode,align_corners", ALL_MODES)
    def test_output_and_gradients(
        self, golden, interpolation, padding_mode, align_corners, grid_name
    ):
        # The runtime formulation, eagerly: the XLA cluster is held to the
        # same goldens below (`test_default_graph_path_matches_torch`) and
        # to this formulation at the kinks (tests/test_clusters.py).
        prefix = f"{interpolation}/{padding_mode}/{align_corners}/{grid_name}"
        images = tf.constant(golden["images"])
        grid = tf.constant(golden[prefix + "/grid"])
        with keras_stn.use_jit_compile(False), tf.GradientTape(
                persistent=True) as tape:
            tape.watch([images, grid])
            out = keras_stn.grid_sample(
                images, grid, interpolation, padding_mode, align_corners
            )
            loss = tf.reduce_sum(out * golden["upstream"])
        tol = TOLERANCES["float32"]
        np.testing.assert_allclose(out.numpy(), golden[prefix + "/output"], **tol)
        np.testing.assert_allclose(
            tape.gradient(loss, images).numpy(),
            golden[prefix + "/grad_images"], **tol,
        )
        grad_grid = tape.gradient(loss, grid)
        grad_grid = np.zeros_like(grid) if grad_grid is None else grad_grid
        # The grid gradient is a difference of neighbouring pixels scaled by
        # size / 2 (up to 3 here) and summed over 3 channels: a few ulps of
        # values of order 10.
        assert_close(grad_grid, golden[prefix + "/grad_grid"], kind="gradient")

    @pytest.mark.parametrize("grid_name", ["theta", "uniform"])
    @pytest.mark.parametrize("interpolation,padding_mode,align_corners", ALL_MODES)
    def test_default_graph_path_matches_torch(
        self, golden, interpolation, padding_mode, align_corners, grid_name
    ):
        # In a `tf.function`: the warp and its gradient as XLA clusters
        # inside TF's runtime, TF's default path (both grids share a shape:
        # one compile per mode).
        prefix = f"{interpolation}/{padding_mode}/{align_corners}/{grid_name}"

        @tf.function
        def run(images, grid):
            with tf.GradientTape() as tape:
                tape.watch([images, grid])
                out = keras_stn.grid_sample(
                    images, grid, interpolation, padding_mode, align_corners)
                loss = tf.reduce_sum(out * golden["upstream"])
            return (out, *tape.gradient(loss, [images, grid]))

        out, grad_images, grad_grid = run(
            tf.constant(golden["images"]), tf.constant(golden[prefix + "/grid"]))
        options = (interpolation, padding_mode, align_corners)
        assert any(key[:2] == ("grid_sample", options) and cluster.compiled
                   for key, cluster in clusters._clusters.items())
        assert_close(out, golden[prefix + "/output"])
        assert_close(grad_images, golden[prefix + "/grad_images"])
        assert_close(grad_grid, golden[prefix + "/grad_grid"], kind="gradient")

    def test_theta_path_matches_torch(self, golden):
        for align_corners in (False, True):
            grid = keras_stn.affine_grid(golden["theta"], (4, 7), align_corners)
            assert_close(grid.numpy(), golden[f"bilinear/zeros/{align_corners}/theta/grid"])


class TestAgainstNumpyReference:
    @pytest.mark.parametrize("interpolation,padding_mode,align_corners", ALL_MODES)
    @pytest.mark.parametrize("image_size", [(1, 1), (1, 4), (5, 5), (6, 3)])
    def test_random_points(
        self, rng, interpolation, padding_mode, align_corners, image_size
    ):
        images = rng.normal(size=(2,) + image_size + (3,)).astype(np.float32)
        # Reach well outside, including several reflections.
        grid = rng.uniform(-4.5, 4.5, (2, 5, 6, 2)).astype(np.float32)
        out = keras_stn.grid_sample(
            images, grid, interpolation, padding_mode, align_corners
        )
        expected = reference.grid_sample(
            images, grid, interpolation, padding_mode, align_corners
        )
        assert_close(out.numpy(), expected)

    @pytest.mark.parametrize("padding_mode", PADDING_MODES)
    def test_half_pixel_outside_blends(self, padding_mode):
        # A sample half a pixel left of the image, on a pixel row.
        images = np.full((1, 2, 2, 1), 4.0, np.float32)
        x = -2.0  # pixel (x + 1) / 2 * (2 - 1) = -0.5 with aligned corners
        grid = np.array([[[[x, -1.0]]]], np.float32)
        out = keras_stn.grid_sample(images, grid, padding_mode=padding_mode,
                                    align_corners=True)
        expected = {"zeros": 2.0, "border": 4.0, "reflection": 4.0}
        np.testing.assert_allclose(out.numpy().ravel(), [expected[padding_mode]])

    def test_nearest_ties_round_to_even(self):
        images = np.arange(6, dtype=np.float32).reshape(1, 1, 6, 1)
        # align_corners=True, width 6: pixel = (x + 1) * 2.5.
        pixels = np.array([0.5, 1.5, 2.5, 3.5, 4.5])
        xs = pixels / 2.5 - 1.0
        grid = np.stack([xs, np.zeros_like(xs)], -1).reshape(1, 1, 5, 2)
        out = keras_stn.grid_sample(images, grid.astype(np.float32), "nearest",
                                    align_corners=True)
        np.testing.assert_array_equal(out.numpy().ravel(), [0, 2, 2, 4, 4])


class TestExactCases:
    @pytest.mark.parametrize("interpolation,padding_mode,align_corners", ALL_MODES)
    @pytest.mark.parametrize("size", [(5, 7), (6, 4), (1, 3), (9, 9), (28, 28),
                                      (61, 100)])
    def test_identity(self, rng, interpolation, padding_mode, align_corners, size):
        images = rng.uniform(size=(2,) + size + (3,)).astype(np.float32)
        grid = identity_grid(2, *size, align_corners)
        out = keras_stn.grid_sample(
            images, grid, interpolation, padding_mode, align_corners
        )
        assert_close(out.numpy(), images, kind="exact")

    @pytest.mark.parametrize("interpolation", INTERPOLATIONS)
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("shift", [(1, 0), (-2, 1), (3, -2)])
    def test_integer_translation(self, rng, interpolation, align_corners, shift):
        height, width = 6, 7
        dx, dy = shift
        images = rng.uniform(size=(1, height, width, 2)).astype(np.float32)
        # One pixel is 2 / (size - 1) normalised units with aligned corners,
        # 2 / size without.
        scale_x = 2.0 / (width - 1) if align_corners else 2.0 / width
        scale_y = 2.0 / (height - 1) if align_corners else 2.0 / height
        theta = np.array([[1, 0, dx * scale_x, 0, 1, dy * scale_y]], np.float32)
        grid = keras_stn.affine_grid(theta, (height, width), align_corners)
        out = keras_stn.grid_sample(images, grid, interpolation, "zeros",
                                    align_corners).numpy()
        # Output pixel (i, j) reads input pixel (i + dy, j + dx), else zero.
        expected = np.zeros_like(images)
        for i in range(height):
            for j in range(width):
                if 0 <= i + dy < height and 0 <= j + dx < width:
                    expected[0, i, j] = images[0, i + dy, j + dx]
        assert_close(out, expected, kind="exact")

    @pytest.mark.parametrize("interpolation", INTERPOLATIONS)
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("size", [5, 6])
    def test_quarter_turn(self, rng, interpolation, align_corners, size):
        images = rng.uniform(size=(1, size, size, 3)).astype(np.float32)
        # θ maps output (x, y) to input (-y, x).
        theta = np.array([[0, -1, 0, 1, 0, 0]], np.float32)
        grid = keras_stn.affine_grid(theta, (size, size), align_corners)
        out = keras_stn.grid_sample(images, grid, interpolation, "zeros",
                                    align_corners).numpy()
        expected = np.rot90(images, k=1, axes=(1, 2))
        assert_close(out, expected, kind="exact")

    @pytest.mark.parametrize("interpolation", INTERPOLATIONS)
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_half_turn(self, rng, interpolation, align_corners):
        images = rng.uniform(size=(2, 5, 8, 3)).astype(np.float32)
        theta = np.tile([[-1, 0, 0, 0, -1, 0]], (2, 1)).astype(np.float32)
        grid = keras_stn.affine_grid(theta, (5, 8), align_corners)
        out = keras_stn.grid_sample(images, grid, interpolation, "zeros",
                                    align_corners).numpy()
        assert_close(out, images[:, ::-1, ::-1], kind="exact")


class TestDtypes:
    def test_float16_images_keep_float16_and_precision(self, rng):
        images = rng.uniform(size=(2, 5, 6, 3)).astype(np.float16)
        grid = rng.uniform(-1.2, 1.2, (2, 4, 7, 2)).astype(np.float32)
        out = keras_stn.grid_sample(images, grid)
        assert out.dtype == tf.float16
        expected = reference.grid_sample(images, grid, "bilinear", "zeros", False)
        np.testing.assert_allclose(
            out.numpy().astype(np.float64), expected, **TOLERANCES["float16"]
        )

    def test_float16_grid_is_computed_in_float32(self, rng):
        # Pixel coordinates up to 255 in float16 would be off by up to 1/8
        # pixel; computed in float32 they are exact for these grid values.
        images = rng.uniform(size=(1, 256, 256, 1)).astype(np.float32)
        grid16 = rng.uniform(-1, 1, (1, 8, 8, 2)).astype(np.float16)
        out = keras_stn.grid_sample(images, grid16)
        expected = reference.grid_sample(
            images, grid16.astype(np.float64), "bilinear", "zeros", False
        )
        assert_close(out.numpy(), expected)

    def test_float64_end_to_end(self, rng):
        images = rng.normal(size=(1, 4, 5, 2))
        grid = rng.uniform(-1.2, 1.2, (1, 3, 3, 2))
        out = keras_stn.grid_sample(images, grid, padding_mode="reflection")
        assert out.dtype == tf.float64
        expected = reference.grid_sample(images, grid, "bilinear", "reflection",
                                         False)
        np.testing.assert_allclose(out.numpy(), expected, **TOLERANCES["float64"])


def _cells_are_clear(theta, size, image_size, align_corners, margin=0.05):
    """True if every sample of `theta` lies `margin` pixels off integer lines
    and inside the image, so small finite differences stay in one cell."""
    grid = reference.affine_grid(theta, *size, align_corners)
    pixel_x = reference.to_pixel(grid[..., 0], image_size[1], align_corners)
    pixel_y = reference.to_pixel(grid[..., 1], image_size[0], align_corners)
    frac = np.concatenate([(pixel_x % 1).ravel(), (pixel_y % 1).ravel()])
    inside = (
        (pixel_x > 0).all() and (pixel_x < image_size[1] - 1).all()
        and (pixel_y > 0).all() and (pixel_y < image_size[0] - 1).all()
    )
    return inside and ((frac > margin) & (frac < 1 - margin)).all()


class TestGradients:
    @pytest.mark.parametrize("padding_mode", PADDING_MODES)
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_numerical_gradients_images_and_theta(self, padding_mode, align_corners):
        image_size, size = (6, 7), (3, 4)
        rng = np.random.default_rng(7)
        # Deterministic search for a θ whose samples sit off pixel lines.
        while True:
            theta = np.array([[0.8, 0.1, 0.05, -0.1, 0.7, 0.02]])
            theta = theta + rng.normal(0, 0.08, (1, 6))
            if _cells_are_clear(theta, size, image_size, align_corners):
                break
        images = rng.normal(size=(1,) + image_size + (2,))

        def fn(images, theta):
            grid = keras_stn.affine_grid(theta, size, align_corners)
            return keras_stn.grid_sample(images, grid, "bilinear", padding_mode,
                                         align_corners)

        theoretical, numerical = tf.test.compute_gradient(
            fn, [tf.constant(images), tf.constant(theta)], delta=1e-4
        )
        for analytic, numeric in zip(theoretical, numerical):
            # Inside a cell the output is a quadratic in θ: central
            # differences are exact up to float64 rounding over delta.
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
        # θ must receive a real, non-zero gradient.
        assert np.abs(theoretical[1]).max() > 1e-2

    def test_gradient_wrt_grid_off_integer_points(self):
        rng = np.random.default_rng(3)
        images = rng.normal(size=(1, 5, 6, 2))
        # Pixel coordinates integer + U(0.1, 0.9), also outside the image.
        pixel = rng.integers(-2, 6, (1, 4, 4, 2)) + rng.uniform(0.1, 0.9, (1, 4, 4, 2))
        grid = np.empty_like(pixel)
        grid[..., 0] = (2 * pixel[..., 0] + 1) / 6 - 1
        grid[..., 1] = (2 * pixel[..., 1] + 1) / 5 - 1
        for interpolation, padding_mode in itertools.product(
                ("bilinear", "bicubic"), PADDING_MODES):
            # Traced once: the 2 × 32 perturbed calls and 32 backward passes
            # then run as one graph each instead of op by op; the runtime
            # formulation (float64 clusters would compile six times for
            # what tests/test_clusters.py already holds them to).
            with keras_stn.use_jit_compile(False):
                theoretical, numerical = tf.test.compute_gradient(
                    tf.function(lambda g: keras_stn.grid_sample(
                        images, g, interpolation, padding_mode)),
                    [tf.constant(grid)], delta=1e-5,
                )
            # Bilinear: exact up to rounding; bicubic: the central
            # difference's O(delta²) error on a cubic, ~1e-10 here.
            np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-6,
                                       atol=1e-8)


class TestHostileGrids:
    @pytest.mark.parametrize("interpolation,padding_mode,align_corners", ALL_MODES)
    def test_non_finite_and_huge_coordinates(
        self, rng, interpolation, padding_mode, align_corners
    ):
        images = rng.uniform(size=(1, 5, 6, 2)).astype(np.float32)
        values = [np.nan, np.inf, -np.inf, 1e30, -1e30, 3e38, 0.0]
        grid = np.array(list(itertools.product(values, values)), np.float32)
        grid = grid.reshape(1, 7, 7, 2)
        args = (interpolation, padding_mode, align_corners)
        outputs = [
            keras_stn.grid_sample(images, grid, *args),
            tf.function(keras_stn.grid_sample)(images, grid, *args),
            tf.function(keras_stn.grid_sample, jit_compile=True)(images, grid, *args),
        ]
        for out in outputs:
            out = out.numpy()
            assert np.isfinite(out).all()
            if interpolation == "bicubic":
                # Cubic weights sum to 1 with |weights| summing to < 1.6.
                assert np.abs(out).max() <= 1.6 * images.max()
            else:
                # Everything read is a convex blend of pixels (or zero).
                assert out.min() >= 0.0 and out.max() <= images.max() + 1e-6
        if padding_mode == "zeros":
            # Far-away and NaN points read zero; only (0, 0) is inside.
            out = outputs[0].numpy().reshape(49, 2)
            assert np.count_nonzero(np.abs(out).sum(-1)) <= 1


class TestVolumes:
    """5-D grid_sample / affine_grid against PyTorch's, and exact cases."""

    @pytest.mark.parametrize("grid_name", ["theta", "uniform"])
    @pytest.mark.parametrize("interpolation,padding_mode,align_corners",
                             list(itertools.product(
                                 ("bilinear", "nearest"), PADDING_MODES,
                                 (False, True))))
    def test_matches_torch_golden(self, golden, interpolation, padding_mode,
                                  align_corners, grid_name):
        prefix = f"3d/{interpolation}/{padding_mode}/{align_corners}/{grid_name}"
        volumes = tf.constant(golden["volumes"])
        grid = tf.constant(golden[prefix + "/grid"])
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([volumes, grid])
            out = keras_stn.grid_sample(volumes, grid, interpolation,
                                        padding_mode, align_corners)
            loss = tf.reduce_sum(out * golden["volume_upstream"])
        tol = TOLERANCES["float32"]
        np.testing.assert_allclose(out.numpy(), golden[prefix + "/output"], **tol)
        np.testing.assert_allclose(tape.gradient(loss, volumes).numpy(),
                                   golden[prefix + "/grad_images"], **tol)
        grad_grid = tape.gradient(loss, grid)
        grad_grid = np.zeros(grid.shape) if grad_grid is None else grad_grid
        assert_close(grad_grid, golden[prefix + "/grad_grid"], kind="gradient")

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_affine_grid_matches_torch_golden(self, golden, align_corners):
        for size in ((1, 1, 1), (2, 3, 4), (3, 4, 5)):
            prefix = "affine_grid_3d/{}/{}/{}/{}".format(align_corners, *size)
            with degenerate_grid_warning(size, align_corners):
                grid = keras_stn.affine_grid(golden[prefix + "/theta"], size,
                                             align_corners)
            assert grid.shape == (2,) + size + (3,)
            assert_close(grid.numpy(), golden[prefix + "/grid"])

    @pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_identity_and_integer_shift(self, rng, interpolation, align_corners):
        volumes = rng.uniform(size=(2, 4, 5, 6, 2)).astype(np.float32)
        identity = np.tile(np.eye(3, 4, dtype=np.float32).ravel(), (2, 1))
        grid = keras_stn.affine_grid(identity, (4, 5, 6), align_corners)
        out = keras_stn.grid_sample(volumes, grid, interpolation,
                                    align_corners=align_corners)
        assert_close(out.numpy(), volumes, kind="exact")
        # Shift by one voxel along z (depth): output slice k reads k + 1.
        step = 2.0 / (4 - 1) if align_corners else 2.0 / 4
        shifted = identity.copy()
        shifted[:, 11] = step
        grid = keras_stn.affine_grid(shifted, (4, 5, 6), align_corners)
        out = keras_stn.grid_sample(volumes, grid, interpolation,
                                    align_corners=align_corners).numpy()
        assert_close(out[:, :3], volumes[:, 1:], kind="exact")
        assert_close(out[:, 3], 0.0, kind="exact")

    def test_theta_gradient_numerically(self):
        rng = np.random.default_rng(5)
        volumes = rng.normal(size=(1, 4, 5, 6, 1))
        theta = np.eye(3, 4).ravel()[None] * 0.8 + rng.normal(0, 0.02, (1, 12))

        def fn(volumes, theta):
            grid = keras_stn.affine_grid(theta, (2, 2, 3))
            return keras_stn.grid_sample(volumes, grid, "bilinear", "border")

        theoretical, numerical = tf.test.compute_gradient(
            fn, [tf.constant(volumes), tf.constant(theta)], delta=1e-5)
        for analytic, numeric in zip(theoretical, numerical):
            np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)
        assert np.abs(theoretical[1]).max() > 1e-2

    def test_hostile_grid_is_finite(self):
        volumes = np.ones((1, 3, 4, 5, 1), np.float32)
        grid = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0],
                        np.float32)
        grid = np.stack(np.meshgrid(grid, grid, grid), -1).reshape(1, 6, 6, 6, 3)
        for padding_mode in PADDING_MODES:
            for interpolation in ("bilinear", "nearest"):
                out = keras_stn.grid_sample(volumes, grid, interpolation,
                                            padding_mode).numpy()
                assert np.isfinite(out).all() and out.max() <= 1.0 + 1e-6

    def test_bad_volume_arguments(self):
        volumes = np.zeros((1, 3, 4, 5, 1), np.float32)
        with pytest.raises(ValueError, match=r"grid.*\(x, y, z\)"):
            keras_stn.grid_sample(volumes, np.zeros((1, 2, 2, 2, 2), "f4"))
        with pytest.raises(ValueError, match="bicubic.*2-D"):
            keras_stn.grid_sample(volumes, np.zeros((1, 2, 2, 2, 3), "f4"),
                                  interpolation="bicubic")
        with pytest.raises(ValueError, match=r"theta.*\[batch, 3, 4\]"):
            keras_stn.affine_grid(np.zeros((1, 6), "f4"), (2, 3, 4))
