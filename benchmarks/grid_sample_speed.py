"""Speed of keras_stn's affine_grid + grid_sample against reference samplers.

    python benchmarks/grid_sample_speed.py            # the four workloads
    python benchmarks/grid_sample_speed.py --tiny     # seconds, for tests

Implementations, each measured in its own process on the same inputs
(affine θ near the identity, bilinear, zeros padding, align_corners=False):

- `keras_stn`: `keras_stn.affine_grid` + `keras_stn.grid_sample` in a
  `tf.function`, without and with XLA (`jit_compile=True`);
- `keras_stn_fused`: `keras_stn.affine_coordinates` +
  `keras_stn.sample_coordinates`, the same sampling with the grid kept as
  one plane per axis, as `SpatialTransformer` runs it;
- `naive_tf`: a gather_nd sampler as public TF STN code writes it (batch
  indices baked into a `[B, H, W, 3]` index tensor), without and with XLA;
- `torch`: `torch.nn.functional.affine_grid` + `grid_sample` (CPU, optional:
  `pip install torch==2.13.0`);
- `tflite`: the fused keras_stn sampler (as `SpatialTransformer` exports
  it) converted with `keras_stn.export_tflite`
  and run in LiteRT with 2 threads (forward only; a signature call, inputs
  set and output read included).

Modes: `fwd`; `fwd+bwd` (gradients w.r.t. images and θ); `fwd+dθ` (θ
only, an ST on raw input images). Each timing is the median of `--repeats`
calls after `--warmup` calls. Ratios are to torch in the same run (lower is
better). The peak-memory column is the growth of the process's peak RSS over
its baseline (framework loaded, inputs allocated) across the `fwd+bwd` calls.
The cost column is nanoseconds per output pixel-channel, to check that the
cost scales linearly with the workload.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

WORKLOADS = [  # batch, height, width, channels, out_height, out_width
    (256, 28, 28, 1, 28, 28),
    (128, 60, 60, 1, 60, 60),
    (32, 224, 224, 3, 224, 224),
    (8, 64, 64, 256, 64, 64),
]
TINY_WORKLOADS = [(4, 12, 12, 1, 12, 12), (2, 10, 10, 8, 8, 8)]
MODES = ("fwd", "fwd+bwd", "fwd+dθ")
IMPLEMENTATIONS = ("keras_stn", "keras_stn_xla", "keras_stn_fused",
                   "keras_stn_fused_xla", "naive_tf", "naive_tf_xla", "torch",
                   "tflite")


def inputs_for(workload, seed=0):
    batch, height, width, channels, _, _ = workload
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(batch, height, width, channels)).astype(np.float32)
    theta = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), (batch, 1))
    theta += rng.normal(0, 0.1, theta.shape).astype(np.float32)
    return images, theta


def median_seconds(call, warmup, repeats):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- TensorFlow implementations -----------------------------------------------


def naive_gather_nd_sampler(images, theta, out_height, out_width):
    """Bilinear sampling as public TF STN code writes it (gather_nd with
    baked batch indices, zeros outside by clipping and masking)."""
    import tensorflow as tf

    batch = images.shape[0]
    height, width = images.shape[1], images.shape[2]
    xs = (2.0 * np.arange(out_width) + 1.0) / out_width - 1.0
    ys = (2.0 * np.arange(out_height) + 1.0) / out_height - 1.0
    x_t, y_t = np.meshgrid(xs, ys)
    base = np.stack([x_t.ravel(), y_t.ravel(), np.ones(x_t.size)]).astype(
        np.float32)
    grid = tf.matmul(tf.reshape(theta, [batch, 2, 3]), base)  # [B, 2, HW]
    x = ((grid[:, 0] + 1.0) * width - 1.0) / 2.0
    y = ((grid[:, 1] + 1.0) * height - 1.0) / 2.0
    x0, y0 = tf.floor(x), tf.floor(y)
    x1, y1 = x0 + 1.0, y0 + 1.0
    batch_index = np.tile(np.arange(batch)[:, None], (1, out_height * out_width))

    def read(ix, iy):
        inside = tf.cast((ix >= 0) & (ix <= width - 1) & (iy >= 0)
                         & (iy <= height - 1), tf.float32)
        ix = tf.cast(tf.clip_by_value(ix, 0, width - 1), tf.int32)
        iy = tf.cast(tf.clip_by_value(iy, 0, height - 1), tf.int32)
        index = tf.stack([batch_index, iy, ix], axis=-1)
        return tf.gather_nd(images, index) * inside[..., None]

    out = ((x1 - x) * (y1 - y))[..., None] * read(x0, y0) \
        + ((x - x0) * (y1 - y))[..., None] * read(x1, y0) \
        + ((x1 - x) * (y - y0))[..., None] * read(x0, y1) \
        + ((x - x0) * (y - y0))[..., None] * read(x1, y1)
    return tf.reshape(out, [batch, out_height, out_width, images.shape[3]])


def tf_worker(name, workloads, warmup, repeats):
    import tensorflow as tf

    import keras_stn

    xla = name.endswith("_xla")
    results = []
    for workload in workloads:
        images_np, theta_np = inputs_for(workload)
        images, theta = tf.constant(images_np), tf.constant(theta_np)
        out_size = workload[4:]

        def forward(images, theta):
            if name.startswith("naive_tf"):
                return naive_gather_nd_sampler(images, theta, *out_size)
            if name.startswith("keras_stn_fused"):
                coords = keras_stn.affine_coordinates(theta, out_size)
                return keras_stn.sample_coordinates(images, coords)
            grid = keras_stn.affine_grid(theta, out_size)
            return keras_stn.grid_sample(images, grid)

        @tf.function(jit_compile=xla)
        def fwd(images, theta):
            return tf.reduce_sum(forward(images, theta))

        @tf.function(jit_compile=xla)
        def fwd_bwd(images, theta):
            with tf.GradientTape() as tape:
                tape.watch([images, theta])
                loss = tf.reduce_sum(forward(images, theta) ** 2)
            return tape.gradient(loss, [images, theta])

        @tf.function(jit_compile=xla)
        def fwd_dtheta(images, theta):
            with tf.GradientTape() as tape:
                tape.watch(theta)
                loss = tf.reduce_sum(forward(images, theta) ** 2)
            return tape.gradient(loss, theta)

        def run(function):
            def call():
                value = function(images, theta)
                value = value[0] if isinstance(value, list) else value
                value.numpy()
            return call

        row = {"workload": workload}
        row["fwd"] = median_seconds(run(fwd), warmup, repeats)
        baseline = peak_rss_mb()
        row["fwd+bwd"] = median_seconds(run(fwd_bwd), warmup, repeats)
        row["peak_mb"] = peak_rss_mb() - baseline
        row["fwd+dθ"] = median_seconds(run(fwd_dtheta), warmup, repeats)
        results.append(row)
    return results


def tflite_worker(workloads, warmup, repeats):
    import keras
    from ai_edge_litert.interpreter import Interpreter

    import keras_stn

    results = []
    for workload in workloads:
        batch, height, width, channels, out_h, out_w = workload
        images_np, theta_np = inputs_for(workload)
        image_input = keras.Input((height, width, channels), name="images")
        theta_input = keras.Input((6,), name="theta")
        warped = keras.layers.Lambda(lambda args: keras_stn.sample_coordinates(
            args[0], keras_stn.affine_coordinates(args[1], (out_h, out_w))))(
                [image_input, theta_input])
        model = keras.Model([image_input, theta_input], warped)
        with tempfile.TemporaryDirectory() as scratch:
            path = keras_stn.export_tflite(model, os.path.join(
                scratch, "sampler.tflite"))
            interpreter = Interpreter(model_path=path, num_threads=2)
            runner = interpreter.get_signature_runner("serving_default")
            names = sorted(runner.get_input_details())
            feed = dict(zip(names, [images_np, theta_np]))
            # A signature call: set inputs, invoke, read the output.
            seconds = median_seconds(lambda: runner(**feed), warmup, repeats)
        results.append({"workload": workload, "fwd": seconds})
    return results


# -- PyTorch ------------------------------------------------------------------


def torch_worker(workloads, warmup, repeats):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    results = []
    for workload in workloads:
        images_np, theta_np = inputs_for(workload)
        batch, _, _, channels, out_h, out_w = workload
        images = torch.from_numpy(images_np).permute(0, 3, 1, 2).contiguous()
        theta = torch.from_numpy(theta_np).reshape(batch, 2, 3)
        size = (batch, channels, out_h, out_w)

        def forward(images, theta):
            grid = F.affine_grid(theta, size, align_corners=False)
            return F.grid_sample(images, grid, mode="bilinear",
                                 padding_mode="zeros", align_corners=False)

        def fwd():
            with torch.no_grad():
                forward(images, theta).sum().item()

        def fwd_bwd():
            a = images.clone().requires_grad_(True)
            t = theta.clone().requires_grad_(True)
            (forward(a, t) ** 2).sum().backward()

        def fwd_dtheta():
            t = theta.clone().requires_grad_(True)
            (forward(images, t) ** 2).sum().backward()

        row = {"workload": workload}
        row["fwd"] = median_seconds(fwd, warmup, repeats)
        baseline = peak_rss_mb()
        row["fwd+bwd"] = median_seconds(fwd_bwd, warmup, repeats)
        row["peak_mb"] = peak_rss_mb() - baseline
        row["fwd+dθ"] = median_seconds(fwd_dtheta, warmup, repeats)
        results.append(row)
    return results


def worker(name, workloads, warmup, repeats):
    if name == "torch":
        return torch_worker(workloads, warmup, repeats)
    if name == "tflite":
        return tflite_worker(workloads, warmup, repeats)
    return tf_worker(name, workloads, warmup, repeats)


# -- Driver -------------------------------------------------------------------


def torch_available():
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except ImportError:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--implementations", nargs="+",
                        default=list(IMPLEMENTATIONS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    workloads = TINY_WORKLOADS if args.tiny else WORKLOADS

    if args.worker:
        print(json.dumps(worker(args.worker, workloads, args.warmup,
                                args.repeats)))
        return None

    results = {}
    for name in args.implementations:
        if name == "torch" and not torch_available():
            print("torch is not installed: no ratios (pip install torch==2.13.0)")
            continue
        command = [sys.executable, __file__, "--worker", name, "--warmup",
                   str(args.warmup), "--repeats", str(args.repeats)]
        if args.tiny:
            command.append("--tiny")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              check=False)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])

    print(f"{os.cpu_count()} CPUs; median of {args.repeats} calls after "
          f"{args.warmup} warm-up; times in ms; (ratio to torch)")
    print()
    print("| workload | implementation | fwd | fwd+bwd | fwd+dθ | "
          "peak MB (fwd+bwd) | ns per output pixel-channel (fwd) |")
    print("|---|---|---|---|---|---|---|")
    for index, workload in enumerate(workloads):
        batch, height, width, channels, out_h, out_w = workload
        label = f"B={batch}, {height}×{width}×{channels} → {out_h}×{out_w}"
        reference = results.get("torch", [None] * len(workloads))[index]
        for name, rows in results.items():
            row = rows[index]
            cells = []
            for mode in MODES:
                if mode not in row:
                    cells.append("")
                    continue
                text = f"{1000 * row[mode]:.2f}"
                if reference and name != "torch":
                    text += f" ({row[mode] / reference[mode]:.2f}×)"
                cells.append(text)
            peak = f"{row['peak_mb']:.0f}" if "peak_mb" in row else ""
            cost = 1e9 * row["fwd"] / (batch * out_h * out_w * channels)
            print(f"| {label} | {name} | {' | '.join(cells)} | {peak} | "
                  f"{cost:.2f} |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"workloads": workloads, "results": results}, file,
                      indent=1)
    return results


if __name__ == "__main__":
    main()
