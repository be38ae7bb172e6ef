"""Deployment: builtins-only TFLite conversion, op listing and inference.

SavedModel export needs nothing of ours: `model.export(path)` (Keras 3)
writes a SavedModel whose `serve` endpoint takes any batch size.

`export_tflite` converts a Keras model (or a SavedModel folder) with
TFLite's builtin ops only and refuses any model that would need Flex
(Select TF), custom or control-flow ops. Quantisation keeps the spatial
transformer's coordinate path (θ, grid and sampling arithmetic) in float:
8-bit grid coordinates would move samples by whole pixels.
"""

import os
import re
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_stn import backends
from keras_stn import grid
from keras_stn import sampling
from keras_stn import spatial_transformer
from keras_stn.backends.tensorflow.compilation import use_target

_SUPPORTED_QUANTIZATION = (None, "float16", "dynamic_range", "int8")
# Besides custom ops (Select TF ops among them, listed as "CUSTOM:<code>",
# e.g. "CUSTOM:FlexImageProjectiveTransformV3"), a builtins-only model of
# ours has no control flow.
_CONTROL_FLOW_OPS = ("WHILE", "IF")
# Name scopes of the coordinate path: those of SpatialTransformer.call and
# of the public ops, for models that call `affine_grid`/`grid_sample` directly.
_GRID_SCOPES = (spatial_transformer.GRID_SCOPE, grid.SCOPE)
_COORDINATE_SCOPES = _GRID_SCOPES + (spatial_transformer.SAMPLER_SCOPE,
                                     sampling.SCOPE)


def _scope_pattern(scopes):
    return re.compile("(^|/)(" + "|".join(map(re.escape, scopes)) + ")/")


_GRID_PATTERN = _scope_pattern(_GRID_SCOPES)
_COORDINATE_PATTERN = _scope_pattern(_COORDINATE_SCOPES)


def _builtin_names():
    from ai_edge_litert import schema_py_generated as schema

    return {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_") and isinstance(value, int)
    }


def _read_graph(flatbuffer):
    """Ops of every subgraph as dicts: name, inputs, outputs (tensor names)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    builtin_names = _builtin_names()
    op_names = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = builtin_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = "CUSTOM:" + (code.CustomCode() or b"").decode()
        op_names.append(name)
    ops = []
    for graph_index in range(model.SubgraphsLength()):
        graph = model.Subgraphs(graph_index)
        tensors = [
            graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())
        ]

        def names(indices):
            return [tensors[i] for i in indices if i >= 0]

        for op_index in range(graph.OperatorsLength()):
            op = graph.Operators(op_index)
            ops.append({
                "name": op_names[op.OpcodeIndex()],
                "inputs": names(op.InputsAsNumpy()) if op.InputsLength() else [],
                "outputs": names(op.OutputsAsNumpy()) if op.OutputsLength() else [],
            })
    return ops


def _check_tflite_path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "Invalid value for argument `path`. Expected a file path ending "
            f"in '.tflite'. Received: path={path!r}"
        )
    if not os.fspath(path).endswith(".tflite"):
        raise ValueError(
            "Invalid value for argument `path`. Expected a file path ending "
            f"in '.tflite'. Received: path={os.fspath(path)!r}"
        )
    return os.fspath(path)


def _read_tflite(path):
    """The bytes of a `.tflite` file, or a `ValueError` naming the file."""
    path = _check_tflite_path(path)
    try:
        with open(path, "rb") as file:
            flatbuffer = file.read()
    except OSError as error:
        raise ValueError(
            f"Invalid value for argument `path`: cannot read {path!r} "
            f"({error.strerror}).") from None
    # A TFLite flatbuffer carries the file identifier "TFL3" at bytes 4-8.
    if len(flatbuffer) < 8 or flatbuffer[4:8] != b"TFL3":
        raise ValueError(
            f"Invalid value for argument `path`: {path!r} is not a TFLite "
            "model (no 'TFL3' flatbuffer identifier). Expected a file written "
            "by keras_stn.export_tflite or TFLite's converter.")
    return flatbuffer


def tflite_ops(path):
    """The sorted TFLite operator names a `.tflite` model uses.

    Builtin ops are named as in TFLite's schema (`"GATHER"`,
    `"BATCH_MATMUL"` …); custom ops, including Select TF ops, as
    `"CUSTOM:<code>"` (e.g. `"CUSTOM:FlexImageProjectiveTransformV3"`).

    Args:
        path: path of a `.tflite` file.

    Returns:
        A sorted list of distinct operator names.

    Example:

    ```python
    assert "GATHER" in keras_stn.tflite_ops("saved_models/stn.tflite")
    ```
    """
    flatbuffer = _read_tflite(path)
    try:
        return sorted({op["name"] for op in _read_graph(flatbuffer)})
    except Exception as error:  # a truncated or corrupt flatbuffer
        raise ValueError(
            f"Invalid value for argument `path`: {os.fspath(path)!r} is not a "
            f"readable TFLite model ({type(error).__name__}: {error}).") from None


def _forbidden(op_names):
    return sorted(
        name for name in set(op_names)
        if name.startswith("CUSTOM") or "FLEX" in name.upper()
        or name in _CONTROL_FLOW_OPS
    )


def _float_path_nodes(ops):
    """Output tensor names to keep in float when quantising to int8.

    The ops in the coordinate scopes, plus the ops that produce θ (the inputs
    of the grid generator coming from outside it), so that θ itself is not
    rounded to 8 bits.
    """
    inside = [
        op for op in ops
        if any(_COORDINATE_PATTERN.search(name) for name in op["outputs"])
    ]
    nodes = {name for op in inside for name in op["outputs"]}
    grid_inputs = {
        name
        for op in inside
        if any(_GRID_PATTERN.search(out) for out in op["outputs"])
        for name in op["inputs"]
        if name not in nodes
    }
    for op in ops:
        if grid_inputs.intersection(op["outputs"]):
            nodes.update(op["outputs"])
    return sorted(nodes)


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
    denylist = _float_path_nodes(_read_graph(float_model))
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


def _check_quantized(flatbuffer):
    """Raises a `ValueError` unless the int8 model keeps the coordinate path
    in float and every quantisation scale finite: read from the file."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    integer_types = {schema.TensorType.INT8, schema.TensorType.UINT8,
                     schema.TensorType.INT16}
    for graph_index in range(model.SubgraphsLength()):
        graph = model.Subgraphs(graph_index)
        for index in range(graph.TensorsLength()):
            tensor = graph.Tensors(index)
            name = tensor.Name().decode()
            quantization = tensor.Quantization()
            scales = (quantization.ScaleAsNumpy()
                      if quantization is not None and quantization.ScaleLength()
                      else np.zeros(0))
            if not np.all(np.isfinite(scales)):
                raise ValueError(
                    f"The int8 model has a non-finite scale on tensor "
                    f"'{name}'; it would crash LiteRT. Calibrate with inputs "
                    "that keep every activation finite.")
            if (tensor.Type() in integer_types
                    and _COORDINATE_PATTERN.search(name)):
                raise ValueError(
                    f"The int8 model quantised the coordinate path tensor "
                    f"'{name}'; grids and sampling arithmetic must stay in "
                    "float. Please report this as a keras_stn bug.")


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
    path = _check_tflite_path(path)
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

    with tempfile.TemporaryDirectory() as scratch:
        if isinstance(model, (str, os.PathLike)):
            saved_model_dir = os.fspath(model)
            if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
                raise ValueError(
                    "Invalid value for argument `model`. Expected a keras.Model "
                    "or a SavedModel folder (holding saved_model.pb). "
                    f"Received: model={saved_model_dir!r}"
                )
        elif isinstance(model, keras.Model):
            saved_model_dir = os.path.join(scratch, "saved_model")
            with use_target("tflite"):
                model.export(saved_model_dir, format="tf_saved_model",
                             verbose=False)
        else:
            raise TypeError(
                "Invalid value for argument `model`. Expected a keras.Model or "
                f"a SavedModel folder path. Received: {type(model).__name__}"
            )
        try:
            flatbuffer = _convert(saved_model_dir, quantization,
                                  representative_dataset)
        except _CalibrationError:
            raise
        except Exception as error:  # the converter's own error types vary
            raise ValueError(
                "The model cannot be converted to TFLite with builtin ops "
                "only (no Flex/Select TF or custom ops). Converter said: "
                f"{error}"
            ) from error

    if quantization == "int8":
        _check_quantized(flatbuffer)
    forbidden = _forbidden(op["name"] for op in _read_graph(flatbuffer))
    if forbidden:
        raise ValueError(
            "The converted model needs ops that are not TFLite builtins: "
            f"{forbidden}. keras_stn models never do; the offending ops come "
            "from elsewhere in the model."
        )
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as file:
        file.write(flatbuffer)
    return path


def _quantize(array, detail):
    scale, zero_point = detail["quantization"]
    if not scale:
        return array.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    quantized = np.round(array / scale + zero_point)
    return np.clip(quantized, info.min, info.max).astype(detail["dtype"])


def _dequantize(array, detail):
    scale, zero_point = detail["quantization"]
    if not scale or not np.issubdtype(array.dtype, np.integer):
        return array
    return (array.astype(np.float32) - zero_point) * scale


def _check_input_shape(name, shape, signature):
    """Only the batch axis (and axes the model left dynamic) may differ:
    LiteRT would otherwise reshape the input silently or fail inside."""
    expected = tuple(int(dim) for dim in signature)
    if len(shape) != len(expected) or any(
            want not in (-1, got) for want, got in zip(expected[1:],
                                                       shape[1:])):
        readable = tuple(None if dim < 0 else dim for dim in expected)
        raise ValueError(
            f"Invalid value for argument `inputs`: input {name!r} of the "
            f"model has shape {readable} (None: any size). Received: an "
            f"array of shape {tuple(shape)}. Only the batch axis may "
            "differ.")


def _natural_key(name):
    return [int(part) if part.isdigit() else part
            for part in re.split(r"(\d+)", name)]


def run_tflite(path, inputs, num_threads=None):
    """Runs a `.tflite` model with LiteRT (`ai_edge_litert`).

    The batch axis of each input is resized to the arrays given, so one file
    serves any batch size; every other axis must match the model's (a
    `ValueError` names both shapes). Integer-quantised inputs and outputs
    are (de)quantised with the model's own scale and zero point.

    Args:
        path: path of a `.tflite` file.
        inputs: an array; a list of arrays in the order of the model's
            serving signature (its input names, sorted); or a dict from
            input name to array.
        num_threads: interpreter threads; `None` for LiteRT's default.

    Returns:
        One float array for a single-output model, else a list of them in
        output order (`output_0`, `output_1`, … of a Keras export).

    Raises:
        ValueError: if `path` is not a readable TFLite model, or the inputs
            do not match the model's (count, names, or a non-batch axis).

    Example:

    ```python
    logits = keras_stn.run_tflite("saved_models/stn.tflite", images)
    ```
    """
    from ai_edge_litert.interpreter import Interpreter

    flatbuffer = _read_tflite(path)
    path = os.fspath(path)
    try:
        interpreter = Interpreter(model_content=flatbuffer,
                                  num_threads=num_threads)
    except ValueError as error:
        raise ValueError(
            f"Invalid value for argument `path`: LiteRT cannot load {path!r} "
            f"({error}).") from None
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise ValueError(
            f"The model at {path!r} has no serving signature; convert it with "
            "keras_stn.export_tflite."
        )
    key = "serving_default" if "serving_default" in signatures else next(
        iter(signatures))
    runner = interpreter.get_signature_runner(key)
    input_details = runner.get_input_details()
    names = sorted(input_details, key=_natural_key)
    if isinstance(inputs, dict):
        arrays = dict(inputs)
    else:
        listed = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(listed) != len(names):
            raise ValueError(
                f"Invalid value for argument `inputs`. The model takes "
                f"{len(names)} input(s) {names}. Received: {len(listed)} "
                "array(s)"
            )
        arrays = dict(zip(names, listed))
    if sorted(arrays) != sorted(names):
        raise ValueError(
            f"Invalid value for argument `inputs`. Expected inputs named "
            f"{names}. Received: {sorted(arrays)}"
        )
    feed = {}
    for name, array in arrays.items():
        detail = input_details[name]
        array = np.asarray(array)
        _check_input_shape(name, array.shape, detail["shape_signature"])
        if np.issubdtype(detail["dtype"], np.integer) and not np.issubdtype(
            array.dtype, np.integer
        ):
            array = _quantize(array, detail)
        feed[name] = array.astype(detail["dtype"])
    results = runner(**feed)
    output_details = runner.get_output_details()
    outputs = [
        _dequantize(results[name], output_details[name])
        for name in sorted(results, key=_natural_key)
    ]
    return outputs[0] if len(outputs) == 1 else outputs


def tflite_parity(model, path, inputs):
    """How closely a `.tflite` file reproduces a Keras model on `inputs`.

    Args:
        model: the `keras.Model` the file was converted from.
        path: path of the `.tflite` file.
        inputs: an array (or what `run_tflite` takes) of model inputs.

    Returns:
        A dict: `"examples"`, and per model output (in order) under
        `"outputs"` a dict of `"max_abs"` and `"mean_abs"` differences, plus
        `"top1_agreement"` for `[batch, classes]` outputs.

    Example:

    ```python
    parity = keras_stn.export.tflite_parity(model, "stn.tflite", images)
    assert parity["outputs"][0]["max_abs"] < 1e-4
    ```
    """
    expected = model(inputs)
    expected = [np.asarray(e) for e in (
        expected if isinstance(expected, (list, tuple)) else [expected])]
    actual = run_tflite(path, inputs)
    actual = actual if isinstance(actual, list) else [actual]
    outputs = []
    for want, got in zip(expected, actual):
        difference = np.abs(np.asarray(got, np.float64) - want)
        entry = {"max_abs": float(difference.max()),
                 "mean_abs": float(difference.mean())}
        if want.ndim == 2 and want.shape[-1] > 1:
            entry["top1_agreement"] = float(np.mean(
                np.argmax(got, -1) == np.argmax(want, -1)))
        outputs.append(entry)
    return {"examples": int(len(expected[0])), "outputs": outputs}
