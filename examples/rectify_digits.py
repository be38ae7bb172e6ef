"""Rectify curved strings of MNIST digits with a free-form thin-plate spline.

The scene-text rectifiers of ASTER and RARE, on digits: three MNIST digits
side by side make a straight 32×96 strip; the input is that strip bent along
a random arc (a vertical shift that varies smoothly across it), scaled and
shifted inside a 64×192 crop. A `keras_stn.SpatialTransformer` with

- ASTER's control points: `transforms.aster_control_points(10)`, two rows
  of 5 along the top and bottom of the output;
- a localisation net that sees a 32×96 copy of the crop
  (`localization_size`);
- a bounded head (`localization_head(..., activation="sigmoid")`) that
  starts at the identity;
- an output size (32×96) unrelated to the input's (64×192);

learns to map the crop back to the straight strip (MSE to it). On held-out
strips, `report.json` gives the MSE of the identity (the crop resized) and of
the rectifier, the wall time, and the TFLite parity of the exported
rectifier; `rectified.png` shows crops, rectified strips and targets.

Run from the repository root:

    KERAS_STN_MNIST_DIR=../shared/data/mnist python examples/rectify_digits.py

`--smoke` runs a few steps in seconds, for tests.
"""

import argparse
import json
import os
import time

import keras
import numpy as np

import keras_stn
from keras_stn import transforms

# -- Setup --------------------------------------------------------------------

CROP = (64, 192)
STRIP = (32, 96)
CONTROL_POINTS = transforms.aster_control_points(10)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--test-strips", type=int, default=500)
    parser.add_argument("--output-dir", default="saved_models/rectify_digits")
    parser.add_argument("--mnist-dir", default=None,
                        help="folder of the MNIST IDX files "
                             "(default: $KERAS_STN_MNIST_DIR, else download)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps only, to check the pipeline")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.batch_size, args.test_strips = 4, 8, 16
    return args


# -- Data ---------------------------------------------------------------------


def load_digits(split, mnist_dir):
    from keras_stn.paper import datasets

    images, _ = datasets.mnist_arrays(split, mnist_dir)
    # Each digit padded to 32×32: three make a 32×96 strip.
    return np.pad(images[..., 0].astype("float32") / 255.0,
                  ((0, 0), (2, 2), (2, 2)))


def straight_strips(digits, count, rng):
    picks = rng.integers(0, len(digits), (count, 3))
    return np.concatenate([digits[picks[:, k]] for k in range(3)],
                          axis=2)[..., None]


def curved_crops(strips, rng):
    """Each strip bent along a random arc inside a 64×192 crop: output pixel
    (row, col) of the crop reads the strip at a point given by a scale, a
    shift and a vertical offset that is a smooth function of the column."""
    count = len(strips)
    height, width = CROP
    # Normalised crop coordinates, x then y, as grid_sample reads them.
    xs = (np.arange(width) + 0.5) / width * 2.0 - 1.0
    ys = (np.arange(height) + 0.5) / height * 2.0 - 1.0
    scale_x = rng.uniform(1.0, 1.25, (count, 1, 1))
    scale_y = rng.uniform(1.6, 2.2, (count, 1, 1))  # the strip is half as tall
    shift_x = rng.uniform(-0.08, 0.08, (count, 1, 1))
    shift_y = rng.uniform(-0.15, 0.15, (count, 1, 1))
    bend = rng.uniform(-0.9, 0.9, (count, 1, 1))  # arc height, crop units
    tilt = rng.uniform(-0.15, 0.15, (count, 1, 1))
    x = xs[None, None, :] * np.ones((count, height, 1))
    y = ys[None, :, None] * np.ones((count, 1, width))
    centre_line = bend * (x ** 2 - 0.5) + tilt * x + shift_y
    source_x = (x - shift_x) * scale_x
    source_y = (y - centre_line) * scale_y
    grid = np.stack([source_x, source_y], axis=-1).astype("float32")
    return np.asarray(keras_stn.grid_sample(strips, grid))


def make_batch(digits, count, rng):
    strips = straight_strips(digits, count, rng)
    return curved_crops(strips, rng), strips


# -- Model --------------------------------------------------------------------


def rectifier():
    """The ASTER-style rectifier: a small CNN on a 32×96 copy of the crop
    regresses 10 control points' source positions through a sigmoid head."""
    localization_net = keras.Sequential([
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras_stn.localization_head("tps", control_points=CONTROL_POINTS,
                                    activation="sigmoid"),
    ], name="localization_net")
    return keras.Sequential([
        keras.Input((*CROP, 1)),
        keras_stn.SpatialTransformer(
            localization_net, output_size=STRIP, transform="tps",
            control_points=CONTROL_POINTS, localization_size=STRIP,
            name="rectifier"),
    ], name="rectify_digits")


# -- Train, evaluate, export ----------------------------------------------------


def identity_mse(crops, strips):
    resized = keras.ops.image.resize(crops, STRIP, interpolation="bilinear")
    return float(np.mean((np.asarray(resized) - strips) ** 2))


def picture(crops, rectified, strips, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(crops)
    figure, axes = plt.subplots(rows, 3, figsize=(9, 1.1 * rows),
                                gridspec_kw={"width_ratios": [2, 1.5, 1.5]})
    for row in range(rows):
        for column, (image, title) in enumerate(
                ((crops[row], "curved crop 64×192"),
                 (rectified[row], "rectified 32×96"),
                 (strips[row], "straight strip (target)"))):
            axis = axes[row, column]
            axis.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    mnist_dir = args.mnist_dir or os.environ.get("KERAS_STN_MNIST_DIR")
    train_digits = load_digits("train", mnist_dir)
    test_digits = load_digits("test", mnist_dir)
    test_crops, test_strips = make_batch(test_digits, args.test_strips,
                                         np.random.default_rng(1))

    model = rectifier()
    model.compile(keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(1e-3, args.steps)), "mse")
    start = time.perf_counter()
    for _ in range(args.steps):
        crops, strips = make_batch(train_digits, args.batch_size, rng)
        model.train_on_batch(crops, strips)
    train_seconds = time.perf_counter() - start
    rectified = np.asarray(model.predict(test_crops, verbose=0))

    os.makedirs(args.output_dir, exist_ok=True)
    tflite_path = os.path.join(args.output_dir, "rectifier.tflite")
    keras_stn.export_tflite(model, tflite_path)
    tflite = keras_stn.run_tflite(tflite_path, test_crops[:16])
    model.save(os.path.join(args.output_dir, "model.keras"))
    picture(test_crops[:6], rectified[:6], test_strips[:6],
            os.path.join(args.output_dir, "rectified.png"))
    report = {
        "command": "python examples/rectify_digits.py"
                   + (" --smoke" if args.smoke else ""),
        "steps": args.steps, "batch_size": args.batch_size,
        "test_strips": args.test_strips,
        "control_points": CONTROL_POINTS.tolist(),
        "mse_identity": identity_mse(test_crops, test_strips),
        "mse_rectified": float(np.mean((rectified - test_strips) ** 2)),
        "train_seconds": train_seconds,
        "tflite_vs_keras_max_abs": float(np.max(np.abs(
            tflite - rectified[:16]))),
        "tflite_ops": keras_stn.tflite_ops(tflite_path),
    }
    with open(os.path.join(args.output_dir, "report.json"), "w") as file:
        json.dump(report, file, indent=2)
    print(json.dumps({key: report[key] for key in (
        "mse_identity", "mse_rectified", "train_seconds",
        "tflite_vs_keras_max_abs")}))
    return report


if __name__ == "__main__":
    main()
