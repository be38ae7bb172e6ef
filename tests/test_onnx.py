"""ONNX: Keras' own export (tf2onnx on TensorFlow, torch.onnx on PyTorch)
of every sampling mode, of volumes and of dense fields, run in onnxruntime
against the model; a dynamic batch; the CLI; files from `.keras` files
trained on JAX and PyTorch.

Parity tolerance: float32 sampling of [0, 1] images agrees to a few ulps
(the committed models: ≤ 5e-6); 1e-4 (`PARITY_TOLERANCE`) is far below
what one misplaced sample costs (~1e-1).
"""

import itertools
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_stn
from keras_stn import export
from keras_stn.export.onnx import PARITY_TOLERANCE
from tests.conftest import REPO_ROOT
from tests.modes import MODE_GROUPS
from tests.modes import TRANSFORMS
from tests.modes import side_by_side

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

BACKEND = keras.backend.backend()
exporting_backend = pytest.mark.skipif(
    BACKEND == "jax", reason="JAX exports through its .keras file under "
    "TensorFlow (test_keras_file_trained_here_exports_under_tensorflow)")
TOLERANCE = PARITY_TOLERANCE


def _outputs(model, inputs):
    return keras.ops.convert_to_numpy(model(inputs, training=False))


def check_parity(model, path, inputs, batch_sizes=(1, 4)):
    """The file against the model on `inputs` (a list for several model
    inputs), at each batch size, from one file."""
    arrays = inputs if isinstance(inputs, list) else [inputs]
    for batch in batch_sizes:
        part = [array[:batch] for array in arrays]
        got = export.run_onnx(path, part)
        want = _outputs(model, part if len(part) > 1 else part[0])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=TOLERANCE, rtol=0)


def _images(shape, seed=0, batch=4):
    return np.random.default_rng(seed).uniform(
        size=(batch, *shape)).astype(np.float32)


# The default run: every transform, interpolation, padding and
# align_corners value at least once, in one file; the slow run converts
# every combination.
COVERING_MODES = [
    ("affine", "bilinear", "zeros", False),
    ("affine", "nearest", "border", True),
    ("affine", "bicubic", "reflection", False),
    ("affine", "bilinear", "reflection", True),
    ("attention", "bilinear", "border", False),
    ("translation", "nearest", "zeros", True),
    ("projective", "bilinear", "zeros", False),
    ("tps", "nearest", "reflection", False),
]


@exporting_backend
def test_every_transform_interpolation_padding_and_align_corners_value(
        tmp_path):
    model = side_by_side(COVERING_MODES)
    path = keras_stn.export_onnx(model, tmp_path / "m.onnx")
    check_parity(model, path, _images((10, 12, 2)))


@exporting_backend
@pytest.mark.slow
def test_every_transform_interpolation_padding_and_align_corners(tmp_path):
    # The full product: 5 transforms × 3 interpolations × 6 = 90.
    model = side_by_side(list(itertools.product(
        TRANSFORMS, ("bilinear", "nearest", "bicubic"),
        ("zeros", "border", "reflection"), (False, True))))
    path = keras_stn.export_onnx(model, tmp_path / "m.onnx")
    check_parity(model, path, _images((10, 12, 2)))


@exporting_backend
def test_batch_stays_dynamic(tmp_path):
    import onnx

    model = side_by_side(MODE_GROUPS["affine-bilinear"][:1])
    path = keras_stn.export_onnx(model, tmp_path / "m.onnx")
    (graph_input,) = onnx.load(path).graph.input
    batch_axis = graph_input.type.tensor_type.shape.dim[0]
    assert batch_axis.dim_param and not batch_axis.dim_value
    check_parity(model, path, _images((10, 12, 2), batch=7),
                 batch_sizes=(1, 2, 7))


@exporting_backend
@pytest.mark.parametrize("interpolation, padding_mode, align_corners", [
    ("bilinear", "zeros", False), ("nearest", "reflection", True),
    ("bilinear", "border", True)])
def test_volumes(tmp_path, interpolation, padding_mode, align_corners):
    loc = keras.Sequential([
        keras.layers.Flatten(),
        keras_stn.localization_head("affine_3d", kernel_initializer=(
            keras.initializers.RandomNormal(stddev=0.05, seed=3)))])
    model = keras.Sequential([
        keras.Input((5, 6, 7, 2)),
        keras_stn.SpatialTransformer(
            loc, output_size=(4, 5, 6), interpolation=interpolation,
            padding_mode=padding_mode, align_corners=align_corners)])
    path = keras_stn.export_onnx(model, tmp_path / "volume.onnx")
    check_parity(model, path, _images((5, 6, 7, 2)))


def _registration_model(rank):
    """A velocity net → `IntegrateVelocity` → `Warp`, two inputs. The net is
    per-pixel (a `Dense` on the channels): Keras' own `Conv3D` on PyTorch
    does not pass torch's TorchScript ONNX exporter ("memory_format")."""
    spatial = (9, 10) if rank == 2 else (5, 6, 7)
    moving = keras.Input((*spatial, 1))
    fixed = keras.Input((*spatial, 1))
    velocity = keras.layers.Dense(rank, kernel_initializer=(
        keras.initializers.RandomNormal(stddev=2.0, seed=4)))(
        keras.layers.Concatenate()([moving, fixed]))
    field = keras_stn.IntegrateVelocity(steps=4)(velocity)
    warped = keras_stn.Warp(padding_mode="border")([moving, field])
    return keras.Model([moving, fixed], [warped, field]), spatial


@exporting_backend
@pytest.mark.parametrize("rank", [2, 3])
def test_dense_fields(tmp_path, rank):
    model, spatial = _registration_model(rank)
    path = keras_stn.export_onnx(model, tmp_path / "fields.onnx")
    inputs = [_images((*spatial, 1), seed=1), _images((*spatial, 1), seed=2)]
    want = [keras.ops.convert_to_numpy(o)
            for o in model(inputs, training=False)]
    got = export.run_onnx(path, inputs)
    assert len(got) == 2
    for actual, expected in zip(got, want):
        np.testing.assert_allclose(actual, expected, atol=TOLERANCE, rtol=0)
    assert np.abs(want[1]).max() > 0.1  # a real deformation, not zero


@exporting_backend
def test_hostile_theta_gives_finite_output(tmp_path):
    """θ = +Inf, -Inf, NaN (Inf - Inf) and 1e30 from finite images: the
    file's output is finite and equals the model's."""
    kernel = np.zeros((42, 6), np.float32)
    kernel[:, 0] = 1e38   # sum overflows: +Inf
    kernel[:, 1] = -1e38  # -Inf
    kernel[:21, 2], kernel[21:, 2] = 1e38, -1e38  # Inf - Inf: NaN
    kernel[:, 4] = 1e30
    loc = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(
        6, kernel_initializer=keras.initializers.Constant(kernel))])
    model = keras.Sequential([
        keras.Input((6, 7, 1)),
        keras_stn.SpatialTransformer(loc, output_size=(5, 5))])
    path = keras_stn.export_onnx(model, tmp_path / "hostile.onnx",
                                 check=False)
    images = _images((6, 7, 1)) + 0.5
    got = export.run_onnx(path, images)
    want = _outputs(model, images)
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(want))
    np.testing.assert_allclose(got, want, atol=TOLERANCE, rtol=0)


@exporting_backend
def test_ops_and_opset(tmp_path):
    model = side_by_side(MODE_GROUPS["affine-bilinear"][:1])
    path = keras_stn.export_onnx(model, tmp_path / "m.onnx")
    listing = export.onnx_ops(path)
    expected = {"tensorflow": 15, "torch": 20}[BACKEND]
    assert listing["opset"] == expected
    sampling_op = {"tensorflow": "GatherND", "torch": "GridSample"}[BACKEND]
    assert sampling_op in listing["ops"]
    assert all(count > 0 for count in listing["ops"].values())


class TestBadInput:
    def test_path_must_end_in_onnx(self, tmp_path):
        model = side_by_side(MODE_GROUPS["affine-bilinear"][:1])
        if BACKEND == "jax":
            with pytest.raises(RuntimeError, match="keras-stn export"):
                keras_stn.export_onnx(model, tmp_path / "m.onnx")
            return
        with pytest.raises(ValueError, match=r"ending in \.onnx.*m\.tflite"):
            keras_stn.export_onnx(model, tmp_path / "m.tflite")

    @exporting_backend
    def test_not_a_model(self, tmp_path):
        with pytest.raises(TypeError, match="keras.Model.*Dense"):
            keras_stn.export_onnx(keras.layers.Dense(3), tmp_path / "m.onnx")

    @exporting_backend
    def test_model_without_input_shapes(self, tmp_path):
        class Unbuilt(keras.Model):
            def call(self, inputs):
                return inputs

        with pytest.raises(ValueError, match="input shapes are unknown"):
            keras_stn.export_onnx(Unbuilt(), tmp_path / "m.onnx")

    @exporting_backend
    def test_run_onnx_wrong_input_count(self, tmp_path):
        model = side_by_side(MODE_GROUPS["affine-bilinear"][:1])
        path = keras_stn.export_onnx(model, tmp_path / "m.onnx")
        with pytest.raises(ValueError, match="takes 1 input.*Received: 2"):
            export.run_onnx(path, [_images((10, 12, 2))] * 2)


def _cli(*args):
    environment = dict(os.environ, KERAS_BACKEND="tensorflow",
                       TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "keras_stn.cli", "export", *map(str, args)],
        cwd=REPO_ROOT, env=environment, capture_output=True, text=True,
        timeout=600)


def test_keras_file_trained_here_exports_under_tensorflow(tmp_path):
    """A model trained on this backend, saved as `.keras`, becomes ONNX
    through the CLI (TensorFlow, tf2onnx) and predicts as it did here."""
    keras.utils.set_random_seed(0)
    loc = keras.Sequential([
        keras.layers.Flatten(), keras.layers.Dense(8, activation="relu"),
        keras_stn.localization_head("affine")])
    model = keras.Sequential([
        keras.Input((12, 12, 1)),
        keras_stn.SpatialTransformer(loc, output_size=(8, 8)),
        keras.layers.Flatten(), keras.layers.Dense(3)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    images = _images((12, 12, 1), batch=16)
    model.fit(images, np.arange(16) % 3, epochs=2, batch_size=8, verbose=0)
    model.save(tmp_path / "model.keras")
    result = _cli(tmp_path / "model.keras", "--onnx", tmp_path / "m.onnx")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dynamic batch" in result.stdout
    deviation = float(result.stdout.split("max |ONNX - Keras| = ")[1].split()[0])
    assert deviation < TOLERANCE
    got = export.run_onnx(tmp_path / "m.onnx", images)
    np.testing.assert_allclose(got, _outputs(model, images), atol=TOLERANCE,
                               rtol=0)


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="the keras-stn command runs on TensorFlow")
def test_cli_refuses_a_bad_name_and_an_existing_file(tmp_path):
    model = side_by_side(MODE_GROUPS["affine-bilinear"][:1])
    model.save(tmp_path / "model.keras")
    result = _cli(tmp_path / "model.keras", "--onnx", tmp_path / "m.onx")
    assert result.returncode == 2
    assert "--onnx: expected a file name ending in .onnx" in result.stderr
    (tmp_path / "m.onnx").write_bytes(b"old")
    result = _cli(tmp_path / "model.keras", "--onnx", tmp_path / "m.onnx")
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert (tmp_path / "m.onnx").read_bytes() == b"old"


@pytest.mark.skipif(BACKEND != "torch", reason="runs in the PyTorch pass")
def test_exporting_on_pytorch_does_not_load_tensorflow(tmp_path):
    script = f"""
import json, sys
import keras, numpy as np, keras_stn
from tests.modes import MODE_GROUPS, side_by_side
model = side_by_side(MODE_GROUPS["affine-bilinear"][:2])
keras_stn.export_onnx(model, {str(tmp_path / "t.onnx")!r})
print(json.dumps({{"tensorflow": "tensorflow" in sys.modules}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT,
        env=dict(os.environ, KERAS_BACKEND="torch"), capture_output=True,
        text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "tensorflow": False}
