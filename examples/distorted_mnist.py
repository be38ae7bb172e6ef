"""The main job: CNN vs ST-CNN on the paper's distorted MNIST.

Reproduces the comparison of Jaderberg et al. (2015), Table 1, on a CPU:
trains the paper's CNN baseline and an ST-CNN of comparable size (affine
spatial transformer, identity start) on one distortion — R, RTS (default),
P, E or TC — with the same budget, scores both on the same fixed test set,
and writes to `saved_models/<distortion>/`: `model.keras`, a SavedModel,
`model.tflite` (builtin ops, parity checked), `report.json`,
`transforms.png` and `training_curves.png`.

    KERAS_STN_MNIST_DIR=../shared/data/mnist python examples/distorted_mnist.py
    python examples/distorted_mnist.py --distortion TC --epochs 20
    python examples/distorted_mnist.py --smoke      # seconds, for tests

This script is the same code as `keras-stn train`; each step (Data, Models,
Train, Evaluate, Export) is a function of `keras_stn.paper.experiment`, built from
the public `keras_stn.paper.datasets`, `keras_stn.paper.models` and `keras_stn.export`.
"""

import argparse

from keras_stn.paper import experiment


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    experiment.add_arguments(parser)
    return experiment.run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
