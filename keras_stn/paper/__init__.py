"""The paper's reproduction: distorted MNIST, its models and the main job.

Not part of the layer library (`keras_stn`): what Jaderberg et al. (2015)
trained on, rebuilt to check the library against the paper.

- `keras_stn.paper.datasets`: MNIST through tensorflow-datasets and the
  distortions R, RTS, P, E and TC as `tf.data` pipelines.
- `keras_stn.paper.models`: the paper's CNN, localisation net and ST-CNN.
- `keras_stn.paper.experiment`: the main job (`keras-stn train`): trains
  both, writes reports, pictures and exports.
"""

from keras_stn.paper import datasets
from keras_stn.paper import models

__all__ = ["datasets", "experiment", "models"]


def __getattr__(name):
    # The main job imports plotting and training code only when asked for.
    if name == "experiment":
        import importlib

        return importlib.import_module("keras_stn.paper.experiment")
    raise AttributeError(f"module 'keras_stn.paper' has no attribute {name!r}")
