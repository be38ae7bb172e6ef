"""keras_stn: Spatial Transformer Networks as a Keras 3 layer.

It runs on Keras' TensorFlow, JAX and PyTorch backends (`keras_stn.backends`),
and exports to builtins-only TFLite from TensorFlow.

Convention: coordinates are normalised to [-1, 1], x then y, θ maps target
(output) coordinates to source (input) coordinates and `align_corners` has
PyTorch's meaning, so `affine_grid` and `grid_sample` agree with
`torch.nn.functional.affine_grid` / `grid_sample` to float precision.

Importing the package has no side effects: it registers its saveable
classes with Keras (so `keras.saving.load_model` needs no `custom_objects`)
and loads nothing else; the other public names load on first use, so on JAX
and PyTorch TensorFlow loads only when a TensorFlow tensor, the export
functions or the main job need it.
"""

import importlib
import os as _os
import sys as _sys

__version__ = "0.1.0"

# Public name -> the module that defines it.
_ATTRIBUTES = {
    # The layer and its ops.
    "SpatialTransformer": "keras_stn.spatial_transformer",
    "Warp": "keras_stn.field_layers",
    "IntegrateVelocity": "keras_stn.field_layers",
    "affine_coordinates": "keras_stn.grid",
    "affine_grid": "keras_stn.grid",
    "grid_sample": "keras_stn.sampling",
    "sample_coordinates": "keras_stn.sampling",
    # Identity heads.
    "localization_head": "keras_stn.initializers",
    "IdentityInitializer": "keras_stn.initializers",
    # Export (TFLite: TensorFlow; ONNX: TensorFlow and PyTorch).
    "export_tflite": "keras_stn.export",
    "run_tflite": "keras_stn.export",
    "tflite_ops": "keras_stn.export",
    "export_onnx": "keras_stn.export",
    # Settings.
    "set_jit_compile": "keras_stn.core.config",
    "jit_compile_enabled": "keras_stn.core.config",
    "use_jit_compile": "keras_stn.core.config",
}
_SUBMODULES = ("backends", "callbacks", "core", "export", "field_layers",
               "fields", "grid",
               "initializers", "paper", "sampling", "spatial_transformer",
               "transforms")

__all__ = [
    "SpatialTransformer",
    "Warp",
    "IntegrateVelocity",
    "affine_coordinates",
    "affine_grid",
    "grid_sample",
    "sample_coordinates",
    "transforms",
    "fields",
    "localization_head",
    "IdentityInitializer",
    "export_tflite",
    "run_tflite",
    "tflite_ops",
    "export_onnx",
    "set_jit_compile",
    "jit_compile_enabled",
    "use_jit_compile",
]


# The modules of every saveable class (layers, initializer, losses): loading a
# `.keras` file finds them by their registered names.
_REGISTERING = ("keras_stn.spatial_transformer", "keras_stn.field_layers",
                "keras_stn.initializers", "keras_stn.fields")


def register_serializables():
    """Imports the modules that register keras_stn's saveable classes.

    `import keras_stn` does it, except in the `keras-stn` command, which
    calls it once it has set TensorFlow's log level (Keras' TensorFlow
    backend loads TensorFlow, whose C++ logs read that level once).
    """
    for module in _REGISTERING:
        importlib.import_module(module)


def __getattr__(name):
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"keras_stn.{name}")
    else:
        raise AttributeError(f"module 'keras_stn' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_ATTRIBUTES, *_SUBMODULES})


if not _os.path.basename(_sys.argv[0] if _sys.argv else "").startswith(
        "keras-stn"):
    register_serializables()
