"""Reading a TFLite flatbuffer: its ops and tensors, and the checks the
exporter makes on them (builtins only; the coordinate path in float)."""

import os
import re

import numpy as np

from keras_stn.core.scopes import AFFINE_GRID_SCOPE
from keras_stn.core.scopes import GRID_SAMPLE_SCOPE
from keras_stn.core.scopes import GRID_SCOPE
from keras_stn.core.scopes import SAMPLER_SCOPE

# Besides custom ops (Select TF ops among them, listed as "CUSTOM:<code>",
# e.g. "CUSTOM:FlexImageProjectiveTransformV3"), a builtins-only model of
# ours has no control flow.
_CONTROL_FLOW_OPS = ("WHILE", "IF")
# Name scopes of the coordinate path: those of SpatialTransformer.call and
# of the public ops, for models that call `affine_grid`/`grid_sample` directly.
_GRID_SCOPES = (GRID_SCOPE, AFFINE_GRID_SCOPE)
_COORDINATE_SCOPES = _GRID_SCOPES + (SAMPLER_SCOPE, GRID_SAMPLE_SCOPE)


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


def read_graph(flatbuffer):
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


def check_tflite_path(path):
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


def read_tflite(path):
    """The bytes of a `.tflite` file, or a `ValueError` naming the file."""
    path = check_tflite_path(path)
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
    flatbuffer = read_tflite(path)
    try:
        return sorted({op["name"] for op in read_graph(flatbuffer)})
    except Exception as error:  # a truncated or corrupt flatbuffer
        raise ValueError(
            f"Invalid value for argument `path`: {os.fspath(path)!r} is not a "
            f"readable TFLite model ({type(error).__name__}: {error}).") from None


def forbidden_ops(op_names):
    return sorted(
        name for name in set(op_names)
        if name.startswith("CUSTOM") or "FLEX" in name.upper()
        or name in _CONTROL_FLOW_OPS
    )


def float_path_nodes(ops):
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


def check_quantized(flatbuffer):
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
