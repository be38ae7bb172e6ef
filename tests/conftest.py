"""Shared tolerances, seeds and fixtures of the test suite."""

import contextlib
import os
import pathlib

import keras
import numpy as np
import pytest

# One tolerance table, keyed by dtype. float32: a handful of ulps on values
# of order 1 after a few multiply-adds; float16: its 11-bit mantissa.
TOLERANCES = {
    "float32": {"rtol": 1e-4, "atol": 1e-5},
    "float16": {"rtol": 1e-3, "atol": 1e-3},
    "float64": {"rtol": 1e-10, "atol": 1e-10},
}
# Exact cases (identity, integer shifts, quarter turns) must hold to this.
EXACT_ATOL = 1e-6
# Named tolerances for comparisons that are not of plain float32 values.
KINDS = {
    # Identity, integer shifts, quarter turns: the snap makes them exact.
    "exact": {"rtol": 0.0, "atol": EXACT_ATOL},
    # Derivatives w.r.t. normalised coordinates scale by size / 2, and sums
    # over many pixels (images, fields) accumulate their rounding.
    "gradient": {"rtol": 1e-4, "atol": 1e-4},
    # A converted TFLite graph: the same arithmetic, reassociated by the
    # converter and LiteRT's kernels.
    "tflite": {"rtol": 0.0, "atol": 1e-4},
}


def _numpy(value):
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    return np.asarray(value)


def tolerance(*arrays, kind=None):
    """`{"rtol", "atol"}` for comparing `arrays`: a named `kind` (`KINDS`),
    else that of the least precise float dtype among them (`TOLERANCES`)."""
    if kind is not None:
        return dict(KINDS[kind])
    names = [np.dtype(a.dtype).name for a in arrays
             if np.issubdtype(a.dtype, np.floating)]
    for name in ("float16", "float32", "float64"):
        if name in names:
            return dict(TOLERANCES[name])
    return dict(TOLERANCES["float32"])


def assert_close(actual, expected, *, kind=None, rtol=None, atol=None,
                 err_msg=""):
    """`np.testing.assert_allclose` with the tolerances of the dtype (the
    least precise of the two arguments') or of a named `kind`, unless given.

    Takes NumPy arrays, Python numbers and TF, JAX or torch tensors (as in
    kornia's `BaseTester.assert_close`, defaults follow the dtype).
    """
    actual, expected = _numpy(actual), _numpy(expected)
    tolerances = tolerance(actual, expected, kind=kind)
    if rtol is not None:
        tolerances["rtol"] = rtol
    if atol is not None:
        tolerances["atol"] = atol
    np.testing.assert_allclose(actual, expected, err_msg=err_msg,
                               **tolerances)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN_PATH = REPO_ROOT / "tests" / "golden" / "torch_golden.npz"


def mnist_dir():
    """The folder of the four MNIST IDX files, or None when absent."""
    candidates = [
        os.environ.get("KERAS_STN_MNIST_DIR"),
        REPO_ROOT.parent / "shared" / "data" / "mnist",
    ]
    for candidate in candidates:
        if candidate and (
            pathlib.Path(candidate) / "train-images-idx3-ubyte.gz"
        ).exists():
            return str(candidate)
    return None


def degenerate_grid_warning(size, align_corners):
    """`pytest.warns` for the one-pixel-axis warning where `size` and
    `align_corners` call for it (as PyTorch's affine_grid warns), else a
    no-op context."""
    if align_corners and 1 in tuple(size):
        return pytest.warns(UserWarning, match="one-pixel axis")
    return contextlib.nullcontext()


@pytest.fixture(autouse=True)
def _fixed_seeds():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def golden():
    with np.load(GOLDEN_PATH) as data:
        return dict(data)


# Scripts, not test modules: the golden-value recorder imports torch, which
# the test suite must not need.
collect_ignore_glob = ["golden/*.py"]


# Under the JAX and PyTorch backends, what needs TensorFlow itself is skipped
# with its reason; tests/test_backends.py checks those backends' paths
# against the TensorFlow one (values, gradients, errors, the layer).
_KERNELS = ("the TensorFlow path's own kernels (tf.function, XLA, run-time "
            "shapes); tests/test_backends.py checks this backend's values and "
            "gradients against them")
TENSORFLOW_ONLY = {
    "test_torch_suite": _KERNELS,
    "test_kornia_suite": _KERNELS,
    "test_theta_gradients": _KERNELS,
    "test_sampling": _KERNELS,
    "test_formulations": _KERNELS,
    "test_dynamic_shapes": "run-time (unknown) shapes exist in TensorFlow "
    "graphs only",
    "test_spatial_transformer": "the layer in TensorFlow graphs, SavedModel "
    "and mixed precision; on this backend: tests/test_backends.py",
    "test_export": "SavedModel and TFLite export are TensorFlow tools",
    "test_datasets": "the paper's data pipelines and main job run on "
    "TensorFlow (tf.data, tensorflow-datasets)",
    "test_cli": "the keras-stn command runs on TensorFlow",
    "test_examples": "the examples run on TensorFlow",
    "test_benchmarks": "the benchmarks choose their backends themselves",
}


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    for item in items:
        if isinstance(item, pytest.DoctestItem):
            item.add_marker(pytest.mark.skip(
                reason="docstring examples show TensorFlow tensors"))
            continue
        reason = TENSORFLOW_ONLY.get(item.path.stem)
        if reason:
            item.add_marker(pytest.mark.skip(
                reason=f"needs Keras' TensorFlow backend: {reason} "
                f"(running {backend})"))
