"""`export_tflite`: a Keras model or SavedModel to builtins-only TFLite."""

import os
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_stn import backends
from keras_stn.backends.tensorflow.compilation import use_target
from keras_stn.export.inspect import check_quantized
from keras_stn.export.inspect import check_tflite_path
from keras_stn.export.inspect import float_path_nodes
from keras_stn.export.inspect import forbidden_ops
from keras_stn.export.inspect import read_graph

_SUPPORTED_QUANTIZATION = (None, "float16", "dynamic_range", "int8")


def export_tflite(model, path, quantization=None, representative_dataset=None):
    """Converts a model to TFLite with builtin ops only and writes it.

    The batch dimension stays dynamic: `run_tflite` (or any LiteRT
    interpreter after `resize_tensor_input`) runs the file at any batch size.

    Args:
        model: a `keras.Model`, or the path of a SavedModel folder (as
            written by `model.export(path)`).
        path: the `.tflite` file to write.
        quantization: `None` (float32), `"float16"` (float16 weights),
            `"dynamic_range"` (int8 weights, float activations) or `"int8"`
            (int8 weights and activations, calibrated on
            `representative_dataset`; float32 inputs and outputs). In every
            mode the spatial transformers' θ, grids and sampling arithmetic
            stay in float, so samples land where the float model puts them.
        representative_dataset: for `"int8"`, a callable returning an
            iterable of lists of input arrays (one list per calibration
            batch), as TFLite's converter takes.

    Returns:
        `path`.

    Raises:
        ValueError: if `path` does not end in `.tflite`, `quantization` is
            unknown, `"int8"` lacks a representative dataset, or the model
            would need ops that are not TFLite builtins (named in the
            message).

    Example:

    ```python
    keras_stn.export_tflite(model, "saved_models/stn.tflite")
    outputs = keras_stn.run_tflite("saved_models/stn.tflite", images)
    ```
    """
    backends.require_tensorflow("keras_stn.export_tflite")
    path = check_tflite_path(path)
    _check_quantization(quantization, representative_dataset)
    with tempfile.TemporaryDirectory() as scratch:
        flatbuffer = _converted(_saved_model(model, scratch), quantization,
                                representative_dataset)
    _check_converted(flatbuffer, quantization)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as file:
        file.write(flatbuffer)
    return path


def _check_quantization(quantization, representative_dataset):
    if quantization not in _SUPPORTED_QUANTIZATION:
        raise ValueError(
            "Invalid value for argument `quantization`. Expected one of "
            f"{_SUPPORTED_QUANTIZATION}. Received: quantization={quantization!r}"
        )
    if quantization == "int8" and representative_dataset is None:
        raise ValueError(
            "Argument `representative_dataset` is required for "
            "quantization='int8': a callable yielding lists of input arrays "
            "for calibration. Received: representative_dataset=None"
        )
    if representative_dataset is not None and not callable(representative_dataset):
        raise TypeError(
            "Invalid value for argument `representative_dataset`. Expected a "
            "callable returning an iterable of lists of input arrays. "
            f"Received: {type(representative_dataset).__name__}"
        )


def _saved_model(model, scratch):
    """The SavedModel folder of `model`: its own path, or a Keras model
    exported into `scratch` with the TFLite formulations."""
    if isinstance(model, (str, os.PathLike)):
        saved_model_dir = os.fspath(model)
        if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
            raise ValueError(
                "Invalid value for argument `model`. Expected a keras.Model "
                "or a SavedModel folder (holding saved_model.pb). "
                f"Received: model={saved_model_dir!r}"
            )
        return saved_model_dir
    if isinstance(model, keras.Model):
        saved_model_dir = os.path.join(scratch, "saved_model")
        with use_target("tflite"):
            model.export(saved_model_dir, format="tf_saved_model",
                         verbose=False)
        return saved_model_dir
    raise TypeError(
        "Invalid value for argument `model`. Expected a keras.Model or "
        f"a SavedModel folder path. Received: {type(model).__name__}"
    )


def _converted(saved_model_dir, quantization, representative_dataset):
    try:
        return _convert(saved_model_dir, quantization, representative_dataset)
    except _CalibrationError:
        raise
    except Exception as error:  # the converter's own error types vary
        raise ValueError(
            "The model cannot be converted to TFLite with builtin ops "
            "only (no Flex/Select TF or custom ops). Converter said: "
            f"{error}"
        ) from error


def _check_converted(flatbuffer, quantization):
    """What the converter wrote: builtins only; for int8, the coordinate
    path in float and every scale finite."""
    if quantization == "int8":
        check_quantized(flatbuffer)
    forbidden = forbidden_ops(op["name"] for op in read_graph(flatbuffer))
    if forbidden:
        raise ValueError(
            "The converted model needs ops that are not TFLite builtins: "
            f"{forbidden}. keras_stn models never do; the offending ops come "
            "from elsewhere in the model."
        )


def _convert(saved_model_dir, quantization, representative_dataset):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization is None:
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
        return converter.convert()
    if quantization == "dynamic_range":
        return converter.convert()
    # Full-integer int8, except for the coordinate path: ops that cannot
    # (or, for the denylisted ones, must not) be quantised stay in float.
    float_model = _convert(saved_model_dir, None, None)
    denylist = float_path_nodes(read_graph(float_model))
    _check_calibration(float_model, denylist, representative_dataset)
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    with warnings.catch_warnings():
        # The debugger (TF's own selective-quantisation tool) still builds a
        # tf.lite.Interpreter internally, which warns of its deprecation.
        warnings.filterwarnings(
            "ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated"
        )
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=representative_dataset,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=denylist
            ),
        )
        return debugger.get_nondebug_quantized_model()


class _CalibrationError(ValueError):
    """Calibration data int8 conversion must not be run on."""


def _check_calibration(float_model, denylist, representative_dataset):
    """Raises a `ValueError` if calibration would see non-finite values.

    Int8 calibration turns each tensor's observed range into a scale; an
    infinite range gives an infinite scale, and LiteRT then crashes on
    every input of the written file (TensorFlow's converter itself may
    crash first). So the calibration data are run through the float model
    first and every float tensor is checked.
    """
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():
        # Keeping every intermediate tensor is what this check is for.
        warnings.filterwarnings("ignore", message=r"(?s).*preserve_all_tensors")
        interpreter = Interpreter(model_content=float_model,
                                  experimental_preserve_all_tensors=True)
    runner_inputs = interpreter.get_input_details()
    # Tensors kept in float (the coordinate path) may be infinite: the
    # sampler reads those points as outside the image.
    kept_in_float = set(denylist)
    tensors = [detail for detail in interpreter.get_tensor_details()
               if detail["dtype"] in (np.float32, np.float16)
               and detail["name"] not in kept_in_float]
    for number, sample in enumerate(representative_dataset()):
        arrays = list(sample.values()) if isinstance(sample, dict) else list(
            sample)
        if len(arrays) != len(runner_inputs):
            raise _CalibrationError(
                "Invalid value for argument `representative_dataset`: each "
                f"sample must hold {len(runner_inputs)} input array(s). "
                f"Received: {len(arrays)} in sample {number}")
        for detail, array in zip(runner_inputs, arrays):
            array = np.asarray(array, detail["dtype"])
            interpreter.resize_tensor_input(detail["index"], array.shape)
        interpreter.allocate_tensors()
        for detail, array in zip(runner_inputs, arrays):
            interpreter.set_tensor(detail["index"],
                                   np.asarray(array, detail["dtype"]))
        interpreter.invoke()
        for detail in tensors:
            try:
                values = interpreter.get_tensor(detail["index"])
            except ValueError:  # constants folded away, scratch buffers
                continue
            if values.size and not np.all(np.isfinite(values)):
                raise _CalibrationError(
                    "Invalid value for argument `representative_dataset`: "
                    f"calibration sample {number} drives tensor "
                    f"'{detail['name']}' to non-finite values, which int8 "
                    "calibration would turn into infinite scales (a file "
                    "LiteRT cannot run). Expected calibration inputs that "
                    "keep every activation finite, like real inputs.")
