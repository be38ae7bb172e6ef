"""`run_tflite`: a `.tflite` file run with LiteRT (`ai_edge_litert`)."""

import os
import re

import numpy as np

from keras_stn.export.inspect import read_tflite


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
    runner = _signature_runner(path, num_threads)
    input_details = runner.get_input_details()
    feed = {}
    for name, array in _named_arrays(inputs, input_details).items():
        feed[name] = _input_array(name, array, input_details[name])
    results = runner(**feed)
    output_details = runner.get_output_details()
    outputs = [
        _dequantize(results[name], output_details[name])
        for name in sorted(results, key=_natural_key)
    ]
    return outputs[0] if len(outputs) == 1 else outputs


def _signature_runner(path, num_threads=None):
    """LiteRT's runner of the model's serving signature."""
    from ai_edge_litert.interpreter import Interpreter

    flatbuffer = read_tflite(path)
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
    return interpreter.get_signature_runner(key)


def _named_arrays(inputs, input_details):
    """`inputs` (an array, a list in sorted-name order, or a dict) as a dict
    from the model's input names to arrays."""
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
    return arrays


def _input_array(name, array, detail):
    """`array` checked against the input's shape, quantised if the input
    is an integer one, in its dtype."""
    array = np.asarray(array)
    _check_input_shape(name, array.shape, detail["shape_signature"])
    if np.issubdtype(detail["dtype"], np.integer) and not np.issubdtype(
        array.dtype, np.integer
    ):
        array = _quantize(array, detail)
    return array.astype(detail["dtype"])


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
