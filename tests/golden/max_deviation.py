"""Prints keras_stn's largest deviation from the recorded PyTorch values.

    python tests/golden/max_deviation.py

Covers every affine_grid case (2-D and 3-D) and every interpolation ×
padding × align_corners case of grid_sample on images and volumes (outputs
and gradients w.r.t. images and grid) in `torch_golden.npz`, and the θ
gradients at the identity and for random θ (relative to the largest value).
Needs no torch.
"""

import os

import numpy as np
import tensorflow as tf

import keras_stn

GOLDEN = os.path.join(os.path.dirname(__file__), "torch_golden.npz")


def main():
    golden = dict(np.load(GOLDEN))
    worst = {"affine_grid": 0.0, "output": 0.0, "grad_images": 0.0,
             "grad_grid": 0.0}
    cases = {}
    for key in golden:
        parts = key.split("/")
        if parts[0] in ("affine_grid", "affine_grid_3d") and parts[-1] == "grid":
            prefix = "/".join(parts[:-1])
            size = tuple(int(part) for part in parts[2:-1])
            grid = keras_stn.affine_grid(golden[prefix + "/theta"], size,
                                         parts[1] == "True")
            worst["affine_grid"] = max(
                worst["affine_grid"], np.abs(grid.numpy() - golden[key]).max())
        elif parts[-1] == "output":
            volume = parts[0] == "3d"
            prefix = "/".join(parts[:-1])
            interpolation, padding_mode, align = parts[-5:-2]
            images = tf.constant(golden["volumes" if volume else "images"])
            upstream = golden["volume_upstream" if volume else "upstream"]
            grid = tf.constant(golden[prefix + "/grid"])
            with tf.GradientTape(persistent=True) as tape:
                tape.watch([images, grid])
                out = keras_stn.grid_sample(images, grid, interpolation,
                                            padding_mode, align == "True")
                loss = tf.reduce_sum(out * upstream)
            grad_grid = tape.gradient(loss, grid)
            grad_grid = (np.zeros(grid.shape) if grad_grid is None
                         else grad_grid.numpy())
            found = {
                "output": out.numpy(),
                "grad_images": tape.gradient(loss, images).numpy(),
                "grad_grid": grad_grid,
            }
            for name, value in found.items():
                worst[name] = max(worst[name], np.abs(
                    value - golden[f"{prefix}/{name}"]).max())
            label = ("3-D " if volume else "") + interpolation
            cases[label] = max(cases.get(label, 0.0),
                               float(np.abs(found["output"] - golden[
                                   prefix + "/output"]).max()))
    theta_worst = _theta_gradients(golden)
    print(f"torch {golden['torch_version']}: max |keras_stn - torch| = "
          + ", ".join(f"{name} {value:.2e}" for name, value in worst.items())
          + "; worst output by mode: "
          + ", ".join(f"{label} {value:.2e}" for label, value in cases.items())
          + "; θ gradients, max relative: "
          + ", ".join(f"{label} {value:.2e}"
                      for label, value in theta_worst.items()))


def _theta_gradient(images, theta, upstream, interpolation, padding_mode,
                    align_corners):
    theta = tf.constant(theta)
    with tf.GradientTape() as tape:
        tape.watch(theta)
        grid = keras_stn.affine_grid(theta, upstream.shape[1:3],
                                     align_corners)
        out = keras_stn.grid_sample(images, grid, interpolation, padding_mode,
                                    align_corners)
        loss = tf.reduce_sum(out * upstream)
    return tape.gradient(loss, theta).numpy()


def _relative(actual, expected):
    return float(np.abs(actual - expected).max()
                 / max(1.0, np.abs(expected).max()))


def _theta_gradients(golden):
    worst = {"identity": 0.0, "random": 0.0}
    identity = np.tile(np.eye(2, 3, dtype=np.float32), (2, 1, 1))
    for key in golden:
        parts = key.split("/")
        if parts[0] == "identity_theta" and len(parts) == 6:
            prefix = "/".join(parts[:3])
            actual = _theta_gradient(
                golden[prefix + "/images"], identity,
                golden[prefix + "/upstream"], parts[3], parts[4],
                parts[5] == "True")
            worst["identity"] = max(worst["identity"],
                                    _relative(actual, golden[key]))
        elif parts[0] == "random_theta" and len(parts) == 3:
            actual = _theta_gradient(
                golden["random_theta/images"], golden["random_theta/theta"],
                golden["random_theta/upstream"], "bilinear", parts[1],
                parts[2] == "True")
            worst["random"] = max(worst["random"],
                                  _relative(actual, golden[key]))
    return worst


if __name__ == "__main__":
    main()
