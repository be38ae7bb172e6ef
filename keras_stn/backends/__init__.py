"""One interface, one small module per Keras backend.

`keras_stn.affine_grid`, `grid_sample`, the transforms and the
`SpatialTransformer` layer do their argument checks once, then hand the
arithmetic to the module of the backend that owns the tensors:

- `tensorflow`: the shared kernels (`keras_stn.kernels`) in its TF op
  namespace, the graphs TFLite export traces (its package also holds the
  TF-only formulations: the fast 2-D bilinear kernel, the TFLite per-axis
  planes, the fused-multiply-add emulation and the compilation targets);
- `jax`: the shared kernels in `keras.ops` (`keras_ops`), compiled with
  `jax.jit`;
- `torch`: `torch.nn.functional.affine_grid` / `grid_sample`, whose
  conventions are ours, after the same hostile-coordinate guard, and the
  shared kernels in `keras.ops` for the other transforms' grids.

Each module provides `ops` (its op namespace), `affine_grid` and
`affine_coordinates(theta, size, align_corners, name=None)`,
`grid_sample(images, grid, interpolation, padding_mode, align_corners,
name=None)`, `sample_coordinates(images, coords, ...)`,
`flatten(transform, params)`, `transform_grid` and
`transform_coordinates(transform, params, size, align_corners)`, and
`warp(images, transform, params, size, interpolation, padding_mode,
align_corners)` (the layer's grid generator and sampler in one), on
arguments already checked.

A TensorFlow tensor always takes the TensorFlow path, whatever the Keras
backend (so `tf.data` pipelines keep working under JAX or PyTorch); other
values take the Keras backend's path.
"""

import importlib

import keras

_MODULES = {"tensorflow": "keras_stn.backends.tensorflow",
            "jax": "keras_stn.backends.jax",
            "torch": "keras_stn.backends.torch"}


def name_of(*values):
    """The backend owning `values`: that of the first TF, JAX or torch
    tensor among them, else Keras' backend."""
    for value in values:
        module = type(value).__module__
        for prefix, backend in (("tensorflow", "tensorflow"), ("torch", "torch"),
                                ("jax", "jax"), ("jaxlib", "jax")):
            if module == prefix or module.startswith(prefix + "."):
                return backend
    backend = keras.backend.backend()
    if backend not in _MODULES:
        raise NotImplementedError(
            f"keras_stn runs on the TensorFlow, JAX and PyTorch backends of "
            f"Keras. Received: backend={backend!r}")
    return backend


def for_values(*values):
    """The backend module for `values` (see `name_of`)."""
    return importlib.import_module(_MODULES[name_of(*values)])


def require_tensorflow(feature):
    """Raises a `RuntimeError` naming `feature` unless Keras runs on
    TensorFlow (export to TFLite and SavedModel are TensorFlow tools)."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{feature} needs Keras' TensorFlow backend (it converts "
            "TensorFlow graphs). Received: backend="
            f"{backend!r}. Save the model with model.save('model.keras') and "
            "load it in a process with KERAS_BACKEND=tensorflow: the file "
            "and its predictions are the same on every backend.")


def is_symbolic(*values):
    """True if any of `values` is a `keras.KerasTensor` (a functional
    model's placeholder), which the public ops hand to a Keras operation."""
    return any(isinstance(value, keras.KerasTensor) for value in values)


def checked(value, backend=None):
    """`(tensor, backend module)`: `value` as a tensor of `backend` (by
    default the backend that owns it; lists and NumPy arrays become
    Keras-backend tensors)."""
    backend = backend or for_values(value)
    if backend.NAME == "tensorflow":
        import tensorflow as tf

        return tf.convert_to_tensor(value), backend
    return keras.ops.convert_to_tensor(value), backend
