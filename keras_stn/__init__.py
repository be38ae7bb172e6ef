"""keras_stn: Spatial Transformer Networks as a Keras 3 layer.

It runs on Keras' TensorFlow, JAX and PyTorch backends (`keras_stn.backends`),
and exports to builtins-only TFLite from TensorFlow.

Convention: coordinates are normalised to [-1, 1], x then y, θ maps target
(output) coordinates to source (input) coordinates and `align_corners` has
PyTorch's meaning, so `affine_grid` and `grid_sample` agree with
`torch.nn.functional.affine_grid` / `grid_sample` to float precision.
"""

import os as _os
import sys as _sys

if (_os.path.basename(_sys.argv[0]).startswith("keras-stn")
        and "--verbose" not in _sys.argv):
    # The `keras-stn` command is quiet by default. TensorFlow's and LiteRT's
    # C++ (absl) logs go to file descriptor 2 from the moment TensorFlow
    # loads, which importing this package does (`keras_stn.cli` cannot run
    # earlier), and no setting silences all of them: the command sends
    # descriptor 2 to /dev/null and keeps Python's own stderr (errors,
    # warnings) on a copy of it. `--verbose` keeps everything.
    _os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    _os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    _sys.stderr.flush()
    _python_stderr = _os.dup(2)
    _null = _os.open(_os.devnull, _os.O_WRONLY)
    _os.dup2(_null, 2)
    _os.close(_null)
    _sys.stderr = _os.fdopen(_python_stderr, "w", buffering=1)

from keras_stn import backends
from keras_stn import callbacks
from keras_stn import export
from keras_stn import grid
from keras_stn import initializers
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
    # The layer and its ops.
    "SpatialTransformer",
    "affine_coordinates",
    "affine_grid",
    "grid_sample",
    "sample_coordinates",
    "localization_head",
    "IdentityInitializer",
    "export_tflite",
    "run_tflite",
    "tflite_ops",
    # Their modules.
    "backends",
    "callbacks",
    "export",
    "grid",
    "initializers",
    "sampling",
    "transforms",
    # The paper's reproduction (imported on first use).
    "paper",
]


def __getattr__(name):
    # The paper's datasets, models and main job are not the library: they
    # load when first used (`keras_stn.paper.datasets…`).
    if name == "paper":
        import importlib

        return importlib.import_module("keras_stn.paper")
    raise AttributeError(f"module 'keras_stn' has no attribute {name!r}")
