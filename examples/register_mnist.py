"""Register MNIST digits: a small U-Net predicts a dense field (moving → fixed).

Pairs of different digits of the same class are registered three ways, each
trained with MSE plus a smoothness penalty on the field:

- `displacement`: the U-Net outputs a displacement, `keras_stn.Warp` warps;
- `diffeomorphic`: it outputs a stationary velocity, integrated by
  `keras_stn.IntegrateVelocity` (scaling and squaring), then warped;
- `affine`: a `keras_stn.SpatialTransformer` baseline (one affine θ).

On held-out pairs (from MNIST's test digits) `report.json` gives the Dice of
the ink masks (pixels > 0.5) before and after, the MSE, the folding fraction
(pixels with det ∇φ ≤ 0) and each model's wall time. The diffeomorphic model
is exported to builtins-only TFLite and checked against Keras; a 3-D smoke
registers a synthetic volume. `registration.png` shows moving, fixed,
warped and the deformation grid.

Run from the repository root:

    KERAS_STN_MNIST_DIR=../shared/data/mnist python examples/register_mnist.py

`--smoke` runs a few steps in seconds, for tests.
"""

import argparse
import json
import os
import time

import keras
import numpy as np

import keras_stn
from keras_stn import fields

# -- Setup --------------------------------------------------------------------

SIZE = 32  # MNIST's 28 padded by 2: two poolings of the U-Net divide it.
SMOOTHNESS = {"displacement": 0.05, "diffeomorphic": 0.05}
VARIANTS = ("displacement", "diffeomorphic", "affine")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--test-pairs", type=int, default=1000)
    parser.add_argument("--output-dir", default="saved_models/register_mnist")
    parser.add_argument("--mnist-dir", default=None,
                        help="folder of the MNIST IDX files "
                             "(default: $KERAS_STN_MNIST_DIR, else download)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps only, to check the pipeline")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.batch_size, args.test_pairs = 4, 8, 32
    return args


# -- Data ---------------------------------------------------------------------


def load_digits(split, mnist_dir):
    from keras_stn.paper import datasets

    images, labels = datasets.mnist_arrays(split, mnist_dir)
    images = np.pad(images[..., 0].astype("float32") / 255.0,
                    ((0, 0), (2, 2), (2, 2)))[..., None]
    return images, np.asarray(labels)


def same_class_pairs(images, labels, count, rng):
    """`count` (moving, fixed) pairs of different digits of one class."""
    by_class = [np.flatnonzero(labels == digit) for digit in range(10)]
    digits = rng.integers(0, 10, count)
    moving = np.array([rng.choice(by_class[d]) for d in digits])
    fixed = np.array([rng.choice(by_class[d]) for d in digits])
    return images[moving], images[fixed]


# -- Models -------------------------------------------------------------------


def conv(x, filters):
    return keras.layers.Conv2D(filters, 3, padding="same",
                               activation="leaky_relu")(x)


def unet_field(x):
    """A two-level U-Net from the stacked pair to a 2-channel field."""
    level1 = conv(conv(x, 16), 16)
    level2 = conv(keras.layers.MaxPooling2D()(level1), 32)
    bottom = conv(keras.layers.MaxPooling2D()(level2), 32)
    up2 = conv(keras.layers.Concatenate()(
        [keras.layers.UpSampling2D()(bottom), level2]), 32)
    up1 = conv(keras.layers.Concatenate()(
        [keras.layers.UpSampling2D()(up2), level1]), 16)
    return keras.layers.Conv2D(
        2, 3, padding="same",
        kernel_initializer=keras.initializers.RandomNormal(stddev=1e-5))(up1)


def build(variant):
    """`(model, outputs)`: [moving, fixed] → [warped, field]."""
    moving = keras.Input((SIZE, SIZE, 1), name="moving")
    fixed = keras.Input((SIZE, SIZE, 1), name="fixed")
    pair = keras.layers.Concatenate()([moving, fixed])
    if variant == "affine":
        localization_net = keras.Sequential([
            keras.layers.Conv2D(16, 5, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 5, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras_stn.localization_head("affine"),
        ])
        both, theta = keras_stn.SpatialTransformer(
            localization_net, return_theta=True)(pair)
        warped = keras.layers.Lambda(lambda t: t[..., :1])(both)
        field = keras.layers.Lambda(
            lambda t: fields.affine_to_displacement(t, (SIZE, SIZE)))(theta)
        model = keras.Model([moving, fixed], [warped, field])
        model.compile(keras.optimizers.Adam(1e-3),
                      loss=["mse", fields.SmoothnessLoss("l2")],
                      loss_weights=[1.0, 0.0])  # the field: reported only
        return model
    field = unet_field(pair)
    if variant == "diffeomorphic":
        field = keras_stn.IntegrateVelocity(steps=7)(field)
    warped = keras_stn.Warp()([moving, field])
    model = keras.Model([moving, fixed], [warped, field])
    model.compile(keras.optimizers.Adam(1e-3),
                  loss=["mse", fields.SmoothnessLoss("l2")],
                  loss_weights=[1.0, SMOOTHNESS[variant]])
    return model


# -- Train and evaluate ---------------------------------------------------------


def dice(a, b):
    a, b = a > 0.5, b > 0.5
    overlap = np.sum(a & b, axis=(1, 2, 3))
    return float(np.mean(2 * overlap / np.maximum(a.sum((1, 2, 3))
                                                  + b.sum((1, 2, 3)), 1)))


def train_and_evaluate(variant, train, test, args):
    rng = np.random.default_rng(args.seed)
    model = build(variant)
    start = time.perf_counter()
    losses = []
    for _ in range(args.steps):
        moving, fixed = same_class_pairs(*train, args.batch_size, rng)
        zeros = np.zeros((len(moving), SIZE, SIZE, 2), "float32")
        loss = model.train_on_batch([moving, fixed], [fixed, zeros])
        losses.append(float(np.ravel(loss)[0]))
    train_seconds = time.perf_counter() - start
    moving, fixed = test
    warped, field = model.predict([moving, fixed], batch_size=256, verbose=0)
    return model, {
        "dice_before": dice(moving, fixed),
        "dice_after": dice(warped, fixed),
        "mse_before": float(np.mean((moving - fixed) ** 2)),
        "mse_after": float(np.mean((warped - fixed) ** 2)),
        "folding_fraction": float(keras.ops.convert_to_numpy(
            fields.folding_fraction(field))),
        "train_seconds": round(train_seconds, 1),
        "final_loss": float(np.mean(losses[-50:])),
    }, (warped, field)


# -- Export and the 3-D smoke -----------------------------------------------------


def export_and_check(model, moving, fixed, output_dir):
    path = os.path.join(output_dir, "diffeomorphic.tflite")
    keras_stn.export_tflite(model, path)
    # By input name: a list would follow the signature's sorted names.
    got = keras_stn.run_tflite(path, {"moving": moving, "fixed": fixed})
    want = model.predict([moving, fixed], verbose=0)
    return {"ops": keras_stn.tflite_ops(path),
            "max_abs_difference": float(max(np.abs(g - w).max()
                                            for g, w in zip(got, want)))}


def volume_smoke(steps, rng):
    """Registers a synthetic 16³ ball onto a shifted copy of itself."""
    index = np.stack(np.meshgrid(*[np.arange(16)] * 3, indexing="ij"), -1)
    ball = lambda centre: (np.linalg.norm(index - centre, axis=-1)  # noqa: E731
                           < 5).astype("float32")[None, ..., None]
    moving, fixed = ball(np.array([7.0, 7.0, 7.0])), ball(np.array([8.0, 8.5, 7.5]))
    moving_in = keras.Input((16, 16, 16, 1))
    fixed_in = keras.Input((16, 16, 16, 1))
    x = keras.layers.Concatenate()([moving_in, fixed_in])
    x = keras.layers.Conv3D(8, 3, padding="same", activation="leaky_relu")(x)
    velocity = keras.layers.Conv3D(
        3, 3, padding="same",
        kernel_initializer=keras.initializers.RandomNormal(stddev=1e-5))(x)
    field = keras_stn.IntegrateVelocity(steps=5)(velocity)
    model = keras.Model([moving_in, fixed_in],
                        [keras_stn.Warp()([moving_in, field]), field])
    model.compile(keras.optimizers.Adam(3e-3),
                  loss=["mse", fields.SmoothnessLoss("l2")],
                  loss_weights=[1.0, 0.01])
    zeros = np.zeros((1, 16, 16, 16, 3), "float32")
    for _ in range(steps):
        model.train_on_batch([moving, fixed], [fixed, zeros])
    warped, field = model.predict([moving, fixed], verbose=0)
    return {"mse_before": float(np.mean((moving - fixed) ** 2)),
            "mse_after": float(np.mean((warped - fixed) ** 2)),
            "folding_fraction": float(keras.ops.convert_to_numpy(
                fields.folding_fraction(field))),
            "steps": steps}


def draw(path, test, outputs, count=6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    moving, fixed = test
    rows = ["moving", "fixed", "displacement", "diffeomorphic", "affine",
            "grid (diffeomorphic)"]
    figure, axes = plt.subplots(len(rows), count, figsize=(count * 1.3, 8.2))
    field = outputs["diffeomorphic"][1]
    for column in range(count):
        pictures = [moving[column], fixed[column]] + [
            outputs[variant][0][column] for variant in VARIANTS]
        for row, picture in enumerate(pictures):
            axes[row, column].imshow(picture[..., 0], cmap="gray", vmin=0,
                                     vmax=1)
        grid_axis = axes[-1, column]
        u = field[column]
        ys, xs = np.mgrid[0:SIZE, 0:SIZE]
        for line in range(0, SIZE, 3):
            grid_axis.plot(xs[line] + u[line, :, 0], ys[line] + u[line, :, 1],
                           "k", lw=0.5)
            grid_axis.plot(xs[:, line] + u[:, line, 0],
                           ys[:, line] + u[:, line, 1], "k", lw=0.5)
        grid_axis.set_xlim(0, SIZE - 1)
        grid_axis.set_ylim(SIZE - 1, 0)
        grid_axis.set_aspect("equal")
    for row, name in enumerate(rows):
        axes[row, 0].set_ylabel(name, fontsize=7)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    rng = np.random.default_rng(args.seed + 1)
    train = load_digits("fit", args.mnist_dir)
    test_images, test_labels = load_digits("test", args.mnist_dir)
    test = same_class_pairs(test_images, test_labels, args.test_pairs, rng)
    report = {"command": "python examples/register_mnist.py"
              + (" --smoke" if args.smoke else ""),
              "steps": args.steps, "batch_size": args.batch_size,
              "test_pairs": args.test_pairs, "backend": keras.backend.backend(),
              "smoothness_weight": SMOOTHNESS, "models": {}}
    outputs, models = {}, {}
    for variant in VARIANTS:
        models[variant], report["models"][variant], outputs[variant] = (
            train_and_evaluate(variant, train, test, args))
        print(variant, json.dumps(report["models"][variant]))
    report["volume_smoke"] = volume_smoke(3 if args.smoke else 200, rng)
    if keras.backend.backend() == "tensorflow":
        report["tflite"] = export_and_check(
            models["diffeomorphic"], test[0][:8], test[1][:8], args.output_dir)
    draw(os.path.join(args.output_dir, "registration.png"), test, outputs)
    with open(os.path.join(args.output_dir, "report.json"), "w") as file:
        json.dump(report, file, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "tflite"},
                     indent=1))


if __name__ == "__main__":
    main()
