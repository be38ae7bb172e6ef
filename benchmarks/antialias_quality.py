"""How well `grid_sample(..., antialias=True)` filters warps that shrink.

    python benchmarks/antialias_quality.py [--size 256] [--repeats 20]

The reference, written here in NumPy and sharing no code with keras_stn:
the continuous bilinear image (zeros outside) integrated over each output
pixel's footprint, approximated by 16×16 supersampling: the warp is
evaluated at 16×16 evenly spaced points inside every output pixel, the image
read bilinearly there, and the 256 values averaged.

Workloads (`align_corners=False`, zeros padding) on two test images, a zone
plate (a chirp whose frequency rises to Nyquist at the corners: it aliases
visibly) and band-limited noise: pure downscales by 2, 3, 4 and 8; a 30°
rotation with a 3× downscale; a perspective warp whose scale changes across
the image (about 1.5× at the bottom to 5× at the top).

Printed: the RMS error against the reference of plain bilinear sampling,
of `antialias=True`, and (pure scales) of `tf.image.resize(antialias=True)`;
the error ratio plain / antialias; and the cost of `antialias=True` against
the plain warp (`affine_grid` + `grid_sample` in a `tf.function`, TF's
default path) on a batch of 8 images at 4× downscale and at 2×
magnification.
"""

import argparse
import statistics
import time

import numpy as np

SUPERSAMPLING = 16


# -- The reference ------------------------------------------------------------


def bilinear(image, x, y):
    """NumPy bilinear samples of `image [H, W]` at pixel coordinates, zeros
    outside (each corner outside the image contributes nothing)."""
    height, width = image.shape
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    total = np.zeros(x.shape)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = (x0 + dx).astype(np.int64), (y0 + dy).astype(np.int64)
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            values = image[np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)]
            total += np.where(inside, wx * wy * values, 0.0)
    return total


def reference(image, warp, out_size):
    """The footprint average: `warp(u, v)` maps normalised output
    coordinates to normalised input ones."""
    height, width = image.shape
    out_h, out_w = out_size
    offsets = (np.arange(SUPERSAMPLING) + 0.5) / SUPERSAMPLING
    rows = (np.arange(out_h)[:, None] + offsets[None]).reshape(-1)
    cols = (np.arange(out_w)[:, None] + offsets[None]).reshape(-1)
    v, u = np.meshgrid(rows / out_h * 2 - 1, cols / out_w * 2 - 1,
                       indexing="ij")
    xn, yn = warp(u, v)
    x, y = ((xn + 1) * width - 1) / 2, ((yn + 1) * height - 1) / 2
    fine = bilinear(image, x, y)
    return fine.reshape(out_h, SUPERSAMPLING, out_w,
                        SUPERSAMPLING).mean(axis=(1, 3))


def pixel_centres(out_size):
    out_h, out_w = out_size
    v, u = np.meshgrid((np.arange(out_h) + 0.5) / out_h * 2 - 1,
                       (np.arange(out_w) + 0.5) / out_w * 2 - 1,
                       indexing="ij")
    return u, v


# -- Test images and warps ------------------------------------------------------


def test_images(size, seed=0):
    coords = (np.arange(size) - size / 2 + 0.5) / size
    x, y = np.meshgrid(coords, coords)
    zone_plate = 0.5 + 0.5 * np.cos(np.pi * size / 2 * (x * x + y * y))
    rng = np.random.default_rng(seed)
    spectrum = np.fft.fft2(rng.normal(size=(size, size)))
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size)))
    noise = np.real(np.fft.ifft2(spectrum * (frequency < 0.35)))
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return [zone_plate, noise]


def affine(theta):
    a, b, c, d, e, f = theta

    def warp(u, v):
        return a * u + b * v + c, d * u + e * v + f

    return warp


def perspective(u, v):
    """Scale ~1.5× at the bottom (v = 1) to ~5× at the top (v = -1)."""
    w = 1.0 + 0.55 * v
    return (0.9 * u) / w * 0.6, (0.9 * v + 0.1) / w * 0.6


def workloads(size):
    rows = []
    for scale in (2, 3, 4, 8):
        rows.append((f"downscale ×{scale}", affine([1, 0, 0, 0, 1, 0]),
                     (size // scale, size // scale), scale))
    angle = np.deg2rad(30.0)
    rows.append(("rotate 30° + downscale ×3",
                 affine([np.cos(angle), -np.sin(angle), 0,
                         np.sin(angle), np.cos(angle), 0]),
                 (size // 3, size // 3), None))
    rows.append(("perspective (×1.5 to ×5)", perspective,
                 (size // 3, size // 3), None))
    return rows


# -- keras_stn and TF --------------------------------------------------------


def keras_stn_samples(images, warp, out_size, antialias):
    import keras_stn

    u, v = pixel_centres(out_size)
    xn, yn = warp(u, v)
    grid = np.stack([xn, yn], -1)[None].astype("float32")
    grid = np.repeat(grid, len(images), axis=0)
    batch = np.stack(images)[..., None].astype("float32")
    return np.asarray(keras_stn.grid_sample(batch, grid,
                                            antialias=antialias))[..., 0]


def tf_resize(images, out_size):
    import tensorflow as tf

    batch = np.stack(images)[..., None].astype("float32")
    return tf.image.resize(batch, out_size, method="bilinear",
                           antialias=True).numpy()[..., 0]


def rms(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


def quality(size):
    images = test_images(size)
    rows = []
    for name, warp, out_size, scale in workloads(size):
        truth = np.stack([reference(image, warp, out_size)
                          for image in images])
        plain = rms(keras_stn_samples(images, warp, out_size, False), truth)
        filtered = rms(keras_stn_samples(images, warp, out_size, True), truth)
        resized = (rms(tf_resize(images, out_size), truth)
                   if scale is not None else None)
        rows.append({"workload": name, "plain": plain,
                     "antialias": filtered, "tf_resize": resized})
    return rows


def cost(size, repeats):
    import tensorflow as tf

    import keras_stn

    rng = np.random.default_rng(1)
    images = tf.constant(rng.uniform(size=(8, size, size, 3)), tf.float32)
    theta = tf.constant(np.tile([[1.0, 0.2, 0.0, -0.2, 1.0, 0.0]], (8, 1)),
                        tf.float32)
    rows = []
    for name, out in (("shrink ×4", size // 4), ("magnify ×2", size * 2)):
        times = {}
        for antialias in (False, True):
            @tf.function
            def warp(images, theta, antialias=antialias, out=out):
                grid = keras_stn.affine_grid(theta, (out, out))
                return keras_stn.grid_sample(images, grid,
                                             antialias=antialias)

            for _ in range(3):
                warp(images, theta).numpy()
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                warp(images, theta).numpy()
                samples.append(time.perf_counter() - start)
            times[antialias] = 1000.0 * statistics.median(samples)
        rows.append({"workload": f"8×{size}²×3, {name}", "plain_ms": times[False],
                     "antialias_ms": times[True]})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"{args.size}² zone plate and band-limited noise; RMS error against "
          f"{SUPERSAMPLING}×{SUPERSAMPLING} supersampling of the bilinear "
          "image over each output pixel")
    print()
    print("| workload | plain bilinear | antialias=True | plain / antialias "
          "| tf.image.resize(antialias=True) | antialias / tf.image.resize |")
    print("|---|---|---|---|---|---|")
    for row in quality(args.size):
        resized = row["tf_resize"]
        print(f"| {row['workload']} | {row['plain']:.4f} | "
              f"{row['antialias']:.4f} | {row['plain'] / row['antialias']:.2f}× | "
              + (f"{resized:.4f} | {row['antialias'] / resized:.2f}× |"
                 if resized is not None else " | |"), flush=True)
    print()
    print("| cost (TF default path, median ms) | plain | antialias=True | ratio |")
    print("|---|---|---|---|")
    for row in cost(args.size, args.repeats):
        print(f"| {row['workload']} | {row['plain_ms']:.2f} | "
              f"{row['antialias_ms']:.2f} | "
              f"{row['antialias_ms'] / row['plain_ms']:.2f}× |", flush=True)
    return 0


if __name__ == "__main__":
    main()
