"""The speed-motivated formulations agree with each other and the reference.

`grid_sample`'s bilinear kernel and `affine_grid` pick formulations at trace
time (TF's runtime vs XLA; under XLA a 4-corner-slice image gradient for few
channels, one segment sum otherwise; in TF's runtime one segment sum per
corner, of scalars for 2-16 channels); the planar entry points
`affine_coordinates` / `sample_coordinates` skip the `[..., 2]` axis. Each
must give the same values and gradients as the NumPy reference.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras_stn
from keras_stn.backends.tensorflow import bilinear as _bilinear
from keras_stn.backends.tensorflow import compilation as _compilation
from tests import reference
from tests.conftest import assert_close


def _inputs(channels, seed=0, batch=3, size=(7, 9), out=(5, 6)):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (batch, *size, channels)).astype(np.float32)
    theta = np.tile(np.float32([1, 0, 0, 0, 1, 0]), (batch, 1))
    # Large enough that samples leave the image on some sides.
    theta += rng.normal(0, 0.4, theta.shape).astype(np.float32)
    return tf.constant(images), tf.constant(theta), out


def _values_and_gradients(images, theta, out, path, planar, padding_mode):
    """In a `tf.function` on `path`: `"runtime"` (the clusters turned off),
    `"default"` (TF's runtime with the warp as XLA clusters) or `"xla"`
    (the whole function compiled)."""
    @tf.function(jit_compile=path == "xla")
    def run(images, theta):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            if planar:
                coords = keras_stn.affine_coordinates(theta, out)
                warped = keras_stn.sample_coordinates(
                    images, coords, padding_mode=padding_mode)
            else:
                grid = keras_stn.affine_grid(theta, out)
                warped = keras_stn.grid_sample(
                    images, grid, padding_mode=padding_mode)
            # A non-uniform upstream gradient.
            loss = tf.reduce_sum(warped * tf.sin(warped + 0.3))
        return (warped, *tape.gradient(loss, [images, theta]))

    with keras_stn.use_jit_compile(path != "runtime"):
        return [value.numpy() for value in run(images, theta)]


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("channels", [1, 3, 20])
def test_runtime_xla_and_planar_paths_agree(channels, padding_mode):
    # 20 channels exceed the quad-scatter limit: XLA then takes the
    # segment-sum gradient like the runtime.
    images, theta, out = _inputs(channels)
    results = {
        (path, planar): _values_and_gradients(images, theta, out, path,
                                              planar, padding_mode)
        for path in ("runtime", "default", "xla") for planar in (False, True)
    }
    baseline = results[("runtime", False)]
    expected = reference.grid_sample(
        images.numpy().astype(np.float64),
        reference.affine_grid(theta.numpy().astype(np.float64), *out, False),
        "bilinear", padding_mode, False)
    assert_close(baseline[0], expected)
    for key, values in results.items():
        for name, got, want in zip(("output", "d_images", "d_theta"),
                                   values, baseline):
            scale = max(1.0, float(np.abs(want).max()))
            np.testing.assert_allclose(
                got, want, rtol=0, atol=2e-5 * scale,
                err_msg=f"{name} of (path, planar) = {key}")


def test_image_gradient_is_the_adjoint_of_sampling():
    # <grid_sample(U), G> = <U, dL/dU> for the linear map U -> V, exactly
    # up to rounding, for both scatter formulations.
    for channels in (2, 20):
        images, theta, out = _inputs(channels, seed=1)
        upstream = tf.random.stateless_normal(
            [3, *out, channels], seed=[1, 2])
        for jit in (False, True):
            @tf.function(jit_compile=jit)
            def pullback(images):
                with tf.GradientTape() as tape:
                    tape.watch(images)
                    warped = keras_stn.grid_sample(
                        images, keras_stn.affine_grid(theta, out))
                    loss = tf.reduce_sum(warped * upstream)
                return loss, tape.gradient(loss, images)

            loss, gradient = pullback(images)
            np.testing.assert_allclose(
                float(tf.reduce_sum(images * gradient)), float(loss),
                rtol=1e-5)


@pytest.mark.parametrize("channels", [1, 3, 20])
def test_non_finite_upstream_gradients_propagate_alike(channels):
    # XLA takes another formulation (stored corner indices and fractions,
    # a 4-corner-block scatter for few channels): NaN and infinities in the
    # upstream gradient must come out where the runtime puts them.
    images, theta, out = _inputs(channels, seed=2)
    upstream = np.ones((3, *out, channels), np.float32)
    upstream[0, 1, 1, 0] = np.nan
    upstream[0, 2, 3, 0] = -np.inf
    upstream[1, 3, 2, 0] = np.inf
    upstream[2, 4, 4, 0] = -3e38
    gradients = {}
    for jit in (False, True):
        @tf.function(jit_compile=jit)
        def run(images, theta):
            with tf.GradientTape() as tape:
                tape.watch([images, theta])
                warped = keras_stn.sample_coordinates(
                    images, keras_stn.affine_coordinates(theta, out))
            return tape.gradient(warped, [images, theta],
                                 output_gradients=tf.constant(upstream))
        gradients[jit] = [value.numpy() for value in run(images, theta)]
    for runtime, xla in zip(gradients[False], gradients[True]):
        assert np.isnan(runtime).any()
        np.testing.assert_array_equal(np.isnan(xla), np.isnan(runtime))
        np.testing.assert_array_equal(np.isposinf(xla), np.isposinf(runtime))
        np.testing.assert_array_equal(np.isneginf(xla), np.isneginf(runtime))
        finite = np.isfinite(runtime)
        if finite.any():
            np.testing.assert_allclose(
                xla[finite], runtime[finite], rtol=1e-5,
                atol=1e-5 * np.abs(runtime[finite]).max())


@pytest.mark.parametrize("channels", [1, 2, 16, 17])
def test_corner_scatter_adds_every_corner(channels):
    # Runtime: scalar segments for 2-16 channels, rows otherwise; XLA's
    # concatenated scatter (its formulation, run eagerly): all np.add.at.
    rng = np.random.default_rng(channels)
    segments = 11
    corners = [rng.integers(0, segments, (2, 3, 4)).astype(np.int32)
               for _ in range(4)]
    updates = [rng.normal(size=(2, 3, 4, channels)).astype(np.float32)
               for _ in range(4)]
    expected = np.zeros((segments, channels), np.float64)
    for update, corner in zip(updates, corners):
        np.add.at(expected, corner.reshape(-1),
                  update.reshape(-1, channels).astype(np.float64))
    for xla in (False, True):
        got = _bilinear._corner_scatter(
            [tf.constant(u) for u in updates],
            [tf.constant(c) for c in corners], segments, channels, xla)
        np.testing.assert_allclose(
            tf.reshape(got, [segments, channels]).numpy(), expected, rtol=0,
            atol=1e-5, err_msg=f"xla={xla}")


def test_materialised_returns_its_input():
    values = {
        # Normal numbers only: TF's CPU kernels flush subnormals to zero.
        tf.float32: [0.0, -0.0, -0.5, 3e38, -np.inf, np.inf, np.nan,
                     1.2e-38],
        tf.float64: [0.0, -1e308, np.inf, np.nan],
        tf.int32: [0, -2**31, 2**31 - 1, 7],
    }
    for dtype, items in values.items():
        tensor = tf.constant(items, dtype)
        for jit in (False, True):
            got = tf.function(_bilinear._materialised,
                              jit_compile=jit)(tensor).numpy()
            np.testing.assert_array_equal(got, tensor.numpy())
            np.testing.assert_array_equal(np.signbit(got),
                                          np.signbit(tensor.numpy()))


def _traced_op_counts(channels, target=None, jit_compile=False,
                      gradient=True):
    """{op type: count} of the layer's path (planar grid + sampler), forward
    and, with `gradient`, backward, traced for `target` (or undecided)."""
    images, theta, out = _inputs(channels)

    def run(images, theta):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            warped = keras_stn.sample_coordinates(
                images, keras_stn.affine_coordinates(theta, out))
            loss = tf.reduce_sum(warped * warped)
        if not gradient:
            return warped
        return tape.gradient(loss, [images, theta])

    function = tf.function(run, jit_compile=jit_compile)
    if target is None:
        graph = function.get_concrete_function(images, theta).graph
    else:
        with _compilation.use_target(target):
            graph = function.get_concrete_function(images, theta).graph
    counts = {}
    for op in graph.get_operations():
        counts[op.type] = counts.get(op.type, 0) + 1
    counts["scalar segments"] = sum(
        op.inputs[0].shape.rank == 1 for op in graph.get_operations()
        if op.type == "UnsortedSegmentSum")
    return counts


class TestTargets:
    """Which formulation each target traces, pinned op by op."""

    def test_detection_works_on_this_tensorflow(self):
        # If a TensorFlow upgrade moves these private APIs, every graph
        # silently takes the runtime formulation: fail loudly instead.
        assert _compilation.XLA_DETECTION and _compilation.TAPE_DETECTION
        seen = {}

        def record(key):
            def probe(x):
                seen[key] = (_compilation.current_target(),
                             _compilation.recording_gradients())
                return x
            return probe

        tf.function(record("jit"), jit_compile=True)(tf.constant(1.0))
        tf.function(record("plain"))(tf.constant(1.0))
        with tf.GradientTape():
            tf.function(record("tape"))(tf.constant(2.0))
        with _compilation.use_target("tflite"):
            tf.function(record("override"), jit_compile=True)(
                tf.constant(3.0))
        assert seen == {"jit": ("xla", False), "plain": ("runtime", False),
                        "tape": ("runtime", True),
                        "override": ("tflite", False)}

    def test_jit_compile_traces_the_xla_formulation(self):
        counts = _traced_op_counts(1, jit_compile=True, gradient=False)
        assert counts.get("Bitcast", 0) > 0, counts  # stored index/fractions
        assert "GatherNd" not in counts

    def test_bad_target(self):
        with pytest.raises(ValueError, match="target"):
            with _compilation.use_target("gpu"):
                pass

    @pytest.mark.parametrize("target", _compilation.TARGETS)
    def test_forward(self, target):
        counts = _traced_op_counts(1, target, gradient=False)
        matmuls = counts.get("MatMul", 0) + counts.get("BatchMatMulV2", 0)
        if target == "runtime":
            # GatherNd (10-20 % faster there), one matmul per θ row.
            assert counts.get("GatherNd") == 4 and "GatherV2" not in counts
            assert matmuls == 2 and "Bitcast" not in counts
        elif target == "xla":
            # GatherV2; index and fractions stored once through a bit-exact
            # max reduction; the grid as broadcast multiply-adds.
            assert counts.get("GatherV2") == 4 and "GatherNd" not in counts
            assert counts.get("Bitcast", 0) >= 2 and counts.get("Max", 0) >= 3
            assert matmuls == 0
        else:
            # LiteRT: GATHER, no XLA storage trick, FULLY_CONNECTED grid.
            assert counts.get("GatherV2") == 4 and "GatherNd" not in counts
            assert matmuls == 2 and "Bitcast" not in counts

    @pytest.mark.parametrize("channels,target,segment_sums,unpacks", [
        (1, "runtime", 4, 0),   # one scatter per corner, added
        (3, "runtime", 4, 0),   # ... of scalar segments (2-16 channels)
        (20, "runtime", 4, 0),
        (1, "xla", 1, 1),       # one scatter of 4-corner slices, unstacked
        (3, "xla", 1, 1),
        (20, "xla", 1, 0),      # one flat scatter of the concatenation
    ])
    def test_image_gradient(self, channels, target, segment_sums, unpacks):
        counts = _traced_op_counts(channels, target)
        assert counts.get("UnsortedSegmentSum", 0) == segment_sums, counts
        assert counts.get("Unpack", 0) == unpacks, counts
        scalar = target == "runtime" and 1 < channels <= 16
        assert counts["scalar segments"] == (4 if scalar else 0), counts


def test_affine_coordinates_are_the_grid_planes():
    theta = tf.constant(np.random.default_rng(2).normal(size=(4, 6)),
                        tf.float32)
    for jit in (False, True):
        for align_corners in (False, True):
            @tf.function(jit_compile=jit)
            def both(theta):
                grid = keras_stn.affine_grid(theta, (5, 7), align_corners)
                coords = keras_stn.affine_coordinates(theta, (5, 7),
                                                      align_corners)
                return grid, coords

            grid, (x, y) = both(theta)
            assert_close(x, grid[..., 0], kind="exact")
            assert_close(y, grid[..., 1], kind="exact")


def test_sample_coordinates_rejects_bad_input_like_grid_sample():
    images = tf.zeros([2, 4, 4, 1])
    with pytest.raises(ValueError, match="padding_mode"):
        keras_stn.sample_coordinates(images, [tf.zeros([2, 3, 3])] * 2,
                                     padding_mode="wrap")
    with pytest.raises(ValueError, match="grid"):
        keras_stn.sample_coordinates(images, [tf.zeros([2, 3, 3])] * 3)
    with pytest.raises(ValueError, match="batch size"):
        keras_stn.sample_coordinates(images, [tf.zeros([3, 3, 3])] * 2)


def test_unknown_sizes_take_the_generic_path():
    # Traced with unknown spatial sizes and channels, the sampler cannot use
    # the static-shape kernel; it must still give the reference's values.
    images, theta, out = _inputs(3, seed=3)
    grid = keras_stn.affine_grid(theta, out)

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, None]),
        tf.TensorSpec([None, None, None, 2])])
    def sample(images, grid):
        return keras_stn.grid_sample(images, grid)

    expected = reference.grid_sample(
        images.numpy().astype(np.float64), grid.numpy().astype(np.float64),
        "bilinear", "zeros", False)
    assert_close(sample(images, grid), expected)
    for unknown in ([3, 7, 9, None], [3, None, None, 3]):
        traced = tf.function(
            keras_stn.grid_sample,
            input_signature=[tf.TensorSpec(unknown),
                             tf.TensorSpec([3, *out, 2])])
        assert_close(traced(images, grid), expected)


def _fma_chain(weights, base):
    """NumPy: each row of `weights [rows, k + 1]` times every point of
    `base [N, k + 1]`, rounded as a matmul's inner loop with fused
    multiply-adds rounds it: the first product, then each further one added
    and rounded once. A product of two float32 values is exact in float64,
    and so is its sum with one float32 except in rare ties of the last bit,
    which the data below does not meet."""
    products = (weights.astype(np.float64)[:, None, :]
                * base.astype(np.float64)[None, :, :])
    result = products[..., 0].astype(np.float32)
    for col in range(1, base.shape[1]):
        result = (result.astype(np.float64) + products[..., col]).astype(
            np.float32)
    return result


@pytest.mark.parametrize("size", [(40, 40), (7, 9), (5, 6, 4)])
@pytest.mark.parametrize("near_lattice", [False, True])
def test_grid_products_round_alike_on_every_target(size, near_lattice):
    # A θ within 1e-7 of a 2/3 zoom puts every point of a 40-pixel grid an
    # ulp or so from a pixel centre of a 60-pixel image: the side it takes,
    # and so the pixel difference dθ reads, depends on the last bit of the
    # product. TF's runtime matmul and PyTorch's affine_grid round it as a
    # fused chain; the XLA formulation (broadcast multiply-adds) must too.
    from keras_stn.backends.tensorflow.grid import times_meshgrid
    from keras_stn.core.meshgrid import homogeneous_meshgrid

    rng = np.random.default_rng(7)
    base = homogeneous_meshgrid(size, False, np.float32)
    columns = base.shape[1]
    if near_lattice:
        weights = np.zeros((64, columns), np.float32)
        weights[:, 0] = np.float32(2 / 3)
        weights += rng.normal(size=weights.shape) * 1e-7
    else:
        weights = rng.normal(size=(64, columns))
    weights = weights.astype(np.float32)
    expected = _fma_chain(weights, base)
    xla = tf.function(lambda w: times_meshgrid(w, base, target="xla"),
                      jit_compile=True)(weights).numpy()
    np.testing.assert_array_equal(xla, expected)
    runtime = times_meshgrid(tf.constant(weights), base,
                             target="runtime").numpy()
    np.testing.assert_array_equal(runtime, expected)
