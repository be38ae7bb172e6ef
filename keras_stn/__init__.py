"""keras_stn: Spatial Transformer Networks as a Keras 3 / TensorFlow layer.

Convention: coordinates are normalised to [-1, 1], x then y, θ maps target
(output) coordinates to source (input) coordinates and `align_corners` has
PyTorch's meaning, so `affine_grid` and `grid_sample` agree with
`torch.nn.functional.affine_grid` / `grid_sample` to float precision.
"""

import keras as _keras

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        "keras_stn needs Keras 3 with the TensorFlow backend (its ops are "
        "TensorFlow ops, for TFLite export). Set KERAS_BACKEND=tensorflow. "
        f"Received: backend={_keras.backend.backend()!r}"
    )

from keras_stn import datasets
from keras_stn import export
from keras_stn import grid
from keras_stn import models
from keras_stn import sampling
from keras_stn import transforms
from keras_stn.export import export_tflite
from keras_stn.export import run_tflite
from keras_stn.export import tflite_ops
from keras_stn.grid import affine_coordinates
from keras_stn.grid import affine_grid
from keras_stn.initializers import IdentityInitializer
from keras_stn.initializers import localization_head
from keras_stn.sampling import grid_sample
from keras_stn.sampling import sample_coordinates
from keras_stn.spatial_transformer import SpatialTransformer

__version__ = "0.1.0"

__all__ = [
    "IdentityInitializer",
    "SpatialTransformer",
    "affine_coordinates",
    "affine_grid",
    "datasets",
    "export",
    "export_tflite",
    "grid",
    "grid_sample",
    "sample_coordinates",
    "localization_head",
    "models",
    "run_tflite",
    "sampling",
    "tflite_ops",
    "transforms",
]
