"""Deployment: builtins-only TFLite (float32, float16, dynamic range, int8)
run in LiteRT, SavedModel, hostile θ, the CLI and bad input."""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_stn
from keras_stn.export.inspect import read_graph as _read_graph
from tests.conftest import REPO_ROOT
from tests.conftest import mnist_dir
from tests.conftest import assert_close
from tests.modes import EVERY_MODE
from tests.modes import MODE_GROUPS
from tests.modes import side_by_side
from tests.modes import st_model

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "mnist_st_cnn.keras"
FORBIDDEN_WORDS = ("FLEX", "CUSTOM", "WHILE")


def assert_builtins_only(ops):
    bad = [op for op in ops if any(word in op.upper() for word in FORBIDDEN_WORDS)]
    assert not bad, f"non-builtin ops: {bad}"


@pytest.mark.parametrize("group", list(MODE_GROUPS))
def test_float32_builtins_and_parity(tmp_path, group):
    check_float32_parity(tmp_path, MODE_GROUPS[group])


@pytest.mark.slow
def test_float32_builtins_and_parity_of_every_mode(tmp_path):
    check_float32_parity(tmp_path, EVERY_MODE)


def check_float32_parity(tmp_path, modes):
    model = side_by_side(modes)
    path = keras_stn.export_tflite(model, str(tmp_path / "m.tflite"))
    assert path == str(tmp_path / "m.tflite")
    ops = keras_stn.tflite_ops(path)
    assert_builtins_only(ops)
    assert "GATHER" in ops
    rng = np.random.default_rng(0)
    # One file, two batch sizes.
    for batch in (1, 6):
        images = rng.uniform(size=(batch, 10, 12, 2)).astype(np.float32)
        expected = model(images).numpy()
        actual = keras_stn.run_tflite(path, images)
        assert actual.shape == expected.shape == (batch, 7, 9,
                                                  2 * len(modes))
        for index, mode in enumerate(modes):
            got = actual[..., 2 * index:2 * index + 2]
            want = expected[..., 2 * index:2 * index + 2]
            if mode[1] == "nearest":
                # A θ differing in the last ulp may flip a sample lying
                # exactly between two pixels; all others must agree.
                mismatch = np.abs(got - want) > 1e-4
                assert mismatch.mean() < 0.01, mode
            else:
                assert_close(got, want, kind="tflite", err_msg=str(mode))


def test_batch_stays_dynamic_and_no_batch_sized_constants(tmp_path):
    model = st_model(input_shape=(28, 28, 1), output_size=(28, 28))
    path = keras_stn.export_tflite(model, str(tmp_path / "m.tflite"))
    from ai_edge_litert.interpreter import Interpreter

    signature = Interpreter(model_path=path).get_input_details()[0]
    assert signature["shape_signature"][0] == -1
    for batch in (1, 64):
        images = np.ones((batch, 28, 28, 1), np.float32)
        assert keras_stn.run_tflite(path, images).shape == (batch, 28, 28, 1)

    # Converting the model with a *static* batch of 1 and of 64 gives files
    # of (almost) the same size: nothing in the graph scales with the batch.
    # A baked [64, 28, 28] index constant alone would add 200 KB.
    sizes = []
    for batch in (1, 64):
        function = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([batch, 28, 28, 1], tf.float32)])
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [function.get_concrete_function()], model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        sizes.append(len(converter.convert()))
    assert abs(sizes[1] - sizes[0]) < 1024, sizes


HOSTILE_VALUES = [np.nan, np.inf, -np.inf, 1e30, -1e30, 1.0]


HOSTILE_MODES = [(transform, interpolation, padding_mode)
                 for transform in ("affine", "projective")
                 for interpolation in ("bilinear", "nearest", "bicubic")
                 for padding_mode in ("zeros", "border", "reflection")]


def test_hostile_theta_in_litert(tmp_path):
    # θ comes from the input: every parameter equals the mean of channel 1,
    # which holds NaN, ±Inf, ±1e30 or 1 (one example each); channel 0 is the
    # image whose samples must stay finite. (Channel 1 is sampled too and
    # may legitimately carry its NaN/Inf; it is not checked.) One
    # transformer per mode, side by side in one file.
    inputs = keras.Input((6, 7, 2))
    outputs = []
    for transform, interpolation, padding_mode in HOSTILE_MODES:
        num_params = keras_stn.transforms.get(transform).num_params
        outputs.append(keras_stn.SpatialTransformer(
            keras.layers.Lambda(lambda x, n=num_params: keras.ops.repeat(
                keras.ops.mean(x[..., 1:2], axis=(1, 2)), n, axis=-1)),
            transform=transform, interpolation=interpolation,
            padding_mode=padding_mode)(inputs))
    model = keras.Model(inputs, keras.layers.Concatenate()(outputs))
    path = keras_stn.export_tflite(model, str(tmp_path / "hostile.tflite"))
    rng = np.random.default_rng(0)
    images = np.zeros((len(HOSTILE_VALUES), 6, 7, 2), np.float32)
    images[..., 0] = rng.uniform(size=(len(HOSTILE_VALUES), 6, 7))
    images[..., 1] = np.array(HOSTILE_VALUES, np.float32)[:, None, None]
    everything = keras_stn.run_tflite(path, images)
    expected = model(images).numpy()
    for index, mode in enumerate(HOSTILE_MODES):
        out = everything[..., 2 * index]
        assert np.isfinite(out).all(), mode
        # Cubic weights sum to 1 with |weights| summing to < 1.6.
        bound = 1.6 if mode[1] == "bicubic" else 1.0 + 1e-6
        assert np.abs(out).max() <= bound, mode
        if mode[1] != "bicubic":
            assert out.min() >= 0, mode
        # The well-behaved example (θ = 1 everywhere) agrees with Keras.
        assert_close(out[-1], expected[-1, ..., 2 * index], kind="tflite",
                     err_msg=str(mode))


def test_float16_within_1e_2(tmp_path):
    model = st_model("projective", input_shape=(28, 28, 1), output_size=(20, 20))
    path = keras_stn.export_tflite(model, str(tmp_path / "m16.tflite"),
                                   quantization="float16")
    assert_builtins_only(keras_stn.tflite_ops(path))
    images = np.random.default_rng(1).uniform(size=(4, 28, 28, 1))
    images = images.astype(np.float32)
    np.testing.assert_allclose(keras_stn.run_tflite(path, images),
                               model(images).numpy(), atol=1e-2, rtol=0)


class TestSavedModel:
    def test_reload_two_batch_sizes_and_tflite_from_directory(self, tmp_path):
        model = st_model("attention", padding_mode="border")
        saved_model_dir = str(tmp_path / "saved_model")
        model.export(saved_model_dir, verbose=False)
        served = tf.saved_model.load(saved_model_dir)
        path = keras_stn.export_tflite(saved_model_dir,
                                       str(tmp_path / "from_dir.tflite"))
        ops = keras_stn.tflite_ops(path)
        assert_builtins_only(ops)
        # Traced by `model.export`, not `export_tflite`: the warp is the XLA
        # cluster TF's runtime runs by default, its formulation and batch
        # padding builtins all the same.
        assert "GATHER" in ops and "PAD" in ops
        rng = np.random.default_rng(2)
        for batch in (2, 9):
            images = rng.uniform(size=(batch, 10, 12, 2)).astype(np.float32)
            expected = model(images).numpy()
            np.testing.assert_allclose(served.serve(images).numpy(), expected,
                                       atol=1e-5, rtol=0)
            assert_close(keras_stn.run_tflite(path, images), expected, kind="tflite")


def _rotated_test_digits(count):
    sys.path.insert(0, str(REPO_ROOT / "examples"))
    try:
        import quickstart
    finally:
        sys.path.pop(0)
    test = quickstart.make_dataset("test", mnist_dir(), seed=1, repeat=False)
    images = np.concatenate([batch[0].numpy() for batch in
                             test.take(-(-count // quickstart.BATCH_SIZE))])
    return images[:count]


@pytest.fixture(scope="module")
def trained_two_output_model():
    """The fixture ST-CNN, rebuilt to output (logits, transformed image)."""
    return keras_stn.paper.models.with_transformer_output(
        keras.saving.load_model(FIXTURE))


@pytest.mark.skipif(mnist_dir() is None, reason="MNIST IDX folder absent")
@pytest.mark.parametrize("quantization", ["dynamic_range", "int8"])
def test_quantized_trained_model_agrees(tmp_path, trained_two_output_model,
                                        quantization):
    model = trained_two_output_model
    digits = _rotated_test_digits(1000)
    calibration = digits[:200]

    def representative_dataset():
        for image in calibration:
            yield [image[None]]

    path = keras_stn.export_tflite(
        model, str(tmp_path / f"{quantization}.tflite"),
        quantization=quantization,
        representative_dataset=representative_dataset)
    assert_builtins_only(keras_stn.tflite_ops(path))
    expected_logits, expected_images = (t.numpy() for t in model(digits))
    logits, images = keras_stn.run_tflite(path, digits)
    agreement = np.mean(logits.argmax(-1) == expected_logits.argmax(-1))
    assert agreement >= 0.99, agreement
    # The transformed digits stay where the float model puts them: pixel
    # values (in [0, 1]) differ by 0.01 on average and 0.05 at the 99th
    # percentile. (Quantising the grid to 8 bits too gave a mean of 0.12 and
    # 37 % agreement; see the README.)
    difference = np.abs(images - expected_images)
    assert difference.mean() <= 0.01, difference.mean()
    assert np.percentile(difference, 99) <= 0.05, np.percentile(difference, 99)
    if quantization == "int8":
        with open(path, "rb") as file:
            graph = _read_graph(file.read())
        assert any(op["name"] == "CONV_2D" for op in graph)
        assert os.path.getsize(path) < 0.5 * os.path.getsize(FIXTURE)


class TestBadInput:
    def test_path_without_tflite_suffix(self, tmp_path):
        with pytest.raises(ValueError, match=r"`path`.*\.tflite.*model\.lite"):
            keras_stn.export_tflite(st_model(), str(tmp_path / "model.lite"))

    def test_unknown_quantization(self, tmp_path):
        with pytest.raises(ValueError, match=r"`quantization`.*'int4'"):
            keras_stn.export_tflite(st_model(), str(tmp_path / "m.tflite"),
                                    quantization="int4")

    def test_int8_without_representative_dataset(self, tmp_path):
        with pytest.raises(ValueError, match="representative_dataset"):
            keras_stn.export_tflite(st_model(), str(tmp_path / "m.tflite"),
                                    quantization="int8")

    def test_representative_dataset_not_callable(self, tmp_path):
        with pytest.raises(TypeError, match="representative_dataset"):
            keras_stn.export_tflite(st_model(), str(tmp_path / "m.tflite"),
                                    quantization="int8",
                                    representative_dataset=[np.zeros(3)])

    def test_not_a_model(self, tmp_path):
        with pytest.raises(TypeError, match="model"):
            keras_stn.export_tflite(42, str(tmp_path / "m.tflite"))
        with pytest.raises(ValueError, match="saved_model.pb"):
            keras_stn.export_tflite(str(tmp_path), str(tmp_path / "m.tflite"))

    def test_flex_op_is_refused_by_name(self, tmp_path):
        # Keras' own image transform needs the Select TF op
        # ImageProjectiveTransformV3: exactly what keras_stn avoids.
        inputs = keras.Input((8, 8, 1))
        outputs = keras.layers.Lambda(
            lambda x: keras.ops.image.affine_transform(
                x, keras.ops.convert_to_tensor([[1.0, 0, 0, 0, 1, 0, 0, 0]])))(
                    inputs)
        model = keras.Model(inputs, outputs)
        with pytest.raises(ValueError, match="ImageProjectiveTransform"):
            keras_stn.export_tflite(model, str(tmp_path / "flex.tflite"))
        assert not (tmp_path / "flex.tflite").exists()

    def test_run_tflite_wrong_input_count(self, tmp_path):
        path = keras_stn.export_tflite(st_model(), str(tmp_path / "m.tflite"))
        with pytest.raises(ValueError, match="inputs"):
            keras_stn.run_tflite(path, [np.zeros((1, 10, 12, 2), np.float32)] * 2)


    @pytest.mark.parametrize("shape", [(1, 20, 12, 2), (1, 10, 6, 4),
                                       (10, 12, 2), (1, 1, 10, 12, 2)])
    def test_run_tflite_resizes_only_the_batch_axis(self, tmp_path, shape):
        """A 10×12×2 model given another size, or an input missing its batch
        axis, is refused by name (LiteRT would reshape it silently or fail
        inside RESHAPE)."""
        path = keras_stn.export_tflite(st_model(), str(tmp_path / "m.tflite"))
        with pytest.raises(ValueError, match=r"\(None, 10, 12, 2\).*"
                           + re.escape(str(shape))):
            keras_stn.run_tflite(path, np.zeros(shape, np.float32))
        # Any batch size is fine.
        assert keras_stn.run_tflite(
            path, np.zeros((3, 10, 12, 2), np.float32)).shape[0] == 3

    @pytest.mark.parametrize("content", [b"", b"not a model at all",
                                         b"\x1c\x00\x00\x00TFL3" + b"\x00" * 8])
    def test_not_a_tflite_file(self, tmp_path, content):
        path = tmp_path / "corrupt.tflite"
        path.write_bytes(content)
        for function in (keras_stn.tflite_ops,
                         lambda p: keras_stn.run_tflite(p, np.zeros(3))):
            with pytest.raises(ValueError, match="corrupt.tflite"):
                function(str(path))

    def test_missing_tflite_file(self, tmp_path):
        with pytest.raises(ValueError, match="missing.tflite"):
            keras_stn.tflite_ops(str(tmp_path / "missing.tflite"))

    def test_truncated_tflite_file(self, tmp_path):
        path = keras_stn.export_tflite(st_model(), str(tmp_path / "m.tflite"))
        with open(path, "rb") as file:
            data = file.read()
        truncated = tmp_path / "truncated.tflite"
        truncated.write_bytes(data[:len(data) // 3])
        with pytest.raises(ValueError, match="truncated.tflite"):
            keras_stn.tflite_ops(str(truncated))
        with pytest.raises(ValueError, match="truncated.tflite"):
            keras_stn.run_tflite(str(truncated),
                                 np.zeros((1, 10, 12, 2), np.float32))

@pytest.mark.slow  # the same command: tests/test_cli.py (quiet success)
def test_cli_export(tmp_path):
    calibration = tmp_path / "calibration.npy"
    np.save(calibration, np.random.default_rng(0).uniform(
        size=(16, 28, 28, 1)).astype(np.float32))
    result = subprocess.run(
        [sys.executable, "-m", "keras_stn.cli", "export", str(FIXTURE),
         "--saved-model", str(tmp_path / "sm"), "--tflite",
         str(tmp_path / "m.tflite"), "--calibration-data", str(calibration)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GATHER" in result.stdout and "parity" in result.stdout
    assert (tmp_path / "sm" / "saved_model.pb").is_file()
    assert (tmp_path / "m.tflite").is_file()
    deviation = float(result.stdout.split("max |TFLite - Keras| = ")[1].split()[0])
    assert deviation < 1e-4


def test_volume_transformer_in_litert(tmp_path):
    loc = keras.Sequential([
        keras.layers.Conv3D(3, 3, activation="relu"),
        keras.layers.GlobalAveragePooling3D(),
        keras_stn.localization_head("affine_3d", kernel_initializer=
                                    keras.initializers.RandomNormal(
                                        stddev=0.3, seed=2)),
    ])
    model = keras.Sequential([
        keras.Input((5, 6, 7, 2)),
        keras_stn.SpatialTransformer(loc, output_size=(4, 5, 6),
                                     padding_mode="reflection"),
    ])
    path = keras_stn.export_tflite(model, str(tmp_path / "volume.tflite"))
    assert_builtins_only(keras_stn.tflite_ops(path))
    rng = np.random.default_rng(4)
    for batch in (1, 3):
        volumes = rng.uniform(size=(batch, 5, 6, 7, 2)).astype(np.float32)
        assert_close(keras_stn.run_tflite(path, volumes), model(volumes).numpy(), kind="tflite")


def _coordinate_tensor_types(path):
    """{tensor name: TFLite type name} of the coordinate-path tensors."""
    from ai_edge_litert import schema_py_generated as schema

    names = {value: name for name, value in vars(schema.TensorType).items()
             if not name.startswith("_")}
    with open(path, "rb") as file:
        model = schema.Model.GetRootAs(file.read(), 0)
    types = {}
    for graph_index in range(model.SubgraphsLength()):
        graph = model.Subgraphs(graph_index)
        for index in range(graph.TensorsLength()):
            tensor = graph.Tensors(index)
            name = tensor.Name().decode()
            if "grid_generator/" in name or "sampler/" in name:
                types[name] = names[tensor.Type()]
    return types


def _small_transformer(transform, seed=0):
    keras.utils.set_random_seed(seed)
    loc_net = keras.Sequential([
        keras.layers.Flatten(), keras.layers.Dense(8, activation="relu"),
        keras_stn.localization_head(transform)])
    return keras.Sequential([
        keras.Input((16, 16, 1)),
        keras_stn.SpatialTransformer(loc_net, output_size=(12, 12),
                                     transform=transform),
        keras.layers.Flatten(), keras.layers.Dense(3)])


@pytest.mark.parametrize("transform", ["affine", "attention", "translation",
                                       "projective", "tps"])
def test_int8_keeps_every_coordinate_path_in_float(tmp_path, transform):
    """Read from the file: no grid or sampler tensor is an integer type, and
    the transformer's output at the identity θ is the float model's."""
    model = _small_transformer(transform)
    images = np.random.default_rng(0).uniform(size=(16, 16, 16, 1)).astype(
        np.float32)
    path = keras_stn.export_tflite(
        model, str(tmp_path / "int8.tflite"), quantization="int8",
        representative_dataset=lambda: ([image[None]] for image in images))
    types = _coordinate_tensor_types(path)
    assert types, "no coordinate-path tensors found by name"
    quantised = {name: kind for name, kind in types.items()
                 if kind in ("INT8", "UINT8", "INT16")}
    assert not quantised, quantised
    np.testing.assert_allclose(keras_stn.run_tflite(path, images),
                               model(images).numpy(), atol=0.05)


@pytest.mark.parametrize("transform", ["affine", "tps"])
def test_int8_refuses_calibration_that_overflows(tmp_path, transform):
    """Calibration inputs that drive activations to ±Inf would give infinite
    scales and a file that crashes LiteRT (or TF's converter): a named
    error instead, and nothing written."""
    model = _small_transformer(transform)
    hostile = np.full((2, 16, 16, 1), 3e38, np.float32)
    path = tmp_path / "int8.tflite"
    with pytest.raises(ValueError, match="representative_dataset.*non-finite"):
        keras_stn.export_tflite(
            model, str(path), quantization="int8",
            representative_dataset=lambda: ([image[None]] for image in hostile))
    assert not path.exists()
