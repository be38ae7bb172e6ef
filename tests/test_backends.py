"""Every Keras backend: the JAX and PyTorch paths against the TensorFlow one.

Run under each backend (`KERAS_BACKEND=jax pytest`, `KERAS_BACKEND=torch
pytest`). A TensorFlow tensor always takes the TensorFlow path, whatever the
Keras backend, so each test computes its reference in the same process from
the same NumPy inputs: values and gradients at random points, and at the
kinks (pixel centres at the identity θ, half pixels, the border, outside),
where a corner chosen on the wrong side changes a derivative by O(1).

Tolerances: float32 sampling of [0, 1] images agrees to a few ulps of its
terms (atol 1e-5; the TF path snaps fractions within size·2⁻²⁰ of 0 or 1,
which PyTorch's kernels do not, worth ≤ 3e-6 here); derivatives with respect
to the grid are scaled by size / 2 (atol 1e-4 + rtol 1e-4).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_stn
from keras_stn.core.meshgrid import homogeneous_meshgrid as _homogeneous_meshgrid
from tests import reference
from tests.autodiff import backend_vjp
from tests.autodiff import tensorflow_vjp
from tests.conftest import REPO_ROOT
from tests.conftest import mnist_dir

BACKEND = keras.backend.backend()
other_backend = pytest.mark.skipif(
    BACKEND == "tensorflow",
    reason="compares the JAX or PyTorch path with the TensorFlow one; run "
    "with KERAS_BACKEND=jax or torch")
MODES = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection")
VALUE_ATOL = 1e-5
GRAD_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


# -- Differentiating on each backend ----------------------------------------


def compare(function, arrays, grad_tolerance=GRAD_TOLERANCE, seed=0,
            value_atol=VALUE_ATOL):
    """Values and gradients (for a random cotangent) of `function` on the
    backend against the TensorFlow path."""
    rng = np.random.default_rng(seed)
    # The cotangent needs the output's shape: one forward on TF first.
    value_tf = function(*[tf.constant(a) for a in arrays]).numpy()
    cotangent = rng.uniform(-1, 1, value_tf.shape).astype(value_tf.dtype)
    expected_value, expected_grads = tensorflow_vjp(function, arrays, cotangent)
    value, grads = backend_vjp(function, arrays, cotangent)
    np.testing.assert_allclose(value, expected_value, atol=value_atol, rtol=0)
    for grad, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(grad, expected, **grad_tolerance)
    return value, grads


def kink_grid(out_height, out_width, in_height, in_width, seed=0):
    """A `[2, out_h, out_w, 2]` grid of pixel centres (the identity's
    meshgrid), half pixels, the border, just and far outside, and random
    points, in normalised units for an input of `in_height × in_width`."""
    rng = np.random.default_rng(seed)
    base = _homogeneous_meshgrid((out_height, out_width), False)
    identity = base[:, :2].reshape(out_height, out_width, 2)
    size = np.array([in_width, in_height], np.float32)
    half_pixel = identity + (1.0 / size).astype(np.float32)
    special = np.array([-1.0, 1.0, -1.0 + 1.0 / in_width, 1.0 - 1.0 / in_width,
                        -1.3, 1.3, -3.0, 3.0, 0.0], np.float32)
    picks = rng.choice(special, size=(out_height, out_width, 2))
    random = rng.uniform(-1.2, 1.2, (out_height, out_width, 2))
    first = np.where(rng.uniform(size=(out_height, out_width, 1)) < 0.5,
                     identity, half_pixel)
    second = np.where(rng.uniform(size=(out_height, out_width, 1)) < 0.5,
                      picks, random)
    return np.stack([first, second]).astype(np.float32)


# -- The functional API -----------------------------------------------------


@other_backend
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("interpolation", MODES)
def test_grid_sample_values_and_gradients(interpolation, padding_mode,
                                          align_corners):
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(2, 5, 7, 3)).astype(np.float32)
    grid = kink_grid(6, 8, 5, 7)

    def function(images, grid):
        return keras_stn.grid_sample(images, grid, interpolation,
                                     padding_mode, align_corners)

    _, (_, grid_grad) = compare(function, [images, grid])
    if interpolation == "nearest":
        assert not grid_grad.any()  # PyTorch's zero, not None


@other_backend
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_volumes(interpolation, padding_mode):
    rng = np.random.default_rng(2)
    volumes = rng.uniform(size=(2, 4, 5, 6, 2)).astype(np.float32)
    theta = np.array([[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0],
                      [0.9, 0.1, 0, 0.1, -0.1, 1.1, 0.2, 0, 0.1, 0, 0.8, -0.2]],
                     np.float32)

    def function(volumes, theta):
        grid = keras_stn.affine_grid(theta, (3, 5, 4), align_corners=False)
        return keras_stn.grid_sample(volumes, grid, interpolation,
                                     padding_mode)

    compare(function, [volumes, theta], {"rtol": 1e-4, "atol": 3e-4})


@other_backend
@pytest.mark.parametrize("size", [(5, 6), (13, 17), (28, 28)])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_theta_gradients_at_the_identity(interpolation, padding_mode,
                                         align_corners, size):
    """Every pixel coordinate is an integer up to rounding: the side of it
    that PyTorch's roundings pick decides each derivative's corners."""
    rng = np.random.default_rng(3)
    images = rng.uniform(size=(1, *size, 2)).astype(np.float32)
    theta = np.array([[1, 0, 0, 0, 1, 0]], np.float32)

    def function(theta):
        grid = keras_stn.affine_grid(theta, size, align_corners)
        return keras_stn.grid_sample(images, grid, interpolation,
                                     padding_mode, align_corners)

    _, (grad,) = compare(function, [theta], {"rtol": 1e-4, "atol": 2e-3})


@other_backend
def test_theta_gradients_near_a_lattice_aligned_zoom():
    """θ within 1e-7 of a 2/3 zoom puts every point of a 40² grid within an
    ulp or two of a pixel centre of a 60² image: the last bit of the grid's
    products picks the side, and with it the pixel difference of each
    derivative (11 % of dθ here, were the grid rounded otherwise).

    Each backend rounds those products as its framework does: JAX as TF's
    path (a fused multiply-add chain), the PyTorch backend as PyTorch's own
    `affine_grid`, which depends on the CPU (the chain on an Intel Xeon,
    products rounded then summed on an AMD EPYC). So the grid is checked
    bit for bit against that reference, and dθ against the TF path's sampler
    at the backend's own grid."""
    rng = np.random.default_rng(1)
    theta = (np.float32([2 / 3, 0, 0, 0, 2 / 3, 0])
             + rng.normal(size=(8, 6)) * 1e-7).astype(np.float32)
    images = rng.uniform(size=(8, 60, 60, 1)).astype(np.float32)
    grid = keras.ops.convert_to_numpy(keras_stn.affine_grid(
        keras.ops.convert_to_tensor(theta), (40, 40)))
    if BACKEND == "torch":
        import torch

        expected_grid = torch.nn.functional.affine_grid(
            torch.tensor(theta).reshape(8, 2, 3), (8, 1, 40, 40),
            align_corners=False).numpy()
    else:
        expected_grid = keras_stn.affine_grid(tf.constant(theta),
                                              (40, 40)).numpy()
    np.testing.assert_array_equal(grid, expected_grid)

    def function(theta):
        return keras_stn.grid_sample(images,
                                     keras_stn.affine_grid(theta, (40, 40)))

    cotangent = rng.uniform(-1, 1, (8, 40, 40, 1)).astype(np.float32)
    value, (dtheta,) = backend_vjp(function, [theta], cotangent)
    # The TF path at the same grid: dθ = Σ over points of d grid ⊗ (x, y, 1).
    expected_value, (dgrid,) = tensorflow_vjp(
        lambda grid: keras_stn.grid_sample(images, grid), [grid], cotangent)
    expected = reference.affine_theta_gradient(dgrid, 40, 40, False)
    # Values: the TF path snaps fractions within size·2⁻²⁰ of a pixel
    # centre onto it (PyTorch's kernels do not), ≤ 60·2⁻²⁰ = 5.7e-5 of a
    # pixel difference of at most 1; every point here is that close.
    np.testing.assert_allclose(value, expected_value, rtol=0,
                               atol=60 * 2.0 ** -20)
    # Sums of 1,600 float32 terms in another order: 1e-6 of the largest.
    np.testing.assert_allclose(dtheta, expected, rtol=1e-4,
                               atol=1e-5 * np.abs(expected).max())


@other_backend
def test_constant_image_has_zero_theta_gradient_on_border_and_reflection():
    images = np.ones((1, 5, 6, 1), np.float32)
    theta = np.array([[1, 0, 0, 0, 1, 0]], np.float32)
    for padding_mode in ("border", "reflection"):
        for align_corners in (False, True):
            def function(theta):
                grid = keras_stn.affine_grid(theta, (5, 6), align_corners)
                return keras_stn.grid_sample(images, grid, "bilinear",
                                             padding_mode, align_corners)

            _, (grad,) = backend_vjp(function, [theta],
                                     np.ones((1, 5, 6, 1), np.float32))
            np.testing.assert_array_equal(grad, 0.0)


@other_backend
@pytest.mark.parametrize("name", ["affine", "attention", "translation",
                                  "projective", "tps", "affine_3d"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_transform_grids(name, align_corners):
    transform = keras_stn.transforms.get(name)
    rng = np.random.default_rng(4)
    params = (transform.identity[None] + 0.1 * rng.standard_normal(
        (3, transform.num_params))).astype(np.float32)
    size = (4, 5, 6) if name == "affine_3d" else (7, 9)

    def function(params):
        return transform.grid(params, size, align_corners)

    compare(function, [params])
    grid = transform.grid(params, size, align_corners)
    assert keras_stn.backends.name_of(grid) == BACKEND
    assert tuple(grid.shape) == (3, *size, len(size))


@other_backend
def test_float64_end_to_end():
    if BACKEND == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX runs float64 only with jax_enable_x64 set")
    rng = np.random.default_rng(5)
    images = rng.uniform(size=(1, 6, 7, 1))
    theta = np.array([[0.9, 0.1, 0.05, -0.1, 1.1, 0.0]])
    grid = keras_stn.affine_grid(theta, (5, 5))
    assert keras.backend.standardize_dtype(grid.dtype) == "float64"
    out = keras_stn.grid_sample(images, grid)
    expected = keras_stn.grid_sample(tf.constant(images), tf.constant(
        keras.ops.convert_to_numpy(grid)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected,
                               atol=1e-12)


@other_backend
@pytest.mark.parametrize("interpolation", MODES)
@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_hostile_theta_gives_finite_values_and_gradients(interpolation,
                                                         padding_mode):
    images = np.random.default_rng(6).uniform(size=(6, 5, 7, 2)).astype(
        np.float32)
    hostile = [np.nan, np.inf, -np.inf, 1e30, -1e30, 3e38]
    theta = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), (6, 1))
    for row, value in enumerate(hostile):
        theta[row, row % 6] = value
        theta[row, (row + 2) % 6] = value

    def function(theta):
        grid = keras_stn.affine_grid(theta, (4, 5))
        return keras_stn.grid_sample(images, grid, interpolation,
                                     padding_mode)

    value, (grad,) = backend_vjp(function, [theta],
                                 np.ones((6, 4, 5, 2), np.float32))
    assert np.isfinite(value).all()
    assert np.abs(value).max() <= 2.0  # read from the [0, 1] image
    grid = np.full((1, 3, 3, 2), np.nan, np.float32)
    grid[0, 1] = [[np.inf, -np.inf], [1e30, -1e30], [3e38, 0.0]]
    value, (grid_grad,) = backend_vjp(
        lambda grid: keras_stn.grid_sample(images[:1], grid, interpolation,
                                           padding_mode),
        [grid], np.ones((1, 3, 3, 2), np.float32))
    assert np.isfinite(value).all() and np.isfinite(grid_grad).all()


def _error(function, *arguments):
    try:
        function(*arguments)
    except (TypeError, ValueError) as error:
        return type(error), str(error)
    return None


@other_backend
def test_bad_arguments_get_the_tensorflow_paths_errors():
    images = np.zeros((2, 5, 7, 1), np.float32)
    grid = np.zeros((2, 3, 3, 2), np.float32)
    cases = [
        (keras_stn.grid_sample, images, grid, "bilinearr"),
        (keras_stn.grid_sample, images, grid, "bilinear", "wrap"),
        (keras_stn.grid_sample, images, grid, "bilinear", "zeros", 1),
        (keras_stn.grid_sample, images.astype(np.int32), grid),
        (keras_stn.grid_sample, images[0], grid),
        (keras_stn.grid_sample, images, grid[..., :1]),
        (keras_stn.grid_sample, images, grid[:1]),
        (keras_stn.grid_sample, images[:, :0], grid),
        (keras_stn.grid_sample, images[..., None], np.zeros((2, 3, 3, 3, 3),
                                                            np.float32),
         "bicubic"),
        (keras_stn.affine_grid, np.zeros((2, 7), np.float32), (3, 3)),
        (keras_stn.affine_grid, np.zeros((2, 6), np.int32), (3, 3)),
        (keras_stn.affine_grid, np.zeros((2, 6), np.float32), (3, -1)),
        (keras_stn.transforms.get("tps").grid, np.zeros((2, 30), np.float32),
         (3, 3)),
    ]
    for function, *arguments in cases:
        received = _error(function, *[keras.ops.convert_to_tensor(a)
                                      if isinstance(a, np.ndarray) else a
                                      for a in arguments])
        expected = _error(function, *[tf.constant(a)
                                      if isinstance(a, np.ndarray) else a
                                      for a in arguments])
        assert expected is not None, arguments
        assert received == expected, arguments


# -- The layer ---------------------------------------------------------------


def localization_net(transform, name=None):
    """Deterministic θ near the identity, from the input's mean per channel."""
    transform = keras_stn.transforms.get(transform)
    return keras.Sequential([
        keras.layers.GlobalAveragePooling2D() if transform.spatial_rank == 2
        else keras.layers.GlobalAveragePooling3D(),
        keras.layers.Dense(
            transform.num_params,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.3,
                                                               seed=7),
            bias_initializer=keras_stn.IdentityInitializer(transform.name)),
    ], name=name)


def tensorflow_reference(layer, inputs):
    """The layer's output computed by the TensorFlow path from its θ."""
    theta = keras.ops.convert_to_numpy(layer.localization_net(inputs))
    images = keras.ops.convert_to_numpy(inputs)
    rank = images.ndim
    if layer.data_format == "channels_first":
        images = np.moveaxis(images, 1, -1)
    transform = layer._transform_for(rank)
    size = layer._target_size(keras.ops.shape(inputs))
    grid = transform.grid(tf.constant(theta.reshape(len(theta), -1)), size,
                          layer.align_corners)
    output = keras_stn.grid_sample(tf.constant(images), grid,
                                   layer.interpolation, layer.padding_mode,
                                   layer.align_corners).numpy()
    if layer.data_format == "channels_first":
        output = np.moveaxis(output, -1, 1)
    return output


@other_backend
@pytest.mark.parametrize("transform,interpolation,padding_mode", [
    ("affine", "bilinear", "zeros"),
    ("attention", "nearest", "border"),
    ("translation", "bicubic", "reflection"),
    ("projective", "bilinear", "border"),
    ("tps", "bilinear", "reflection"),
])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_layer_matches_the_tensorflow_path(transform, interpolation,
                                           padding_mode, data_format):
    rng = np.random.default_rng(8)
    shape = (3, 11, 13, 2) if data_format == "channels_last" else (3, 2, 11, 13)
    inputs = keras.ops.convert_to_tensor(rng.uniform(size=shape).astype(
        np.float32))
    layer = keras_stn.SpatialTransformer(
        localization_net(transform), output_size=(9, 10), transform=transform,
        interpolation=interpolation, padding_mode=padding_mode,
        data_format=data_format, return_theta=True)
    output, theta = layer(inputs)
    assert keras_stn.backends.name_of(output) == BACKEND
    np.testing.assert_allclose(keras.ops.convert_to_numpy(output),
                               tensorflow_reference(layer, inputs),
                               atol=VALUE_ATOL)
    assert tuple(theta.shape) == (3, layer._transform.num_params)


@other_backend
def test_layer_on_volumes():
    inputs = keras.ops.convert_to_tensor(np.random.default_rng(9).uniform(
        size=(2, 5, 6, 7, 1)).astype(np.float32))
    layer = keras_stn.SpatialTransformer(localization_net("affine_3d"),
                                         output_size=(4, 4, 4))
    output = layer(inputs)
    assert tuple(output.shape) == (2, 4, 4, 4, 1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(output),
                               tensorflow_reference(layer, inputs),
                               atol=VALUE_ATOL)


def small_st_cnn(**layer_options):
    loc = keras.Sequential([
        keras.layers.Conv2D(4, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"),
        keras_stn.localization_head("affine"),
    ])
    return keras.Sequential([
        keras.Input((16, 16, 1)),
        keras_stn.SpatialTransformer(loc, output_size=(12, 12),
                                     **layer_options),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])


def synthetic_digits(count=96, seed=10):
    """Three classes of 16×16 images: a bar, a square, a cross, shifted."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 16, 16, 1), np.float32)
    labels = rng.integers(0, 3, count)
    for image, label, (row, col) in zip(images, labels,
                                        rng.integers(2, 8, (count, 2))):
        if label == 0:
            image[row:row + 7, col + 3] = 1.0
        elif label == 1:
            image[row:row + 6, col:col + 6] = 1.0
            image[row + 1:row + 5, col + 1:col + 5] = 0.0
        else:
            image[row + 3, col:col + 7] = image[row:row + 7, col + 3] = 1.0
    return images, labels


@other_backend
def test_training_saving_and_the_training_aids(tmp_path):
    images, labels = synthetic_digits()
    model = small_st_cnn(identity_regularization=0.01)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(images, labels, epochs=8, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(images[:8], verbose=0),
                                  model.predict(images[:8], verbose=0))
    # The identity regulariser adds w · mean ||θ − θ_id||² to the losses.
    layer = model.layers[0]
    theta = keras.ops.convert_to_numpy(layer.localization_net(images[:8]))
    model(images[:8])
    expected = 0.01 * np.mean(np.sum((theta - np.eye(2, 3).ravel()) ** 2, -1))
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(
        layer.losses[0])), expected, rtol=1e-5)


@other_backend
def test_localization_lr_multiplier_scales_the_localisation_update():
    images, labels = synthetic_digits(32)

    def localisation_step(multiplier):
        keras.utils.set_random_seed(3)
        model = small_st_cnn(localization_lr_multiplier=multiplier)
        model.layers[0].localization_net.layers[-1].kernel.assign(
            np.full((16, 6), 0.01, np.float32))
        model.compile(keras.optimizers.SGD(1.0),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        head = model.layers[0].localization_net.layers[-1]
        before = keras.ops.convert_to_numpy(head.bias).copy()
        model.train_on_batch(images, labels)
        return keras.ops.convert_to_numpy(head.bias) - before

    full, scaled = localisation_step(1.0), localisation_step(0.25)
    assert np.abs(full).max() > 1e-6
    np.testing.assert_allclose(scaled, 0.25 * full, rtol=1e-4, atol=1e-9)


@other_backend
def test_tensorflow_only_tools_say_so(tmp_path):
    model = small_st_cnn()
    with pytest.raises(RuntimeError, match=rf"TensorFlow backend.*{BACKEND}"):
        keras_stn.export_tflite(model, str(tmp_path / "model.tflite"))
    with pytest.raises(RuntimeError, match=r"main job.*TensorFlow backend"):
        keras_stn.paper.experiment.run(smoke=True, output_dir=str(tmp_path))
    assert not list(tmp_path.iterdir())


@other_backend
def test_tf_data_pipelines_run_on_this_backend():
    """A TensorFlow tensor takes the TensorFlow path: the paper's
    distortions work in tf.data, and Keras trains from them."""
    from keras_stn.paper import datasets

    params = datasets.sample_distortions("RTS", 0, tf.range(3, dtype=tf.int64))
    images = datasets.apply_distortions(np.ones((3, 28, 28, 1), np.float32),
                                        "RTS", params)
    assert isinstance(images, tf.Tensor) and images.shape == (3, 42, 42, 1)
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.random.default_rng(0).uniform(size=(8, 16, 16, 1)).astype(
            np.float32), np.arange(8) % 3)).batch(4).map(
        lambda x, y: (keras_stn.grid_sample(x, keras_stn.affine_grid(
            tf.tile([[1.0, 0, 0, 0, 1, 0]], [tf.shape(x)[0], 1]), (16, 16))),
            y))
    model = small_st_cnn()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)


# -- One .keras file, every backend ------------------------------------------


def _run_backend(backend, folder):
    environment = dict(os.environ, KERAS_BACKEND=backend,
                       TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tests" / "backend_roundtrip.py"),
         str(folder)], cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _finish(processes):
    """Every process's JSON line; on a failure, every failure's stderr (a
    process that waited for a crashed one's file fails too)."""
    outputs = {backend: process.communicate(timeout=600)
               for backend, process in processes.items()}
    failures = [f"{backend}:\n{outputs[backend][1][-2000:]}"
                for backend, process in processes.items()
                if process.returncode != 0]
    assert not failures, "\n".join(failures)
    return {backend: json.loads(stdout.strip().splitlines()[-1])
            for backend, (stdout, _) in outputs.items()}


@pytest.mark.skipif(BACKEND != "torch",
                    reason="one run covers every direction (it starts a "
                    "process per backend); it runs in the PyTorch pass, "
                    "the suite's shortest")
def test_one_keras_file_moves_between_backends_and_into_tflite(tmp_path):
    """Each backend trains and saves a model, then loads the other two's
    files; TensorFlow also exports all three to TFLite and LiteRT runs
    them. One process per backend, all at once."""
    backends = ("jax", "torch", "tensorflow")
    results = _finish({backend: _run_backend(backend, tmp_path)
                       for backend in backends})
    for source in backends:
        trained = results[source]["trained"]
        expected = np.array(trained["predictions"])
        assert trained["final_loss"] < trained["first_loss"]
        for target in backends:
            got = np.array(results[target]["loaded"]["predictions"][source])
            # Identical to float32 rounding (different kernels).
            np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
        tflite = results["tensorflow"]["loaded"]["tflite"][source]
        np.testing.assert_allclose(np.array(tflite["predictions"]), expected,
                                   atol=1e-4)
        assert not [op for op in tflite["ops"] if "FLEX" in op or "CUSTOM" in op]
        assert "GATHER" in tflite["ops"]


@pytest.mark.skipif(BACKEND != "jax",
                    reason="the example trains on JAX: it runs in the JAX pass")
def test_train_on_jax_deploy_tflite_example(tmp_path):
    """The JAX-trained file loads under TensorFlow with JAX's predictions
    and runs in LiteRT, builtins only."""
    folder = mnist_dir()
    if folder is None:
        pytest.skip("MNIST IDX folder absent; tests never download")
    result = subprocess.run(
        [sys.executable, "examples/train_on_jax_deploy_tflite.py", "--smoke",
         "--output-dir", str(tmp_path)],
        cwd=REPO_ROOT, env=dict(os.environ, KERAS_BACKEND="jax",
                                KERAS_STN_MNIST_DIR=folder,
                                TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["train"]["backend"] == "jax"
    assert report["deploy"]["backend"] == "tensorflow"
    assert report["deploy"]["keras_vs_jax_max_abs"] <= 1e-5
    assert report["deploy"]["tflite_vs_jax_max_abs"] <= 1e-4
    assert report["deploy"]["builtins_only"]
    assert (tmp_path / "model.keras").is_file()
    assert (tmp_path / "model.tflite").is_file()


@pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                    reason="the JAX and PyTorch backends' benchmark workers "
                    "(TensorFlow's: tests/test_benchmarks.py)")
def test_benchmark_worker_of_this_backend():
    # `benchmarks/grid_sample_speed.py` runs keras_stn on this backend in a
    # process of its own; here, its worker on tiny workloads.
    from tests.test_benchmarks import _script

    speed = _script("grid_sample_speed")
    name = {"jax": "keras_stn_jax",
            "torch": "keras_stn_torch"}[keras.backend.backend()]
    rows = speed.worker(name, speed.TINY_WORKLOADS, 1, 2)
    assert [row["workload"] for row in rows] == speed.TINY_WORKLOADS
    assert all(row[mode] > 0 for row in rows for mode in speed.MODES)
    peaks = speed.worker(name, speed.TINY_WORKLOADS[:1], 1, 2, memory=True)
    assert peaks[0]["peak_mb"] >= 0


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's own bilinear kernel")
def test_jax_bilinear_runs_the_padded_kernel_with_its_own_derivative():
    """Bilinear images take the padded kernel under `jax.custom_vjp` (its
    values and derivatives are compared with TensorFlow's above, at the
    kinks); the other modes and volumes take the shared sampler."""
    import jax

    images = np.zeros((2, 5, 6, 3), np.float32)
    grid = np.zeros((2, 4, 4, 2), np.float32)

    def primitives(interpolation, images=images, grid=grid):
        jaxpr = jax.make_jaxpr(lambda i, g: keras_stn.grid_sample(
            i, g, interpolation))(images, grid)
        return str(jaxpr)

    assert "custom_vjp" in primitives("bilinear")
    assert "reduce_precision" in primitives("bilinear")
    assert "custom_vjp" not in primitives("bicubic")
    assert "custom_vjp" not in primitives(
        "bilinear", np.zeros((1, 3, 4, 5, 2), np.float32),
        np.zeros((1, 2, 2, 2, 3), np.float32))


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's own bilinear kernel")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_jax_unfused_is_the_identity_bit_for_bit(dtype):
    import jax

    from keras_stn.backends import jax as jax_backend

    if dtype == "float64" and not jax.config.jax_enable_x64:
        pytest.skip("float64 needs JAX_ENABLE_X64")
    info = np.finfo(dtype)
    values = np.array([0.0, -0.0, 1.0, -1.5, np.inf, -np.inf, np.nan,
                       info.tiny, info.tiny / 8, info.max, info.eps,
                       np.pi], dtype)
    got = np.asarray(jax.jit(jax_backend._unfused)(values))
    assert got.dtype == values.dtype
    int_type = {"float32": np.uint32, "float64": np.uint64}[dtype]
    np.testing.assert_array_equal(got.view(int_type), values.view(int_type))
