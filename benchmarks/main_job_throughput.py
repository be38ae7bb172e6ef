"""The main job's training speed against the bare training step.

    KERAS_STN_MNIST_DIR=../shared/data/mnist python benchmarks/main_job_throughput.py \\
        [--distortions RTS TC] [--steps 200] [--batch-size 64] [--rounds 2]

For each distortion and each model (the paper's CNN and ST-CNN, compiled as
the main job compiles them), three ways of running the same number of
training steps, in one process, alternating, after warm-up:

- `train_on_batch`: one in-memory batch, fed again and again (no input
  pipeline at all);
- `fit, in memory`: `model.fit` on that batch repeated by `tf.data` (the fit
  loop without the distortions);
- `main job`: `model.fit` on `datasets.distorted_mnist(..., repeat=True)`,
  the stream `keras-stn train` trains on (batches warped by one
  `grid_sample` each, prefetched).

Keras' `fit` on a CPU-only machine runs TensorFlow's runtime (no XLA). The
ratio of the main job's steps per second to the bare `train_on_batch`'s is
what the pipeline costs; the target is ≥ 0.85. Prints a Markdown table.
"""

import argparse
import os
import platform
import time

import keras
import tensorflow as tf

from keras_stn.paper import datasets
from keras_stn.paper import experiment
from keras_stn.paper import models


def build(name, distortion):
    size = datasets.CANVAS_SIZES[distortion]
    if name == "cnn":
        return models.paper_cnn((size, size, 1))
    return models.paper_st_cnn(
        (size, size, 1), output_size=experiment.ST_OUTPUT_SIZE[distortion])


def time_fit(model, dataset, steps):
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0,
              shuffle=False)
    return time.perf_counter() - start


def time_train_on_batch(model, images, labels, steps):
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    return time.perf_counter() - start


def measure(distortion, name, steps, batch_size, rounds, mnist_dir):
    keras.utils.set_random_seed(0)
    model = experiment.compile_model(build(name, distortion), 1e-3, 10**6)
    stream = datasets.distorted_mnist(
        "fit", distortion, seed=0, repeat=True, batch_size=batch_size,
        mnist_dir=mnist_dir).prefetch(tf.data.AUTOTUNE)
    images, labels = next(iter(stream))
    images, labels = images.numpy(), labels.numpy()
    in_memory = tf.data.Dataset.from_tensors((images, labels)).repeat()
    # Warm-up: trace every path once.
    time_train_on_batch(model, images, labels, 10)
    time_fit(model, in_memory, 10)
    time_fit(model, stream, 10)
    seconds = {"train_on_batch": [], "fit, in memory": [], "main job": []}
    for _ in range(rounds):
        seconds["train_on_batch"].append(
            time_train_on_batch(model, images, labels, steps))
        seconds["fit, in memory"].append(time_fit(model, in_memory, steps))
        seconds["main job"].append(time_fit(model, stream, steps))
    return {key: steps / min(values) for key, values in seconds.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--distortions", nargs="+", default=["RTS", "TC"],
                        choices=datasets.DISTORTIONS)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mnist-dir", default=None)
    args = parser.parse_args(argv)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
          f"CPUs, TensorFlow {tf.__version__}, Keras {keras.__version__}; "
          f"{args.steps} steps of {args.batch_size}, best of {args.rounds}; "
          "steps per second\n")
    print("| distortion | model | train_on_batch | fit, in memory | "
          "main job | main job / train_on_batch |")
    print("|---|---|---|---|---|---|")
    rows = []
    for distortion in args.distortions:
        for name in ("cnn", "st_cnn"):
            rates = measure(distortion, name, args.steps, args.batch_size,
                            args.rounds, args.mnist_dir)
            ratio = rates["main job"] / rates["train_on_batch"]
            rows.append({"distortion": distortion, "model": name,
                         "ratio": ratio, **rates})
            print(f"| {distortion} | {name} | {rates['train_on_batch']:.1f} | "
                  f"{rates['fit, in memory']:.1f} | {rates['main job']:.1f} | "
                  f"{ratio:.2f} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
