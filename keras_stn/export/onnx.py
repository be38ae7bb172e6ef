"""ONNX: a Keras model to an `.onnx` file with a dynamic batch, checked in
onnxruntime.

Keras 3 writes ONNX itself (`model.export(path, format="onnx")`): through
tf2onnx on the TensorFlow backend and `torch.onnx` on PyTorch. keras_stn's
layers convert through both: on TensorFlow the sampler's gathers become
ONNX `GatherND` (any rank, 3-D volumes and dense fields included; no XLA
cluster is traced for it), on PyTorch `AffineGrid` and `GridSample`
(opset 20). `export_onnx` is that export with an input signature whose batch
is dynamic, followed by a parity check of the file against the model in
onnxruntime at two batch sizes.

A model trained on JAX exports through its `.keras` file under TensorFlow
(`keras-stn export model.keras --onnx FILE`): Keras' JAX exporter (jax2onnx)
has no dynamic batch size for the sampler's gathers.

onnxruntime, onnx and tf2onnx are optional: `pip install keras-stn[onnx]`.
"""

import collections
import contextlib
import os
import warnings

import keras
import numpy as np

# |ONNX - Keras| above this fails `export_onnx`'s check: float32 sampling
# agrees to a few ulps of [0, 1] values (measured ≤ 5e-6 on the committed
# models); a whole-pixel error would be ~1e-1.
PARITY_TOLERANCE = 1e-4
_BACKENDS = ("tensorflow", "torch")


def export_onnx(model, path, opset=None, check=True):
    """Writes `model` as an ONNX file with a dynamic batch size.

    On the TensorFlow backend through tf2onnx, on PyTorch through
    `torch.onnx` (Keras' own `model.export(path, format="onnx")`, here with
    every input's batch axis left dynamic). With `check`, the file is run in
    onnxruntime on uniform inputs at batch sizes 1 and 3 and compared with
    the model.

    Args:
        model: a built `keras.Model` (Sequential, functional or called
            subclassed model) with float32 inputs.
        path: the `.onnx` file to write.
        opset: the ONNX opset, or `None` for the exporter's default (15 on
            TensorFlow, 20 on PyTorch).
        check: run the parity check (needs onnxruntime).

    Returns:
        `path`.

    Raises:
        ValueError: `path` does not end in `.onnx`, the model has no known
            input shapes, or the file disagrees with the model by more than
            `PARITY_TOLERANCE`.
        RuntimeError: on the JAX backend (export the `.keras` file under
            TensorFlow instead).
        ImportError: the exporter or onnxruntime is missing.

    Example:

    ```python
    keras_stn.export_onnx(model, "saved_models/stn.onnx")
    outputs = keras_stn.export.run_onnx("saved_models/stn.onnx", images)
    ```
    """
    backend = keras.backend.backend()
    if backend not in _BACKENDS:
        raise RuntimeError(
            f"keras_stn.export_onnx runs on the TensorFlow and PyTorch "
            f"backends, not {backend!r}: save the model (model.save("
            "'model.keras')) and run `keras-stn export model.keras --onnx "
            "FILE`, which exports it under TensorFlow.")
    if not isinstance(model, keras.Model):
        raise TypeError("Invalid value for argument `model`. Expected a "
                        f"keras.Model. Received: {type(model).__name__}")
    path = os.fspath(path)
    if not path.endswith(".onnx"):
        raise ValueError("Invalid value for argument `path`. Expected a file "
                         f"name ending in .onnx. Received: path={path!r}")
    signature = input_signature(model)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    # On TensorFlow no XLA cluster is traced: `clusters` sees Keras' ONNX
    # trace itself (as for a plain `model.export(path, format="onnx")`).
    with _exporter_warnings_silenced():
        model.export(path, format="onnx", verbose=False,
                     input_signature=signature, opset_version=opset)
    if check:
        check_parity(onnx_parity(model, path), path)
    return path


def check_parity(parity, path):
    """Raises a `ValueError` if `parity` (from `onnx_parity`) exceeds
    `PARITY_TOLERANCE`."""
    if parity["max_abs"] > PARITY_TOLERANCE:
        raise ValueError(
            f"The ONNX file {path!r} disagrees with the model: max "
            f"|ONNX - Keras| = {parity['max_abs']:.3g} > "
            f"{PARITY_TOLERANCE} on uniform inputs.")


def input_signature(model):
    """Keras' `input_signature` for `model` with every batch axis dynamic:
    `[spec]` for one input, `[[spec, ...]]` for several."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            "Invalid value for argument `model`: its input shapes are "
            "unknown. Expected a Sequential or functional model with an "
            "Input, or a model called once on data. Received: "
            f"{type(model).__name__} with no inputs")
    specs = [keras.InputSpec(shape=(None, *tuple(x.shape[1:])),
                             dtype=x.dtype) for x in inputs]
    return [specs] if len(specs) > 1 else specs


@contextlib.contextmanager
def _exporter_warnings_silenced():
    """The exporters' own notices, which say nothing about this file:
    torch's tracer flags every static size read as a tensor (the spatial
    sizes are fixed by the signature; the batch stays dynamic, which the
    parity check at two batch sizes shows), its legacy exporter announces
    its deprecation, and Keras' tf2onnx patch probes `np.object`."""
    with warnings.catch_warnings():
        if keras.backend.backend() == "torch":
            import torch

            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings(
                "ignore", category=DeprecationWarning,
                message=r"(?s).*(legacy TorchScript-based ONNX export"
                        r"|feature will be removed)")
        warnings.filterwarnings("ignore", category=FutureWarning,
                                message=r".*np\.object")
        yield


def _session(path):
    try:
        import onnxruntime
    except ImportError as error:  # pragma: no cover - extra dependency
        raise ImportError(
            "Running ONNX files needs onnxruntime: pip install "
            "keras-stn[onnx]") from error
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        os.fspath(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path, inputs):
    """Runs an ONNX file in onnxruntime.

    Args:
        path: the `.onnx` file.
        inputs: an array for a single-input model, or a list of arrays in
            the model's input order; float32, batch first.

    Returns:
        The output array, or a list of them for several outputs.
    """
    session = _session(path)
    arrays = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    names = [i.name for i in session.get_inputs()]
    if len(arrays) != len(names):
        raise ValueError(
            f"Invalid value for argument `inputs`: the file takes "
            f"{len(names)} input(s) ({names}). Received: {len(arrays)}")
    outputs = session.run(None, {name: np.asarray(array, np.float32)
                                 for name, array in zip(names, arrays)})
    return outputs[0] if len(outputs) == 1 else outputs


def onnx_ops(path):
    """The opset and the op types of an ONNX file, with their counts.

    Returns:
        `{"opset": int, "ops": {op_type: count}}` (the default domain's
        opset; op types sorted by name).
    """
    import onnx

    graph = onnx.load(os.fspath(path))
    opset = next((entry.version for entry in graph.opset_import
                  if entry.domain in ("", "ai.onnx")), None)
    counts = collections.Counter(node.op_type for node in graph.graph.node)
    return {"opset": opset, "ops": dict(sorted(counts.items()))}


def onnx_parity(model, path, batch_sizes=(1, 3), seed=0):
    """The largest |ONNX - Keras| difference over uniform inputs in [0, 1]
    at each of `batch_sizes` (a dynamic batch runs them all in one file).

    Returns:
        `{"max_abs": float, "batch_sizes": [...]}`.
    """
    rng = np.random.default_rng(seed)
    largest = 0.0
    for batch in batch_sizes:
        arrays = [rng.uniform(size=(batch, *tuple(x.shape[1:]))).astype(
            np.float32) for x in model.inputs]
        feed = arrays if len(arrays) > 1 else arrays[0]
        expected = model(feed, training=False)
        expected = [keras.ops.convert_to_numpy(e) for e in (
            expected if isinstance(expected, (list, tuple)) else [expected])]
        actual = run_onnx(path, arrays)
        actual = actual if isinstance(actual, list) else [actual]
        for want, got in zip(expected, actual):
            largest = max(largest, float(np.max(np.abs(
                np.asarray(got, np.float64) - want))))
    return {"max_abs": largest, "batch_sizes": list(batch_sizes)}
