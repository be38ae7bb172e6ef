"""MNIST addition with two spatial transformers in parallel (the paper's 2×ST-CNN).

Each input is a 42×42×2 image: two independently RTS-distorted MNIST digits
(rotated ±45°, scaled 0.7–1.2, placed anywhere on a 42×42 canvas), one per
channel. The target is their sum (0–18). Two spatial transformers look at
the whole two-channel input in parallel — each can learn to attend to one of
the digits — and the CNN classifies their concatenated outputs
(Jaderberg et al. 2015, appendix A.4).

    KERAS_STN_MNIST_DIR=../shared/data/mnist python examples/mnist_addition.py
    python examples/mnist_addition.py --smoke      # seconds, for tests

Writes `saved_models/mnist_addition/`: `model.keras`, `report.json` and
`transforms.png` (each transformer's view of a few test pairs).
"""

import argparse
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

import keras_stn

# -- Setup --------------------------------------------------------------------

BATCH_SIZE = 64
NUM_CLASSES = 19  # sums 0..18


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=500)
    parser.add_argument("--test-examples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="saved_models/mnist_addition")
    parser.add_argument("--mnist-dir", default=None)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.steps_per_epoch, args.test_examples = 1, 3, 64
    return args


# -- Data ---------------------------------------------------------------------


def pairs(split, seed, repeat, mnist_dir, batch_size, count=None):
    """Batches of two RTS digits per example, stacked as channels; label =
    their sum."""
    first = keras_stn.paper.datasets.distorted_mnist(
        split, "RTS", seed=seed, repeat=repeat, batch_size=batch_size,
        count=count, mnist_dir=mnist_dir)
    # A second stream with another seed: other digits, other distortions
    # (shuffled, so never paired with itself).
    second = keras_stn.paper.datasets.distorted_mnist(
        split, "RTS", seed=seed + 1000, repeat=True, batch_size=batch_size,
        mnist_dir=mnist_dir)
    return tf.data.Dataset.zip((first, second)).map(
        lambda a, b: (tf.concat([a[0], b[0][:tf.shape(a[0])[0]]], axis=-1),
                      a[1] + b[1][:tf.shape(a[1])[0]]))


# -- Model --------------------------------------------------------------------


def build_model():
    """Two spatial transformers on one input, their outputs concatenated."""
    inputs = keras.Input((42, 42, 2))
    views = [
        keras_stn.SpatialTransformer(
            keras_stn.paper.models.paper_localization_net(
                "affine", name=f"localization_net_{index}"),
            output_size=(28, 28), name=f"spatial_transformer_{index}",
        )(inputs)
        for index in range(2)
    ]
    features = keras.layers.Concatenate(axis=-1)(views)  # 28×28×4
    features = keras.layers.Conv2D(32, 9, activation="relu")(features)
    features = keras.layers.MaxPooling2D(2)(features)
    features = keras.layers.Conv2D(64, 7, activation="relu")(features)
    features = keras.layers.MaxPooling2D(2)(features)
    features = keras.layers.Flatten()(features)
    features = keras.layers.Dense(128, activation="relu")(features)
    outputs = keras.layers.Dense(NUM_CLASSES)(features)
    return keras.Model(inputs, outputs, name="two_st_cnn")


# -- Train, evaluate, export --------------------------------------------------


def save_picture(model, images, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = [model.get_layer(f"spatial_transformer_{i}")(images).numpy()
             for i in range(2)]
    figure, axes = plt.subplots(4, 6, figsize=(9, 6.4))
    for column in range(6):
        cells = [images[column, ..., 0], images[column, ..., 1],
                 views[0][column].max(-1), views[1][column].max(-1)]
        titles = ["digit A", "digit B", "ST 1 (max)", "ST 2 (max)"]
        for row, (cell, title) in enumerate(zip(cells, titles)):
            axes[row, column].imshow(cell, cmap="gray", vmin=0, vmax=1)
            axes[row, column].set_title(title, fontsize=8)
            axes[row, column].axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    train = pairs("train", args.seed, True, args.mnist_dir, BATCH_SIZE)
    train = train.prefetch(tf.data.AUTOTUNE)
    test = pairs("test", args.seed, False, args.mnist_dir, 256,
                 count=args.test_examples).cache()

    model = build_model()
    schedule = keras.optimizers.schedules.CosineDecay(
        1e-3, decay_steps=args.epochs * args.steps_per_epoch)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(train, epochs=args.epochs, shuffle=False,
                        steps_per_epoch=args.steps_per_epoch, verbose=2)
    train_seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(test, verbose=0)
    print(f"test error of the sum: {100 * (1 - accuracy):.2f} %")

    model.save(os.path.join(args.output_dir, "model.keras"))
    images, _ = next(iter(test))
    save_picture(model, images[:6], os.path.join(args.output_dir,
                                                 "transforms.png"))
    report = {
        "task": "sum of two RTS-distorted MNIST digits (42x42x2 input)",
        "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch,
        "batch_size": BATCH_SIZE, "train_seconds": round(train_seconds, 1),
        "test_examples": args.test_examples,
        "test_error_percent": round(100.0 * (1.0 - float(accuracy)), 2),
        "parameters": int(model.count_params()),
        "final_train_loss": round(float(history.history["loss"][-1]), 4),
        "smoke": args.smoke,
    }
    with open(os.path.join(args.output_dir, "report.json"), "w") as file:
        json.dump(report, file, indent=2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
