"""Deployment: builtins-only TFLite conversion, ONNX, op listing and
inference.

SavedModel export needs nothing of ours: `model.export(path)` (Keras 3)
writes a SavedModel whose `serve` endpoint takes any batch size.

`export_tflite` converts a Keras model (or a SavedModel folder) with
TFLite's builtin ops only and refuses any model that would need Flex
(Select TF), custom or control-flow ops. Quantisation keeps the spatial
transformer's coordinate path (θ, grid and sampling arithmetic) in float:
8-bit grid coordinates would move samples by whole pixels.

Modules: `convert` (`export_tflite`), `inspect` (`tflite_ops`, reading a
flatbuffer's graph and checking what it holds), `run` (`run_tflite`, with
LiteRT), `parity` (`tflite_parity`: a file against its Keras model) and
`onnx` (`export_onnx`, `run_onnx`, `onnx_ops`, `onnx_parity`; TensorFlow
and PyTorch backends). Names load with their module, so ONNX export on
PyTorch does not import TensorFlow.
"""

import importlib

_ATTRIBUTES = {
    "export_tflite": "convert",
    "tflite_ops": "inspect",
    "tflite_parity": "parity",
    "run_tflite": "run",
    "export_onnx": "onnx",
    "run_onnx": "onnx",
    "onnx_ops": "onnx",
    "onnx_parity": "onnx",
}

__all__ = ["export_tflite", "run_tflite", "tflite_ops", "tflite_parity",
           "export_onnx", "run_onnx", "onnx_ops", "onnx_parity"]


def __getattr__(name):
    if name not in _ATTRIBUTES:
        raise AttributeError(
            f"module 'keras_stn.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(
        f"keras_stn.export.{_ATTRIBUTES[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_ATTRIBUTES})
