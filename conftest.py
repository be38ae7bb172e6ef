"""Repository-wide pytest set-up: quiet TensorFlow, a per-run data folder and
the doctest namespace."""

import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_stn  # noqa: E402

_DATA_DIR_ENV = "KERAS_STN_DATA_DIR"  # keras_stn.paper.datasets.DATA_DIR_ENV


def pytest_configure(config):
    # The suite never writes into the user's home: tfds prepares MNIST in a
    # folder of this run, made by the controlling process before the xdist
    # workers start (they inherit it, and take turns preparing through the
    # lock in keras_stn.paper.datasets.prepare_mnist).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    config._keras_stn_saved_data_dir = os.environ.get(_DATA_DIR_ENV)
    shared = os.environ.get("KERAS_STN_TEST_DATA_DIR")
    if shared:
        # A temporary folder the caller made for several runs (.ci/run's
        # three backend passes prepare MNIST once) and removes itself.
        os.environ[_DATA_DIR_ENV] = shared
        return
    config._keras_stn_data_dir = tempfile.mkdtemp(prefix="keras_stn_data_")
    os.environ[_DATA_DIR_ENV] = config._keras_stn_data_dir


def pytest_unconfigure(config):
    if not hasattr(config, "_keras_stn_saved_data_dir"):
        return
    folder = getattr(config, "_keras_stn_data_dir", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    saved = config._keras_stn_saved_data_dir
    if saved is None:
        os.environ.pop(_DATA_DIR_ENV, None)
    else:
        os.environ[_DATA_DIR_ENV] = saved


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    names = {"keras": keras, "keras_stn": keras_stn, "np": np}
    if keras.backend.backend() == "tensorflow":
        # Docstring examples show TensorFlow tensors; they run on the
        # TensorFlow backend only (other backends skip them).
        import tensorflow as tf

        names["tf"] = tf
    doctest_namespace.update(names)
