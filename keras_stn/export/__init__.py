"""Deployment: builtins-only TFLite conversion, op listing and inference.

SavedModel export needs nothing of ours: `model.export(path)` (Keras 3)
writes a SavedModel whose `serve` endpoint takes any batch size.

`export_tflite` converts a Keras model (or a SavedModel folder) with
TFLite's builtin ops only and refuses any model that would need Flex
(Select TF), custom or control-flow ops. Quantisation keeps the spatial
transformer's coordinate path (θ, grid and sampling arithmetic) in float:
8-bit grid coordinates would move samples by whole pixels.

Modules: `convert` (`export_tflite`), `inspect` (`tflite_ops`, reading a
flatbuffer's graph and checking what it holds), `run` (`run_tflite`, with
LiteRT) and `parity` (`tflite_parity`: a file against its Keras model).
"""

from keras_stn.export.convert import export_tflite
from keras_stn.export.inspect import tflite_ops
from keras_stn.export.parity import tflite_parity
from keras_stn.export.run import run_tflite

__all__ = ["export_tflite", "run_tflite", "tflite_ops", "tflite_parity"]
