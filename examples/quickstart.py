"""Quick start: train a small ST-CNN on rotated MNIST for about a minute.

The digits are rotated by up to ±60° (with keras_stn's own `affine_grid` and
`grid_sample`); a spatial transformer with an affine localisation net learns
to turn them back before a small CNN classifies them. The script then saves
the model as `.keras` and as a SavedModel under `saved_models/quickstart/`,
reloads both and checks they give the same predictions, and writes
`report.json`.

Run from the repository root:

    KERAS_STN_MNIST_DIR=../shared/data/mnist python examples/quickstart.py

(`KERAS_STN_MNIST_DIR` reads the four original MNIST IDX files offline;
without it tensorflow-datasets downloads MNIST.) `--smoke` runs a few steps
in seconds, for tests.
"""

import argparse
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

import keras_stn

# -- Setup --------------------------------------------------------------------

MAX_ROTATION_DEGREES = 60.0
BATCH_SIZE = 64


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=400)
    parser.add_argument("--test-examples", type=int, default=10000)
    parser.add_argument("--output-dir", default="saved_models/quickstart")
    parser.add_argument("--mnist-dir", default=None,
                        help="folder of the MNIST IDX files "
                             "(default: $KERAS_STN_MNIST_DIR, else download)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps only, to check the pipeline")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.steps_per_epoch, args.test_examples = 1, 3, 256
    return args


# -- Data ---------------------------------------------------------------------


def rotate(images, seed):
    """Rotates each image by a random angle in ±MAX_ROTATION_DEGREES."""
    batch = tf.shape(images)[0]
    limit = math.radians(MAX_ROTATION_DEGREES)
    angles = tf.random.stateless_uniform([batch], seed, -limit, limit)
    cos, sin = tf.cos(angles), tf.sin(angles)
    zeros = tf.zeros_like(angles)
    theta = tf.stack([cos, -sin, zeros, sin, cos, zeros], axis=1)
    grid = keras_stn.affine_grid(theta, (28, 28))
    return keras_stn.grid_sample(images, grid)


def make_dataset(split, mnist_dir, seed, repeat):
    dataset = keras_stn.paper.datasets.load_mnist(split, mnist_dir=mnist_dir)
    if repeat:
        dataset = dataset.shuffle(10000, seed=seed).repeat()
    dataset = dataset.batch(BATCH_SIZE)
    # A fixed seed per batch index: the same rotations on every run.
    dataset = dataset.enumerate().map(
        lambda index, batch: (
            rotate(batch[0], tf.stack([tf.cast(seed, tf.int64), index])),
            batch[1],
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


# -- Model --------------------------------------------------------------------


def build_model():
    localization_net = keras.Sequential([
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(20, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(20, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(50, activation="relu"),
        keras_stn.localization_head("affine"),
    ], name="localization_net")
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras_stn.SpatialTransformer(localization_net, name="spatial_transformer"),
        keras.layers.Conv2D(32, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(32, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ], name="st_cnn")


# -- Train, evaluate, export --------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)

    train = make_dataset("train", args.mnist_dir, args.seed, repeat=True)
    test = make_dataset("test", args.mnist_dir, args.seed + 1, repeat=False)
    test = test.take(math.ceil(args.test_examples / BATCH_SIZE))

    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.summary()
    start = time.perf_counter()
    # The dataset shuffles itself; shuffle=False only silences Keras' note.
    history = model.fit(train, epochs=args.epochs, shuffle=False,
                        steps_per_epoch=args.steps_per_epoch, verbose=2)
    train_seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(test, verbose=0)
    print(f"test accuracy on rotated MNIST: {accuracy:.4f} "
          f"(trained {train_seconds:.0f} s)")

    keras_path = os.path.join(args.output_dir, "model.keras")
    saved_model_path = os.path.join(args.output_dir, "saved_model")
    model.save(keras_path)
    model.export(saved_model_path, verbose=False)

    # Reload both and check they predict what the trained model predicts.
    images, _ = next(iter(test))
    expected = model.predict(images, verbose=0)
    reloaded = keras.saving.load_model(keras_path)
    keras_deviation = float(np.abs(reloaded.predict(images, verbose=0)
                                   - expected).max())
    served = tf.saved_model.load(saved_model_path)
    saved_model_deviation = float(np.abs(served.serve(images).numpy()
                                         - expected).max())
    print(f"reloaded .keras max deviation: {keras_deviation:.2e}; "
          f"SavedModel: {saved_model_deviation:.2e}")
    if max(keras_deviation, saved_model_deviation) > 1e-5:
        raise SystemExit("reloaded models disagree with the trained model")

    report = {
        "task": f"MNIST rotated uniformly in ±{MAX_ROTATION_DEGREES:.0f} deg",
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "batch_size": BATCH_SIZE,
        "train_seconds": round(train_seconds, 1),
        "final_train_loss": round(float(history.history["loss"][-1]), 4),
        "test_examples": args.test_examples,
        "test_accuracy": round(float(accuracy), 4),
        "test_error_percent": round(100.0 * (1.0 - float(accuracy)), 2),
        "parameters": int(model.count_params()),
        "reload_max_deviation": {"keras": keras_deviation,
                                 "saved_model": saved_model_deviation},
        "keras_stn_version": keras_stn.__version__,
        "tensorflow_version": tf.__version__,
    }
    with open(os.path.join(args.output_dir, "report.json"), "w") as file:
        json.dump(report, file, indent=2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
