"""PyTorch's own grid_sample / affine_grid tests, translated to keras_stn.

Each test names the upstream test it ports (pytorch/pytorch,
`test/test_nn.py`). Expected values are PyTorch's hard-coded ground truth,
copied from the upstream test, never recomputed with our code. Layout is
translated: NCHW inputs become NHWC, `(N, C, H, W)` sizes become `(H, W)`.
Values are checked in eager mode, under `tf.function`, under XLA, through a
SavedModel and through TFLite; gradients wherever TensorFlow differentiates.
"""

import itertools
import math
import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras_stn
from tests.conftest import degenerate_grid_warning

MODES = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection")
COMBINATIONS = list(itertools.product(MODES, PADDINGS, (True, False)))

# test_grid_sample: `input = torch.arange(1., 11).view(1, 1, 2, 5)` and this
# [1, 2, 5, 2] grid.
KNOWN_INPUT = np.arange(1.0, 11.0, dtype=np.float32).reshape(1, 2, 5, 1)
KNOWN_GRID = np.array(
    [[[-0.9, -4.1], [0, 0.2000], [1, -1], [-0.333, 1e-6], [0.5, 1.0]],
     [[-1.0, -0.5], [0, 0.3333], [1, -1], [-0.200, 1e-6], [1.5, 0.5]]],
    np.float32).reshape(1, 2, 5, 2)

# Upstream `groundtruth` of the forward pass, keyed (mode, padding_mode,
# align_corners); each is [2, 5] (the [1, 1, 2, 5] output).
FORWARD = {
    ("bilinear", "zeros", True): [
        [0.0000, 6.0000000000, 5.0000, 4.8340, 9.0000],
        [2.2500, 6.3332500450, 5.0000, 5.1000, 0.0000]],
    ("bilinear", "zeros", False): [
        [0.0000, 6.5000000000, 1.2500, 4.6675000191, 4.6250],
        [0.5000, 7.1665000916, 1.2500, 5.0000000000, 0.0000]],
    ("bilinear", "border", True): [
        [1.2000, 6.0000000000, 5.0000, 4.8340, 9.0000],
        [2.2500, 6.3332500450, 5.0000, 5.1000, 8.7500]],
    ("bilinear", "border", False): [
        [1.0000, 6.5000000000, 5.0000, 4.6675000191, 9.2500],
        [1.0000, 7.1665000916, 5.0000, 5.0000000000, 10.0000]],
    ("bilinear", "reflection", True): [
        [3.4500, 6.0000000000, 5.0000, 4.8340, 9.0000],
        [2.2500, 6.3332500450, 5.0000, 5.1000, 7.7500]],
    ("bilinear", "reflection", False): [
        [3.0000004768, 6.5000000000, 5.0000, 4.6675000191, 9.2500],
        [1.0000000000, 7.1665000916, 5.0000, 5.0000000000, 9.2500]],
    ("nearest", "zeros", True): [[0., 8., 5., 7., 9.], [1., 8., 5., 8., 0.]],
    ("nearest", "zeros", False): [[0., 8., 5., 7., 0.], [1., 8., 5., 8., 0.]],
    ("nearest", "border", True): [[1., 8., 5., 7., 9.], [1., 8., 5., 8., 10.]],
    ("nearest", "border", False): [[1., 8., 5., 7., 9.], [1., 8., 5., 8., 10.]],
    ("nearest", "reflection", True): [
        [1., 8., 5., 7., 9.], [1., 8., 5., 8., 9.]],
    ("nearest", "reflection", False): [
        [1., 8., 5., 7., 9.], [1., 8., 5., 8., 9.]],
    ("bicubic", "zeros", True): [
        [-0.10424726, 7.1400003, 5.0000, 5.7842274, 9.0000],
        [2.4492188, 7.4814040, 5.0000, 6.0277520, 0.0000]],
    ("bicubic", "zeros", False): [
        [0.00000, 7.6287503, 1.0625, 5.5977230, 5.3270264],
        [0.40625, 8.0288770, 1.0625, 5.9375067, -0.3515625]],
    ("bicubic", "border", True): [
        [1.1520010, 6.0599990, 5.0000, 4.870930, 9.0000000],
        [2.1328125, 6.4258375, 5.0000, 5.076003, 8.8671875]],
    ("bicubic", "border", False): [
        [0.894531, 6.6050020, 4.625, 4.7138715, 9.800781],
        [0.906250, 7.2822485, 4.625, 5.0000052, 10.00000]],
    ("bicubic", "reflection", True): [
        [3.1822524, 6.239998, 5.0000, 4.8709273, 9.00000],
        [1.7812500, 6.703594, 5.0000, 5.0760007, 8.21875]],
    ("bicubic", "reflection", False): [
        [2.7993753, 6.6050020, 4.25, 4.7138715, 10.269531],
        [0.8125000, 7.2822485, 4.25, 5.0000052, 9.332031]],
}

# test_grid_sample, "explicit check for gradient edge cases": the input
# `torch.arange(0., 5).expand((1, 1, 5, 5))` (every row 0..4), this [1, 2, 4,
# 2] grid on the corners and borders, and the loss `output.sum()`.
EDGE_INPUT = np.broadcast_to(
    np.arange(5.0, dtype=np.float32), (5, 5)).reshape(1, 5, 5, 1).copy()
EDGE_GRID = np.array(
    [[[1.0, 1.0], [1.0, -1.0], [0.8, 0.8], [0.8, -0.8]],
     [[-1.0, -1.0], [-1.0, 1.0], [-0.8, -0.8], [-0.8, 0.8]]],
    np.float32).reshape(1, 2, 4, 2)
_ZERO_GRADIENT = [[[-0., -0.], [-0., 0.], [-0., -0.], [-0., 0.]],
                  [[0., 0.], [0., 0.], [0., 0.], [0., 0.]]]
# Upstream gradient `groundtruth` of the grid, [2, 4, 2] each.
GRID_GRADIENT = {
    ("bilinear", "zeros", True): [
        [[-8., -8.], [-8., 0.], [2., 0.], [2., 0.]],
        [[2., 0.], [2., 0.], [2., 0.], [2., 0.]]],
    ("bilinear", "zeros", False): [
        [[-5., -5.], [-5., 5.], [-10., -10.], [-10., 10.]],
        [[0., 0.], [0., 0.], [0., 0.], [0., 0.]]],
    ("bilinear", "border", True): [
        [[-0., -0.], [-0., 0.], [2., 0.], [2., 0.]],
        [[0., 0.], [0., 0.], [2., 0.], [2., 0.]]],
    ("bilinear", "border", False): _ZERO_GRADIENT,
    ("bilinear", "reflection", True): [
        [[-0., -0.], [-0., 0.], [2., 0.], [2., 0.]],
        [[0., 0.], [0., 0.], [2., 0.], [2., 0.]]],
    ("bilinear", "reflection", False): _ZERO_GRADIENT,
    **{("nearest", padding, align): _ZERO_GRADIENT
       for padding in PADDINGS for align in (True, False)},
    ("bicubic", "zeros", True): [
        [[-4.5, -6.], [-4.5, 6.], [2.725679, 0.740878], [2.725679, -0.740878]],
        [[1.5, 0.], [1.5, 0.], [1.927921, -0.05688], [1.927921, 0.05688]]],
    ("bicubic", "zeros", False): [
        [[-5.859375, -5.888672], [-5.859375, 5.888672], [-5.6250, -7.5000],
         [-5.6250, 7.5000]],
        [[-0.234375, -0.263672], [-0.234375, 0.263672], [1.8750, 0.],
         [1.8750, 0.]]],
    ("bicubic", "border", True): [
        [[1.5, 0.], [1.5, 0.], [1.74, 0.], [1.74, 0.]],
        [[1.5, 0.], [1.5, 0.], [1.74, 0.], [1.74, 0.]]],
    ("bicubic", "border", False): [
        [[-0.46875, 0.], [-0.46875, 0.], [1.8750, 0.], [1.8750, 0.]],
        [[-0.46875, 0.], [-0.46875, 0.], [1.8750, 0.], [1.8750, 0.]]],
    ("bicubic", "reflection", True): [
        [[0., 0.], [0., 0.], [1.92, 0.], [1.92, 0.]],
        [[0., 0.], [0., 0.], [1.92, 0.], [1.92, 0.]]],
    ("bicubic", "reflection", False): [
        [[0., 0.], [0., 0.], [1.875, 0.], [1.875, 0.]],
        [[0., 0.], [0., 0.], [1.875, 0.], [1.875, 0.]]],
}

# Upstream tolerance of both comparisons: atol=1e-5, rtol=0.
ATOL = 1e-5


def _sample(images, grid, mode, padding, align):
    return keras_stn.grid_sample(images, grid, mode, padding, align)


def _run(execution, function, *args):
    """`function(*args)` eagerly, traced with unknown batch, or under XLA."""
    args = [tf.constant(arg) for arg in args]
    if execution == "eager":
        return function(*args)
    if execution == "function":
        specs = [tf.TensorSpec((None,) + arg.shape[1:], tf.float32)
                 for arg in args]
        return tf.function(function, input_signature=specs)(*args)
    return tf.function(function, jit_compile=True)(*args)


EXECUTIONS = ("eager", "function", "xla")


class TestGridSampleGroundTruth:
    """test_grid_sample: known input on CPU, and the gradient edge cases."""

    @pytest.mark.parametrize("execution", EXECUTIONS)
    @pytest.mark.parametrize("mode,padding,align", COMBINATIONS)
    def test_forward(self, execution, mode, padding, align):
        out = _run(execution,
                   lambda i, g: _sample(i, g, mode, padding, align),
                   KNOWN_INPUT, KNOWN_GRID)
        np.testing.assert_allclose(
            out.numpy()[0, ..., 0], FORWARD[mode, padding, align],
            rtol=0, atol=ATOL)

    @pytest.mark.parametrize("execution", EXECUTIONS)
    @pytest.mark.parametrize("mode,padding,align", COMBINATIONS)
    def test_grid_gradient_edge_cases(self, execution, mode, padding, align):
        def grid_gradient(images, grid):
            with tf.GradientTape() as tape:
                tape.watch(grid)
                loss = tf.reduce_sum(_sample(images, grid, mode, padding,
                                             align))
            return tape.gradient(loss, grid)

        gradient = _run(execution, grid_gradient, EDGE_INPUT, EDGE_GRID)
        np.testing.assert_allclose(
            gradient.numpy()[0], GRID_GRADIENT[mode, padding, align],
            rtol=0, atol=ATOL)

    def test_forward_through_saved_model_and_tflite(self, tmp_path):
        """All 18 ground truths from one SavedModel and one TFLite file."""

        class AllModes(tf.Module):
            @tf.function(input_signature=[
                tf.TensorSpec([None, 2, 5, 1], tf.float32),
                tf.TensorSpec([None, 2, 5, 2], tf.float32)])
            def __call__(self, images, grid):
                return tf.stack([_sample(images, grid, *combination)
                                 for combination in COMBINATIONS], 0)

        expected = np.array([FORWARD[c] for c in COMBINATIONS])
        path = str(tmp_path / "saved_model")
        tf.saved_model.save(AllModes(), path)
        restored = tf.saved_model.load(path)
        out = restored(tf.constant(KNOWN_INPUT), tf.constant(KNOWN_GRID))
        np.testing.assert_allclose(out.numpy()[:, 0, ..., 0], expected,
                                   rtol=0, atol=ATOL)

        converter = tf.lite.TFLiteConverter.from_saved_model(path)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        tflite_path = str(tmp_path / "all_modes.tflite")
        with open(tflite_path, "wb") as file:
            file.write(converter.convert())
        assert not [op for op in keras_stn.tflite_ops(tflite_path)
                    if op.startswith("CUSTOM")]
        out = keras_stn.run_tflite(tflite_path, {"images": KNOWN_INPUT,
                                                "grid": KNOWN_GRID})
        np.testing.assert_allclose(out[:, 0, ..., 0], expected, rtol=0,
                                   atol=ATOL)


class TestGridSampleEmpty:
    """test_grid_sample / test_grid_sample_3d: "testing empty grid", "empty
    channel" and "empty batch" keep their shapes, forward and backward."""

    @pytest.mark.parametrize("mode,padding,align", COMBINATIONS)
    @pytest.mark.parametrize("case", ["grid", "channel", "batch"])
    def test_2d(self, rng, mode, padding, align, case):
        batch, channels, height, width = 3, 4, 5, 6
        out_height, out_width = 4, 7
        if case == "grid":
            out_height = 0
        elif case == "channel":
            channels = 0
        else:
            batch = 0
        images = tf.constant(rng.normal(
            size=(batch, height, width, channels)).astype(np.float32))
        grid = tf.constant(rng.uniform(
            -1.2, 1.2, (batch, out_height, out_width, 2)).astype(np.float32))
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([images, grid])
            out = _sample(images, grid, mode, padding, align)
            loss = tf.reduce_sum(out)
        assert out.shape == (batch, out_height, out_width, channels)
        d_images, d_grid = tape.gradient(loss, [images, grid])
        for gradient, tensor in ((d_images, images), (d_grid, grid)):
            if gradient is not None:
                assert gradient.shape == tensor.shape

    @pytest.mark.parametrize("mode", ["bilinear", "nearest"])
    @pytest.mark.parametrize("case", ["grid", "channel", "batch"])
    def test_3d(self, rng, mode, case):
        shape = dict(batch=2, channels=3, out_height=4)
        if case == "grid":
            shape["out_height"] = 0
        elif case == "channel":
            shape["channels"] = 0
        else:
            shape["batch"] = 0
        volumes = rng.normal(size=(shape["batch"], 3, 4, 5,
                                   shape["channels"])).astype(np.float32)
        grid = rng.uniform(-1, 1, (shape["batch"], 2, shape["out_height"], 3,
                                   3)).astype(np.float32)
        out = keras_stn.grid_sample(volumes, grid, mode)
        assert out.shape == (shape["batch"], 2, shape["out_height"], 3,
                             shape["channels"])

    def test_zero_channels_dynamic(self):
        """Zero channels known only at run time (the reshape cannot infer)."""
        fn = tf.function(
            lambda images, grid: keras_stn.grid_sample(images, grid),
            input_signature=[tf.TensorSpec([None, None, None, None]),
                             tf.TensorSpec([None, None, None, 2])])
        out = fn(tf.zeros([2, 4, 4, 0]), tf.zeros([2, 3, 3, 2]))
        assert out.shape == (2, 3, 3, 0)


class TestGridSampleErrorChecking:
    """test_grid_sample_error_checking, each torch error as ours."""

    def setup_method(self):
        self.images = np.zeros((1, 2, 2, 1), np.float32)
        self.grid = np.zeros((1, 1, 1, 2), np.float32)

    def test_no_error(self):
        keras_stn.grid_sample(self.images, self.grid, align_corners=False)

    def test_bad_mode(self):
        with pytest.raises(ValueError, match="interpolation='garbage'"):
            keras_stn.grid_sample(self.images, self.grid, "garbage")

    def test_bad_padding_mode(self):
        with pytest.raises(ValueError, match="padding_mode='garbage'"):
            keras_stn.grid_sample(self.images, self.grid,
                                  padding_mode="garbage")

    def test_input_rank_three(self):
        # torch: "expected grid to have size 1 in last dimension" for input[0]
        with pytest.raises(ValueError, match="rank-4"):
            keras_stn.grid_sample(self.images[0], self.grid)

    def test_3d_grid_for_2d_input(self):
        with pytest.raises(ValueError, match="grid.shape"):
            keras_stn.grid_sample(self.images,
                                  np.zeros((1, 1, 1, 1, 3), np.float32))

    def test_batch_mismatch(self):
        with pytest.raises(ValueError, match="same batch size"):
            keras_stn.grid_sample(self.images,
                                  np.zeros((2, 1, 1, 2), np.float32))

    def test_grid_last_axis_three(self):
        with pytest.raises(ValueError, match="grid.shape"):
            keras_stn.grid_sample(self.images,
                                  np.zeros((1, 1, 1, 3), np.float32))

    @pytest.mark.parametrize("shape", [(1, 0, 2, 1), (2, 0, 0, 1),
                                       (1, 2, 0, 3), (1, 2, 0, 2, 1)])
    @pytest.mark.parametrize("mode", MODES)
    def test_empty_spatial_dimensions(self, shape, mode):
        if mode == "bicubic" and len(shape) == 5:
            return
        grid = np.zeros((shape[0], 1, 1, len(shape) - 2) if len(shape) == 4
                        else (shape[0], 1, 1, 1, 3), np.float32)
        with pytest.raises(ValueError, match="non-empty spatial"):
            keras_stn.grid_sample(np.zeros(shape, np.float32), grid, mode)

    def test_bicubic_volume(self):
        with pytest.raises(ValueError, match="'bicubic' samples 2-D"):
            keras_stn.grid_sample(np.zeros((1, 2, 2, 2, 1), np.float32),
                                  np.zeros((1, 1, 1, 1, 3), np.float32),
                                  "bicubic")


class TestAffineGridErrorChecking:
    """test_affine_grid_error_checking."""

    def test_warns_for_one_pixel_axis_with_align_corners(self):
        theta = np.eye(2, 3, dtype=np.float32)[None]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            keras_stn.affine_grid(theta, (2, 1), align_corners=False)
        with pytest.warns(UserWarning, match="one-pixel axis"):
            keras_stn.affine_grid(theta, (2, 1), align_corners=True)
        with pytest.warns(UserWarning, match="one-pixel axis"):
            keras_stn.affine_grid(np.eye(3, 4, dtype=np.float32)[None],
                                  (3, 2, 1), align_corners=True)

    def test_integer_theta(self):
        with pytest.raises(TypeError, match="floating"):
            keras_stn.affine_grid(np.zeros((1, 2, 3), np.int32), (2, 2))

    @pytest.mark.parametrize("shape", [(2, 3), (1, 1, 2, 3), (1, 4, 3),
                                       (1, 2, 6)])
    def test_bad_2d_theta_shape(self, shape):
        with pytest.raises(ValueError, match="theta"):
            keras_stn.affine_grid(np.zeros(shape, np.float32), (2, 2))

    @pytest.mark.parametrize("shape", [(3, 4), (1, 1, 3, 4), (1, 6, 4),
                                       (1, 3, 8)])
    def test_bad_3d_theta_shape(self, shape):
        with pytest.raises(ValueError, match="theta"):
            keras_stn.affine_grid(np.zeros(shape, np.float32), (2, 2, 2))

    @pytest.mark.parametrize("size", [(2,), (1, 2, 2, 2)])
    def test_only_2d_and_3d_sizes(self, size):
        with pytest.raises(ValueError, match="size"):
            keras_stn.affine_grid(np.zeros((1, 2, 3), np.float32), size)


class TestAffineGridGroundTruth:
    """test_affine_grid and test_affine_grid_3d: known input on CPU."""

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_2d(self, dtype):
        theta = np.arange(1.0, 7.0, dtype=dtype).reshape(1, 2, 3)
        out = keras_stn.affine_grid(theta, (2, 2), align_corners=True)
        np.testing.assert_array_equal(
            out.numpy().reshape(2, 2, 2),
            [[[0., -3.], [2., 5.]], [[4., 7.], [6., 15.]]])
        out = keras_stn.affine_grid(theta, (2, 2), align_corners=False)
        np.testing.assert_array_equal(
            out.numpy().reshape(2, 2, 2),
            [[[1.5, 1.5], [2.5, 5.5]], [[3.5, 6.5], [4.5, 10.5]]])

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_3d(self, dtype):
        theta = np.arange(1.0, 13.0, dtype=dtype).reshape(1, 3, 4)
        out = keras_stn.affine_grid(theta, (2, 2, 2), align_corners=True)
        np.testing.assert_array_equal(
            out.numpy().reshape(2, 2, 2, 3),
            [[[[-2., -10., -18.], [0., 0., 0.]], [[2., 2., 2.],
                                                  [4., 12., 20.]]],
             [[[4., 4., 4.], [6., 14., 22.]], [[8., 16., 24.],
                                               [10., 26., 42.]]]])
        out = keras_stn.affine_grid(theta, (2, 2, 2), align_corners=False)
        np.testing.assert_array_equal(
            out.numpy().reshape(2, 2, 2, 3),
            [[[[1., -1., -3.], [2., 4., 6.]], [[3., 5., 7.], [4., 10., 16.]]],
             [[[4., 6., 8.], [5., 11., 17.]], [[6., 12., 18.],
                                               [7., 17., 27.]]]])

    @pytest.mark.parametrize("align", [True, False])
    @pytest.mark.parametrize("size", [(1, 4), (3, 1), (5, 6), (2, 3, 4),
                                      (1, 2, 1)])
    def test_gradcheck(self, align, size):
        """The gradcheck of both tests: θ gradient against float64 central
        differences (exact here: the grid is linear in θ)."""
        rows = len(size)
        theta = np.random.default_rng(0).normal(
            size=(3, rows, rows + 1))
        with degenerate_grid_warning(size, align):
            theoretical, numerical = tf.test.compute_gradient(
                lambda t: keras_stn.affine_grid(t, size, align),
                [tf.constant(theta)])
        np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-8)


class TestNearestRoundingConsistency:
    """test_grid_sample_nearest_neighbor_rounding_mode_consistency: 2-D x,
    2-D y and 3-D x, y, z nearest sampling of the same line agree exactly,
    at inquiry points 0, 0.1, …, 9 pixels (with their float error)."""

    @pytest.mark.parametrize("padding", PADDINGS)
    @pytest.mark.parametrize("align", [True, False])
    def test_consistency(self, padding, align):
        test_size, other_size = 10, 9
        pixels = np.arange(0, test_size - 1 + 0.1, 0.1, dtype=np.float32)
        if align:
            inquiry = 2 * pixels / (test_size - 1) - 1
        else:
            inquiry = (pixels * 2 + 1) / test_size - 1
        inquiry = inquiry.astype(np.float32)
        fixed = np.full_like(inquiry, 0.5)
        line = np.random.default_rng(0).uniform(size=test_size).astype(
            np.float32)

        def sample(images, grid):
            return keras_stn.grid_sample(images, grid, "nearest", padding,
                                         align).numpy().ravel()

        image_x = np.broadcast_to(line, (other_size, test_size))
        grid_x = np.stack([inquiry, fixed], -1)
        out_x = sample(image_x[None, ..., None], grid_x[None, None])
        out_y = sample(image_x.T[None, ..., None],
                       grid_x[None, None][..., ::-1])
        np.testing.assert_array_equal(out_x, out_y)
        volume_x = np.broadcast_to(line, (other_size, other_size, test_size))
        grid_3d = np.stack([inquiry, fixed, fixed], -1)[None, None, None]
        out_3d_x = sample(volume_x[None, ..., None], grid_3d)
        np.testing.assert_array_equal(out_x, out_3d_x)
        out_3d_y = sample(np.swapaxes(volume_x, 2, 1)[None, ..., None],
                          grid_3d[..., [1, 0, 2]])
        np.testing.assert_array_equal(out_x, out_3d_y)
        out_3d_z = sample(np.swapaxes(volume_x, 2, 0)[None, ..., None],
                          grid_3d[..., [1, 2, 0]])
        np.testing.assert_array_equal(out_x, out_3d_z)


class TestNanInf:
    """test_grid_sample_nan_inf: a NaN or infinite coordinate reads as
    outside (zeros of a zero image), in every padding mode; extended here
    to every interpolation, to ±Inf and to the gradients, which must stay
    finite."""

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("padding", PADDINGS)
    def test_nan_inf(self, dtype, mode, padding):
        images = tf.zeros([1, 3, 3, 1], dtype)
        grid = tf.constant([[[[math.nan, 0], [0, math.inf], [-math.inf, 1],
                              [1e30, -1e30]]]], dtype)
        with tf.GradientTape() as tape:
            tape.watch([images, grid])
            out = keras_stn.grid_sample(images, grid, mode, padding,
                                        align_corners=False)
        np.testing.assert_array_equal(out.numpy(), np.zeros([1, 1, 4, 1]))
        for gradient in tape.gradient(out, [images, grid]):
            assert np.isfinite(gradient.numpy()).all()
