"""The package as a whole: what importing it costs and changes, its import
graph, functional models from the public ops, and safe data preparation.

The functional-model tests run under every Keras backend (`.ci/run`'s three
passes); the import tests start fresh processes for the backends they name.
"""

import ast
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_stn
from tests.conftest import REPO_ROOT
from tests.conftest import assert_close

PACKAGE = REPO_ROOT / "keras_stn"
BACKEND = keras.backend.backend()


def run_python(code, backend, timeout=300, argv0=None):
    """Runs `code` in a fresh interpreter under Keras `backend`; returns the
    JSON object it prints last."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    code = textwrap.dedent(code)
    if argv0:
        code = f"import sys\nsys.argv[0] = {argv0!r}\n" + code
    result = subprocess.run([sys.executable, "-c", code],
                            cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def installed(module):
    return importlib.util.find_spec(module) is not None


# -- TensorFlow only when it is needed -----------------------------------------

_TRAIN = """
import json, sys
import numpy as np, keras, keras_stn
after_import = "tensorflow" in sys.modules
loc = keras.Sequential([keras.layers.Flatten(),
                        keras.layers.Dense(8, activation="relu"),
                        keras_stn.localization_head("affine")])
model = keras.Sequential([
    keras.Input((12, 12, 1)),
    keras_stn.SpatialTransformer(loc, output_size=(8, 8)),
    keras.layers.Flatten(), keras.layers.Dense(3)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    from_logits=True))
x = np.random.default_rng(0).random((16, 12, 12, 1), dtype="float32")
y = np.arange(16) % 3
history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
model.predict(x, verbose=0)
model.evaluate(x, y, verbose=0)
grid = keras_stn.affine_grid(np.eye(2, 3, dtype="float32")[None], (5, 6))
keras_stn.grid_sample(x[:1], keras_stn.affine_grid(
    np.eye(2, 3, dtype="float32")[None], (12, 12)))
for name in keras_stn.__all__:
    if name not in ("export_tflite", "run_tflite", "tflite_ops"):
        getattr(keras_stn, name)
print(json.dumps({"after_import": after_import,
                  "after_fit": "tensorflow" in sys.modules,
                  "loss": history.history["loss"]}))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_importing_and_training_never_load_tensorflow(backend):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    seen = run_python(_TRAIN, backend)
    assert not seen["after_import"]
    assert not seen["after_fit"]
    assert all(np.isfinite(seen["loss"]))


def test_tensorflow_tensors_load_tensorflow_on_other_backends():
    if not installed("jax"):
        pytest.skip("jax is not installed")
    seen = run_python("""
        import json, sys
        import keras_stn
        before = "tensorflow" in sys.modules
        import tensorflow as tf
        grid = keras_stn.affine_grid(tf.constant([[1.0, 0, 0, 0, 1, 0]]), (2, 3))
        print(json.dumps({"before": before, "type": type(grid).__module__}))
    """, "jax")
    assert not seen["before"]
    assert seen["type"].startswith("tensorflow")


# -- No side effects at import -----------------------------------------------

def test_importing_as_the_console_script_changes_nothing():
    seen = run_python("""
        import json, os, sys
        def state():
            status = os.fstat(2)
            return {"fd2": [status.st_dev, status.st_ino, status.st_mode],
                    "stderr": id(sys.stderr), "env": dict(os.environ)}
        before = state()
        import keras_stn
        import keras_stn.cli
        keras_stn.SpatialTransformer
        after = state()
        print(json.dumps({"same_fd2": before["fd2"] == after["fd2"],
                          "same_stderr": before["stderr"] == after["stderr"],
                          "same_env": before["env"] == after["env"]}))
    """, "tensorflow", argv0=str(pathlib.Path(sys.executable).parent
                                 / "keras-stn"))
    assert seen == {"same_fd2": True, "same_stderr": True, "same_env": True}


@pytest.mark.parametrize("argv, verbose", [
    (["export", "m.keras", "--tflite", "m.tflite"], False),
    (["export", "m.keras", "--verbose"], True),
    (["export", "m.keras", "--verb"], True),
    (["train", "--smoke", "--verbo"], True),
])
def test_argparse_decides_verbose(argv, verbose):
    from keras_stn import cli

    assert cli._wants_verbose(argv) is verbose


def test_public_names():
    assert set(keras_stn.__all__) == {
        "SpatialTransformer", "Warp", "IntegrateVelocity", "fields",
        "affine_grid", "affine_coordinates",
        "grid_sample", "sample_coordinates", "transforms",
        "localization_head", "IdentityInitializer", "export_tflite",
        "run_tflite", "tflite_ops", "export_onnx",
        "set_jit_compile", "jit_compile_enabled", "use_jit_compile"}
    for name in keras_stn.__all__:
        assert getattr(keras_stn, name) is not None
    assert "SpatialTransformer" in dir(keras_stn)
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        keras_stn.missing  # noqa: B018


# -- The import graph --------------------------------------------------------

def _imports(path):
    """`(module, top_level)` for every `keras_stn` or backend import."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}"
                                     for alias in node.names]
        found.extend((name, id(node) in top) for name in names)
    return found


def _module_name(path):
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
# The layers, top to bottom: a module imports only from layers below it.
LAYERS = [
    ("keras_stn.cli", "keras_stn.paper", "keras_stn.export",
     "keras_stn.callbacks"),
    ("keras_stn.spatial_transformer", "keras_stn.initializers",
     "keras_stn.field_layers"),
    ("keras_stn.fields", "keras_stn.transforms"),
    ("keras_stn.grid", "keras_stn.sampling"),
    ("keras_stn.backends",),
    ("keras_stn.kernels",),
    ("keras_stn.core", "keras_stn._files"),
]


def _layer(module):
    if module == "keras_stn":
        return -1
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer")


def test_no_import_runs_back_up_the_layers():
    upward = []
    for module, path in MODULES.items():
        for name, _ in _imports(path):
            # `from keras_stn import x` names the package (lazy, no
            # arrow) and then x.
            if name != "keras_stn" and name in MODULES:
                if _layer(name) < _layer(module):
                    upward.append(f"{module} -> {name}")
    assert upward == []


def test_the_core_and_the_public_ops_import_no_backend_at_the_top():
    for module, path in MODULES.items():
        neutral = (module.startswith("keras_stn.core") or module in (
            "keras_stn", "keras_stn.grid", "keras_stn.sampling",
            "keras_stn.transforms", "keras_stn.spatial_transformer",
            "keras_stn.fields", "keras_stn.field_layers",
            "keras_stn.initializers", "keras_stn.backends",
            "keras_stn.backends.keras_ops") or module.startswith(
                "keras_stn.kernels"))
        if not neutral:
            continue
        for name, top_level in _imports(path):
            root = name.split(".")[0]
            assert not (top_level and root in ("tensorflow", "jax", "torch")), (
                module, name)
            assert not name.startswith("keras_stn.backends.tensorflow") or (
                not top_level), (module, name)


def test_the_core_imports_nothing_of_the_package_above_it():
    for module, path in MODULES.items():
        if module.startswith("keras_stn.core"):
            for name, _ in _imports(path):
                assert not name.startswith("keras_stn") or name.startswith(
                    "keras_stn.core"), (module, name)
                assert name.split(".")[0] not in ("tensorflow", "jax", "torch")


def test_the_kernels_are_written_once_against_an_op_namespace():
    # The numerics import no framework (not even Keras): every backend runs
    # them through its namespace (keras_stn.kernels' docstring lists it).
    kernels = [m for m in MODULES if m.startswith("keras_stn.kernels")]
    assert len(kernels) >= 4
    for module in kernels:
        for name, _ in _imports(MODULES[module]):
            assert name.split(".")[0] not in (
                "tensorflow", "jax", "torch", "keras"), (module, name)
            assert not name.startswith("keras_stn") or name.startswith((
                "keras_stn.core", "keras_stn.kernels")), (module, name)


def test_both_op_namespaces_provide_what_the_kernels_use():
    import ast

    used = set()
    for module in [m for m in MODULES if m.startswith("keras_stn.kernels")]:
        tree = ast.parse(MODULES[module].read_text())
        for node in ast.walk(tree):
            # `ops.x` and `self.ops.x`.
            if isinstance(node, ast.Attribute) and (
                    getattr(node.value, "id", None) == "ops"
                    or getattr(node.value, "attr", None) == "ops"):
                used.add(node.attr)
    assert {"take", "floor", "meshgrid_rows", "where"} <= used
    for namespace in ("keras_stn.backends.keras_ops",
                      "keras_stn.backends.tensorflow.ops"):
        tree = ast.parse(MODULES[namespace].read_text())
        defined = {node.name for node in tree.body
                   if isinstance(node, ast.FunctionDef)}
        defined |= {target.id for node in tree.body
                    if isinstance(node, ast.Assign)
                    for target in node.targets
                    if isinstance(target, ast.Name)}
        defined |= {alias.asname or alias.name for node in tree.body
                    if isinstance(node, ast.ImportFrom)
                    for alias in node.names}
        assert used <= defined, (namespace, sorted(used - defined))


# -- Functional models from the public ops (every backend) -----------------------

def _shift_theta(batch, shift_x_pixels, width):
    """θ translating the source by an integer number of pixels in x."""
    theta = np.tile(np.array([[1, 0, 0, 0, 1, 0]], "float32"), (batch, 1))
    theta[:, 2] = 2.0 * shift_x_pixels / width
    return theta


def test_functional_model_from_affine_grid_and_grid_sample():
    images_in = keras.Input((6, 7, 2))
    theta_in = keras.Input((6,))
    grid = keras_stn.affine_grid(theta_in, (6, 7))
    assert tuple(grid.shape) == (None, 6, 7, 2)
    warped = keras_stn.grid_sample(images_in, grid, padding_mode="zeros")
    assert tuple(warped.shape) == (None, 6, 7, 2)
    model = keras.Model([images_in, theta_in], warped)
    images = np.random.default_rng(0).random((3, 6, 7, 2), dtype="float32")
    got = np.asarray(model.predict([images, _shift_theta(3, 2, 7)],
                                   verbose=0))
    # Output column j reads input column j + 2; the last two read zeros.
    expected = np.zeros_like(images)
    expected[:, :, :5] = images[:, :, 2:]
    assert_close(got, expected, kind="exact")


def test_functional_model_from_affine_coordinates_and_sample_coordinates():
    images_in = keras.Input((5, 5, 1))
    theta_in = keras.Input((2, 3))
    coords = keras_stn.affine_coordinates(theta_in, (5, 5), align_corners=True)
    assert [tuple(c.shape) for c in coords] == [(None, 5, 5)] * 2
    warped = keras_stn.sample_coordinates(images_in, coords,
                                          align_corners=True)
    model = keras.Model([images_in, theta_in], warped)
    images = np.arange(25, dtype="float32").reshape(1, 5, 5, 1)
    # A quarter turn about the centre: output (x, y) reads input (-y, x).
    theta = np.array([[[0, -1, 0], [1, 0, 0]]], "float32")
    got = np.asarray(model.predict([images, theta], verbose=0))
    np.testing.assert_allclose(got[0, ..., 0], np.rot90(images[0, ..., 0], 1),
                               atol=1e-5)


def test_symbolic_calls_check_their_arguments():
    theta_in = keras.Input((5,))
    with pytest.raises(ValueError, match="argument `theta`"):
        keras_stn.affine_grid(theta_in, (4, 4))
    images_in = keras.Input((4, 4, 1))
    with pytest.raises(ValueError, match="argument `grid`"):
        keras_stn.grid_sample(images_in, keras.Input((4, 4, 3)))
    with pytest.raises(ValueError, match="padding_mode"):
        keras_stn.grid_sample(images_in, keras.Input((4, 4, 2)),
                              padding_mode="wrap")


# -- Data preparation: in a per-run folder, one process at a time ---------------

def test_the_suite_keeps_its_data_out_of_the_home_folder():
    data_dir = os.environ["KERAS_STN_DATA_DIR"]
    home = os.path.expanduser("~")
    assert not os.path.abspath(data_dir).startswith(
        os.path.join(home, "tensorflow_datasets"))


def test_file_lock_makes_processes_take_turns(tmp_path):
    log = tmp_path / "log.txt"
    # The module alone, by path: the children need no Keras or TensorFlow.
    code = f"""
        import importlib.util, time
        spec = importlib.util.spec_from_file_location(
            "files", {str(PACKAGE / "_files.py")!r})
        files = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(files)
        with files.file_lock({str(tmp_path / "lock")!r}):
            with open({str(log)!r}, "a") as f:
                f.write("start\\n"); f.flush()
                time.sleep(0.5)
                f.write("end\\n")
    """
    processes = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                                  cwd=REPO_ROOT) for _ in range(3)]
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0]
    assert log.read_text().split() == ["start", "end"] * 3


@pytest.mark.slow
def test_two_processes_prepare_mnist_at_once(tmp_path):
    from tests.conftest import mnist_dir

    if not installed("tensorflow_datasets") or mnist_dir() is None:
        pytest.skip("needs tensorflow-datasets and the MNIST IDX files")
    code = f"""
        from keras_stn.paper import datasets
        images, labels = datasets.mnist_arrays(
            "test", {mnist_dir()!r}, {str(tmp_path)!r})
        print(images.shape[0])
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    processes = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                                  cwd=REPO_ROOT, env=env,
                                  stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    assert [out.split()[-1] for out in outputs] == ["10000", "10000"]


# -- Too large an output -----------------------------------------------------

def test_too_large_an_output_names_output_size_and_the_memory():
    loc = keras.Sequential([keras.layers.Flatten(),
                            keras_stn.localization_head("affine")])
    layer = keras_stn.SpatialTransformer(loc, output_size=(300000, 300000))
    with pytest.raises(MemoryError, match=r"`output_size`.*GiB"):
        layer.build((None, 28, 28, 1))
    with pytest.raises(ValueError, match=r"output_size=\(300000, 300000\)"):
        layer.build((None, 28, 28, 1))
