"""Examples, README code blocks and the MNIST loader, end to end."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import keras_stn
from tests.conftest import REPO_ROOT
from tests.conftest import mnist_dir
from tests.conftest import assert_close

MNIST_DIR = mnist_dir()
needs_mnist = pytest.mark.skipif(
    MNIST_DIR is None,
    reason="the MNIST IDX folder (../shared/data/mnist or "
    "$KERAS_STN_MNIST_DIR) is absent; tests never download",
)


def _env():
    return dict(os.environ, KERAS_STN_MNIST_DIR=MNIST_DIR or "",
                TF_CPP_MIN_LOG_LEVEL="2")


class TestMnistLoader:
    @needs_mnist
    def test_test_split_is_real_mnist(self):
        dataset = keras_stn.paper.datasets.load_mnist("test", mnist_dir=MNIST_DIR)
        images, labels = next(iter(dataset.batch(10000)))
        images, labels = images.numpy(), labels.numpy()
        assert images.shape == (10000, 28, 28, 1)
        assert images.dtype == np.float32
        assert 0.0 <= images.min() and images.max() <= 1.0
        # Facts of the original test set (shared/data/mnist/SOURCE.md).
        np.testing.assert_array_equal(
            np.bincount(labels),
            [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
        assert abs(images.mean() * 255 - 33.79) < 0.01

    @needs_mnist
    def test_fit_and_validation_split_the_training_set(self):
        sizes = {split: int(keras_stn.paper.datasets.load_mnist(
            split, mnist_dir=MNIST_DIR).cardinality())
            for split in ("train", "fit", "validation")}
        assert sizes == {"train": 60000, "fit": 55000, "validation": 5000}
        first_held_out = next(iter(keras_stn.paper.datasets.load_mnist(
            "validation", mnist_dir=MNIST_DIR)))[0]
        digit_55000 = next(iter(keras_stn.paper.datasets.load_mnist(
            "train", mnist_dir=MNIST_DIR).skip(55000)))[0]
        np.testing.assert_array_equal(first_held_out, digit_55000)

    def test_bad_split(self):
        with pytest.raises(ValueError, match="split.*'valid'"):
            keras_stn.paper.datasets.load_mnist("valid")

    def test_folder_without_idx_files(self, tmp_path):
        with pytest.raises(ValueError, match="mnist_dir.*lacks"):
            keras_stn.paper.datasets.load_mnist("test", mnist_dir=str(tmp_path))


@pytest.mark.slow  # its API path: test_readme_python_blocks_run, below
@needs_mnist
def test_quickstart_smoke(tmp_path):
    output_dir = tmp_path / "quickstart"
    result = subprocess.run(
        [sys.executable, "examples/quickstart.py", "--smoke",
         "--output-dir", str(output_dir)],
        cwd=REPO_ROOT, env=_env(), capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((output_dir / "report.json").read_text())
    assert report["epochs"] == 1 and report["steps_per_epoch"] == 3
    assert 0.0 <= report["test_accuracy"] <= 1.0
    assert report["reload_max_deviation"]["keras"] <= 1e-5
    assert report["reload_max_deviation"]["saved_model"] <= 1e-5
    assert (output_dir / "model.keras").is_file()
    assert (output_dir / "saved_model" / "saved_model.pb").is_file()


def readme_python_blocks():
    text = (REPO_ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_code():
    assert len(readme_python_blocks()) >= 2


def test_readme_stays_a_users_page():
    # Issue 13: at most 16 KB; methods and logs live in benchmarks/README.md.
    assert (REPO_ROOT / "README.md").stat().st_size <= 16000


@needs_mnist
def test_readme_python_blocks_run(tmp_path):
    # The blocks run in order in one namespace, as a reader would paste
    # them, in a fresh process and folder so their files land there.
    script = "\n\n".join(readme_python_blocks())
    (tmp_path / "readme_blocks.py").write_text(script)
    result = subprocess.run(
        [sys.executable, "readme_blocks.py"], cwd=tmp_path, env=_env(),
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


# Its model: test_two_transformers_in_parallel_pattern; its two streams:
# tests/test_datasets.py.
@pytest.mark.slow
@needs_mnist
def test_mnist_addition_smoke(tmp_path):
    def run():
        return subprocess.run(
            [sys.executable, "examples/mnist_addition.py", "--smoke",
             "--output-dir", str(tmp_path)],
            cwd=REPO_ROOT, env=_env(), capture_output=True, text=True,
            timeout=600)

    result = run()
    if result.returncode < 0:
        # Known, rare (1 in ~10 loaded CI runs, 2026-11-26): TensorFlow
        # itself died of a signal (SIGSEGV) with this example's two
        # XLA-compiled tf.data streams; under investigation. One retry;
        # a Python error is never retried.
        result = run()
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["smoke"] and 0 <= report["test_error_percent"] <= 100
    assert (tmp_path / "model.keras").is_file()
    assert (tmp_path / "transforms.png").is_file()


def test_two_transformers_in_parallel_pattern(tmp_path):
    """Two SpatialTransformers on one input, features concatenated: both
    localisation nets train, and the model saves and reloads."""
    import keras

    inputs = keras.Input((16, 16, 2))
    views = [
        keras_stn.SpatialTransformer(
            keras.Sequential([
                keras.layers.Flatten(),
                keras_stn.localization_head(
                    kernel_initializer=keras.initializers.RandomNormal(
                        stddev=0.01, seed=index)),
            ], name=f"loc_{index}"),
            output_size=(8, 8), name=f"st_{index}")(inputs)
        for index in range(2)
    ]
    features = keras.layers.Concatenate()(views)
    assert tuple(features.shape) == (None, 8, 8, 4)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(features))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(8, 16, 16, 2)).astype(np.float32)
    y = rng.normal(size=(8, 3)).astype(np.float32)
    before = [model.get_layer(f"st_{i}").localization_net.weights[0].numpy()
              for i in range(2)]
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    after = [model.get_layer(f"st_{i}").localization_net.weights[0].numpy()
             for i in range(2)]
    changes = [np.abs(a - b).max() for a, b in zip(after, before)]
    assert all(change > 0 for change in changes), changes
    path = tmp_path / "two.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert_close(reloaded(x).numpy(), model(x).numpy(), kind="exact")


@needs_mnist
def test_distortion_gallery_ink_statistic():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "distortion_gallery", REPO_ROOT / "examples" / "distortion_gallery.py")
    gallery = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gallery)
    rotated = gallery.ink_kept("R", mnist_dir=MNIST_DIR, count=200)
    projective = gallery.ink_kept("P", mnist_dir=MNIST_DIR, count=200)
    assert rotated.shape == projective.shape == (200,)
    # A rotation moves ink without losing it (bilinear resampling blurs,
    # and only a stroke in a corner can leave the 28² canvas).
    assert abs(np.median(rotated) - 1.0) < 0.02 and rotated.min() > 0.8
    # P's corner noise (std 5 px on 28) pushes strokes off the canvas.
    assert np.mean(projective < 0.75) > 0.2 > np.mean(rotated < 0.75)


@needs_mnist
def test_register_mnist_smoke(tmp_path):
    output_dir = tmp_path / "register_mnist"
    result = subprocess.run(
        [sys.executable, "examples/register_mnist.py", "--smoke",
         "--output-dir", str(output_dir)],
        cwd=REPO_ROOT, env=_env(), capture_output=True, text=True,
        timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((output_dir / "report.json").read_text())
    assert set(report["models"]) == {"displacement", "diffeomorphic",
                                     "affine"}
    for scores in report["models"].values():
        assert 0.0 <= scores["dice_before"] <= 1.0
        assert 0.0 <= scores["dice_after"] <= 1.0
        assert 0.0 <= scores["folding_fraction"] <= 1.0
        assert np.isfinite(scores["mse_after"])
    assert report["volume_smoke"]["mse_after"] >= 0.0
    assert not [op for op in report["tflite"]["ops"] if "FLEX" in op]
    assert report["tflite"]["max_abs_difference"] < 1e-4
    assert (output_dir / "registration.png").is_file()


@needs_mnist
def test_rectify_digits_smoke(tmp_path):
    output_dir = tmp_path / "rectify_digits"
    result = subprocess.run(
        [sys.executable, "examples/rectify_digits.py", "--smoke",
         "--output-dir", str(output_dir)],
        cwd=REPO_ROOT, env=_env(), capture_output=True, text=True,
        timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((output_dir / "report.json").read_text())
    assert len(report["control_points"]) == 10
    assert 0.0 < report["mse_identity"] < 1.0
    assert 0.0 <= report["mse_rectified"] < 1.0
    assert report["tflite_vs_keras_max_abs"] < 1e-4
    assert "RESIZE_BILINEAR" in report["tflite_ops"]
    assert not [op for op in report["tflite_ops"] if "FLEX" in op]
    for name in ("rectified.png", "model.keras", "rectifier.tflite"):
        assert (output_dir / name).is_file()
