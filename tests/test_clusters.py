"""The default TensorFlow path: the warp as an XLA cluster in TF's runtime.

Eager calls, plain `tf.function`s, Keras' `fit`/`predict` on a CPU and
`tf.data` maps run the public ops and the layer's warp compiled
(`keras_stn.backends.tensorflow.clusters`). These tests check that the
cluster gives the runtime formulation's values and gradients (at the kinks
too, against the NumPy reference), that it is used where it should be and
nowhere else, that its compiles are bounded, that the opt-outs work and
that it is safe under concurrency.
"""

import concurrent.futures
import itertools

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="XLA clusters inside TF's runtime are the TensorFlow path's")

tf = pytest.importorskip("tensorflow")

import keras_stn  # noqa: E402
from keras_stn.backends.tensorflow import clusters  # noqa: E402
from keras_stn.backends.tensorflow import compilation  # noqa: E402
from tests import reference  # noqa: E402
from tests.conftest import assert_close  # noqa: E402


def _warp_with_gradients(images, theta, size, interpolation, padding_mode,
                         align_corners, jit_compile):
    """Values and the gradients to images and θ, in a plain `tf.function`
    (a runtime graph), with or without the cluster."""
    with keras_stn.use_jit_compile(jit_compile):
        @tf.function
        def step(images, theta):
            with tf.GradientTape() as tape:
                tape.watch([images, theta])
                grid = keras_stn.affine_grid(theta, size, align_corners)
                out = keras_stn.grid_sample(images, grid, interpolation,
                                            padding_mode, align_corners)
                loss = tf.reduce_sum(out * tf.cos(out))
            return (out, *tape.gradient(loss, [images, theta]))

        before = clusters.traces()
        results = [t.numpy() for t in step(tf.constant(images),
                                           tf.constant(theta))]
        assert (clusters.traces() >= before) and (
            jit_compile or clusters.traces() == before)
        return results


def _kink_thetas(width, height, align_corners):
    """θs whose grids land on pixel centres and edges: the identity,
    integer and half-pixel translations, 90° and 180° rotations."""
    def pixel(size):
        return 2.0 / (size - 1) if align_corners else 2.0 / size

    px, py = pixel(width), pixel(height)
    return np.float32([
        [1, 0, 0, 0, 1, 0],
        [1, 0, px, 0, 1, -2 * py],
        [1, 0, 0.5 * px, 0, 1, 0.5 * py],
        [0, -1, 0, 1, 0, 0],
        [-1, 0, 0, 0, -1, 0],
        [1, 0, -3 * px, 0, 1, 5 * py],
    ])


MODES = list(itertools.product(("bilinear", "nearest", "bicubic"),
                               ("zeros", "border", "reflection"),
                               (False, True)))


@pytest.mark.parametrize("interpolation,padding_mode,align_corners", MODES)
def test_cluster_reproduces_the_runtime_path_at_the_kinks(
        interpolation, padding_mode, align_corners):
    # Square images, so the rotations land on the lattice as well, of a
    # size whose pixel is 0.25 in normalised units: every kink point is
    # exact in float32, and so is the side of it each path takes.
    size = 9 if align_corners else 8
    theta = _kink_thetas(size, size, align_corners)
    rng = np.random.default_rng(3)
    images = rng.integers(-4, 5, (len(theta), size, size, 2)).astype(
        np.float32)
    runtime = _warp_with_gradients(images, theta, (size, size),
                                   interpolation, padding_mode,
                                   align_corners, False)
    cluster = _warp_with_gradients(images, theta, (size, size),
                                   interpolation, padding_mode,
                                   align_corners, True)
    # Values agree to float32 rounding; gradients to float32 summation
    # order (dθ sums ~100 terms of up to ~10^2). A derivative taken on the
    # other side of a kink would differ by a pixel difference, O(1).
    for name, got, want in zip(("values", "d images", "d theta"), cluster,
                               runtime):
        assert np.isfinite(got).all(), name
        assert_close(got, want, rtol=0,
                     atol=1e-6 * max(1.0, np.abs(want).max()) * 10)
    # And both are the reference's, computed independently in NumPy.
    grid = np.concatenate([reference.affine_grid(t, size, size,
                                                 align_corners)
                     for t in theta.astype(np.float64)])
    expected, jacobian = reference.sample_with_gradient(
        images, grid, interpolation, padding_mode, align_corners)
    assert_close(cluster[0], expected, rtol=0, atol=1e-4)
    # dθ by the chain rule through the reference: d loss / d out, then
    # d out / d grid, then d grid / dθ = (x, y, 1) per output pixel.
    upstream = np.cos(expected) - expected * np.sin(expected)
    d_grid = np.einsum("bhwc,bhwck->bhwk", upstream, jacobian)
    d_theta = reference.affine_theta_gradient(d_grid, size, size,
                                              align_corners)
    assert_close(cluster[2], d_theta, rtol=0,
                 atol=1e-5 * max(1.0, np.abs(d_theta).max()))


def _near_lattice_zoom(batch, seed):
    """θ zooming by 2/3 (± 1e-7): a 40-pixel output lands on the pixel
    centres of a 60-pixel input, each point within an ulp or two of an
    integer after float32 rounding. Which side of it a point falls on, and
    so which pixel difference its derivative takes, is decided by how the
    grid's products were rounded."""
    rng = np.random.default_rng(seed)
    scale = np.float32(2 / 3)
    theta = np.float32([scale, 0, 0, 0, scale, 0]) + rng.normal(
        size=(batch, 6)) * 1e-7
    return theta.astype(np.float32)


def test_cluster_takes_the_runtimes_side_near_the_lattice():
    theta = _near_lattice_zoom(8, 1)
    images = np.random.default_rng(2).uniform(size=(8, 60, 60, 1)).astype(
        np.float32)
    runtime, cluster = [
        _warp_with_gradients(images, theta, (40, 40), "bilinear", "zeros",
                             False, jit_compile) for jit_compile in
        (False, True)]
    for name, got, want in zip(("values", "d images", "d theta"), cluster,
                               runtime):
        # float32 summation order is 1e-6; the other side of ~half the
        # points is 10 %.
        assert_close(got, want, rtol=0,
                     atol=1e-5 * max(1.0, np.abs(want).max()), err_msg=name)
    # PyTorch's sampler at this grid: dθ = Σ over points of d grid ⊗
    # (x, y, 1). (PyTorch's own affine_grid rounds the products by CPU: as
    # TF, a fused chain, on an Intel Xeon; products rounded then summed on
    # an AMD EPYC, where its grid takes the other side in 11 % of points.)
    torch = pytest.importorskip("torch")
    images_t = torch.tensor(images).permute(0, 3, 1, 2)

    def backward_through_torch(grid_t):
        out = torch.nn.functional.grid_sample(images_t, grid_t,
                                              align_corners=False)
        (out * torch.cos(out)).sum().backward()

    grid = keras_stn.affine_grid(tf.constant(theta), (40, 40)).numpy()
    grid_t = torch.tensor(grid).requires_grad_(True)
    backward_through_torch(grid_t)
    want = reference.affine_theta_gradient(grid_t.grad.numpy(), 40, 40, False)
    assert_close(cluster[2], want, rtol=0, atol=1e-4 * np.abs(want).max())
    theta_t = torch.tensor(theta).reshape(8, 2, 3).requires_grad_(True)
    own_grid = torch.nn.functional.affine_grid(theta_t, (8, 1, 40, 40),
                                               align_corners=False)
    if np.array_equal(own_grid.detach().numpy(), grid):
        # Where PyTorch rounds the grid alike, its whole warp agrees too.
        backward_through_torch(own_grid)
        want = theta_t.grad.reshape(8, 6).numpy()
        assert_close(cluster[2], want, rtol=0,
                     atol=1e-4 * np.abs(want).max())


def test_identity_is_exact_on_the_cluster():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 9, 11, 3)).astype(np.float32)
    theta = np.tile(np.float32([1, 0, 0, 0, 1, 0]), (5, 1))
    for align_corners in (False, True):
        before = clusters.traces()
        for _ in range(2):  # the second eager call runs compiled
            out = keras_stn.grid_sample(
                images, keras_stn.affine_grid(theta, (9, 11), align_corners),
                align_corners=align_corners)
            np.testing.assert_array_equal(out.numpy(), images)
        assert clusters.traces() == before + 2


def test_eager_compiles_on_the_second_call_graphs_at_once():
    warp = _fresh_warp((3, 24))
    before = clusters.traces()
    first = warp().numpy()
    assert clusters.traces() == before  # one-off eager call: no compile
    second = warp().numpy()
    assert clusters.traces() == before + 2
    np.testing.assert_array_equal(first, second)
    images = np.ones((2, 3, 25, 1), np.float32)
    theta = np.tile(np.float32([1, 0, 0, 0, 1, 0]), (2, 1))
    graph = tf.function(lambda i, t: keras_stn.grid_sample(
        i, keras_stn.affine_grid(t, (3, 25))))
    graph(images, theta)
    assert clusters.traces() == before + 4


def test_bucket_sizes():
    assert [clusters.bucket(n) for n in range(14)] == [
        0, 1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]
    for batch in range(1, 5000):
        padded = clusters.bucket(batch)
        # At most half as many rows again, of the form 2^k or 3·2^k.
        assert batch <= padded <= batch * 3 // 2
        odd = padded // (padded & -padded)
        assert odd in (1, 3)
    assert clusters.bucket(2 ** 30 + 1) == 3 * 2 ** 29


def test_run_time_bucket_is_the_static_one():
    sizes = np.unique(np.concatenate([
        np.arange(0, 5000),
        [m * 2 ** k + d for m in (1, 3) for k in range(12, 29)
         for d in (-1, 0, 1)]])).astype(np.int32)
    got = clusters._bucket_at_run_time(tf.constant(sizes)).numpy()
    np.testing.assert_array_equal(got, [clusters.bucket(n) for n in sizes])


def _count_traces(function):
    """Clusters compiled by calling `function` twice (a first eager call
    of a shape runs TF's runtime formulation)."""
    before = clusters.traces()
    function()
    function()
    return clusters.traces() - before


def _fresh_warp(size):
    """A warp of a shape no other test uses, so that it traces anew."""
    images = np.ones((2, *size, 1), np.float32)
    theta = np.tile(np.float32([1, 0, 0, 0, 1, 0]), (2, 1))
    return lambda: keras_stn.grid_sample(
        images, keras_stn.affine_grid(theta, size))


def test_opt_outs(monkeypatch):
    assert keras_stn.jit_compile_enabled() is True
    assert _count_traces(_fresh_warp((3, 17))) == 2  # affine_grid, sample

    previous = keras_stn.set_jit_compile(False)
    try:
        assert previous is True
        assert keras_stn.jit_compile_enabled() is False
        assert _count_traces(_fresh_warp((3, 18))) == 0
    finally:
        assert keras_stn.set_jit_compile(previous) is False

    with keras_stn.use_jit_compile(False):
        assert _count_traces(_fresh_warp((3, 19))) == 0
        with keras_stn.use_jit_compile(True):
            assert keras_stn.jit_compile_enabled() is True
        assert keras_stn.jit_compile_enabled() is False
    assert keras_stn.jit_compile_enabled() is True

    for value in ("0", "false", "OFF", " no "):
        monkeypatch.setenv("KERAS_STN_JIT_COMPILE", value)
        assert keras_stn.jit_compile_enabled() is False
    assert _count_traces(_fresh_warp((3, 20))) == 0
    monkeypatch.setenv("KERAS_STN_JIT_COMPILE", "1")
    assert keras_stn.jit_compile_enabled() is True


@pytest.mark.parametrize("bad", [0, 1, "yes", None])
def test_opt_outs_take_bools_only(bad):
    with pytest.raises(TypeError, match=r"Expected a bool.*enabled="):
        keras_stn.set_jit_compile(bad)
    with pytest.raises(TypeError, match=r"Expected a bool.*enabled="):
        with keras_stn.use_jit_compile(bad):
            pass


def test_no_cluster_inside_xla_or_a_pinned_formulation():
    images = np.ones((2, 4, 21, 1), np.float32)
    theta = np.tile(np.float32([1, 0, 0, 0, 1, 0]), (2, 1))

    @tf.function(jit_compile=True)
    def compiled(images, theta):
        return keras_stn.grid_sample(
            images, keras_stn.affine_grid(theta, (4, 21)))

    # The user's own XLA function compiles it all; nothing nested.
    assert _count_traces(lambda: compiled(images, theta)) == 0
    with compilation.use_target("tflite"):
        assert _count_traces(_fresh_warp((4, 22))) == 0


def test_a_keras_model_under_jit_compile_is_unchanged():
    model = keras.Sequential([
        keras.Input((4, 23, 1)),
        keras_stn.SpatialTransformer(keras.Sequential([
            keras.layers.Flatten(),
            keras.layers.Dense(
                6, kernel_initializer="zeros",
                bias_initializer=keras_stn.IdentityInitializer())]))])
    model.compile("sgd", "mse", jit_compile=True)
    data = np.ones((4, 4, 23, 1), np.float32)
    assert _count_traces(lambda: model.fit(data, data, epochs=1,
                                           verbose=0)) == 0
    model.compile("sgd", "mse", jit_compile=False)
    assert _count_traces(lambda: model.fit(data, data, epochs=1,
                                           verbose=0)) == 1


def test_compiles_are_bounded_by_the_batch_buckets():
    size = (5, 13)
    theta = np.tile(np.float32([1, 0, 0, 0, 1, 0]), (64, 1))
    images = np.ones((64, *size, 1), np.float32)
    layer = keras_stn.SpatialTransformer(
        keras.layers.Lambda(lambda x: x[:, 0, 0, :1] * 0 + theta[:1]),
        output_size=size)
    for batch in range(1, 65):
        layer(images[:batch])
    cluster = clusters._clusters[next(
        key for key in clusters._clusters
        if key[0] == "warp" and key[1][1] == size)]
    # Bucket sizes run as they are; so do the first EXACT_BATCH_SIZES
    # others a cluster meets; every later batch is padded to its bucket.
    assert cluster.exact_batch_sizes == {5, 7, 9, 10, 11, 13, 14, 15}
    run = {b if b in cluster.exact_batch_sizes else clusters.bucket(b)
           for b in range(1, 65)}
    assert run == {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64} | {
        5, 7, 9, 10, 11, 13, 14, 15}
    assert clusters.EXACT_BATCH_SIZES == 8
    # Padding gives every row its own value: the batch of 9 pads to 12.
    out = layer(images[:9] * np.arange(1, 10, dtype=np.float32)[
        :, None, None, None]).numpy()
    assert out.shape == (9, *size, 1)
    np.testing.assert_array_equal(out[:, 2, 6, 0], np.arange(1, 10))


def test_dynamic_batch_pads_to_a_bucket_and_slices_back():
    @tf.function(input_signature=[tf.TensorSpec([None, 6, 7, 2], tf.float32),
                                  tf.TensorSpec([None, 6], tf.float32)])
    def warp(images, theta):
        return keras_stn.grid_sample(images,
                                     keras_stn.affine_grid(theta, (6, 7)))

    rng = np.random.default_rng(1)
    for batch in (0, 1, 5, 13):
        images = rng.normal(size=(batch, 6, 7, 2)).astype(np.float32)
        theta = np.tile(np.float32([1, 0, 0, 0, 1, 0]), (batch, 1))
        out = warp(images, theta).numpy()
        np.testing.assert_array_equal(out, images)


def _layer_model(size):
    """A transformer whose θ depends on its input: a real warp."""
    localization = keras.Sequential([
        keras.layers.Flatten(),
        keras.layers.Dense(
            6, kernel_initializer=keras.initializers.RandomNormal(
                0, 0.2, seed=0),
            bias_initializer=keras_stn.IdentityInitializer())])
    inputs = keras.Input((*size, 1))
    outputs = keras_stn.SpatialTransformer(localization,
                                           output_size=size)(inputs)
    return keras.Model(inputs, outputs)


def _runtime_outputs(model, images):
    with keras_stn.use_jit_compile(False):
        return np.concatenate([model(images[i:i + 1]).numpy()
                               for i in range(len(images))])


def test_threads_calling_one_model():
    model = _layer_model((12, 14))
    rng = np.random.default_rng(5)
    images = rng.uniform(size=(48, 12, 14, 1)).astype(np.float32)
    expected = _runtime_outputs(model, images)
    batches = [(start, size) for start, size in zip(
        range(0, 48, 6), itertools.cycle((1, 3, 6, 5)))]

    def call(batch):
        start, size = batch
        return start, model(images[start:start + size]).numpy()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            for start, out in pool.map(call, batches):
                assert_close(out, expected[start:start + len(out)],
                             rtol=1e-5, atol=1e-5)


def test_parallel_and_zipped_tf_data_maps():
    model = _layer_model((12, 15))
    rng = np.random.default_rng(6)
    images = rng.uniform(size=(40, 12, 15, 1)).astype(np.float32)
    expected = _runtime_outputs(model, images)

    def stream(offset):
        return tf.data.Dataset.from_tensor_slices(
            images[offset:offset + 20]).batch(3).map(
            lambda x: model(x), num_parallel_calls=4, deterministic=True)

    zipped = tf.data.Dataset.zip((stream(0), stream(20))).prefetch(2)
    first, second = [], []
    for a, b in zipped:
        first.append(a.numpy())
        second.append(b.numpy())
    assert_close(np.concatenate(first), expected[:20], rtol=1e-5, atol=1e-5)
    assert_close(np.concatenate(second), expected[20:], rtol=1e-5, atol=1e-5)


def test_fit_and_predict_default_path_match_the_runtime():
    model = _layer_model((12, 16))
    rng = np.random.default_rng(7)
    images = rng.uniform(size=(21, 12, 16, 1)).astype(np.float32)
    expected = _runtime_outputs(model, images)
    # Batch 8 leaves a short last batch of 5; predict runs in TF's runtime
    # on a CPU, so through the cluster.
    before = clusters.traces()
    assert_close(model.predict(images, batch_size=8, verbose=0), expected,
                 rtol=1e-5, atol=1e-5)
    assert clusters.traces() == before + 1
    model.compile("adam", "mse")
    history = model.fit(images, images, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
