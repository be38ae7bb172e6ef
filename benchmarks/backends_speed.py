"""The layer on every Keras backend, and the ST-CNN's training step.

    python benchmarks/backends_speed.py [--repeats 20] [--fit-steps 60]
    python benchmarks/backends_speed.py --device cuda  # a GPU machine

Runs one process per backend (Keras picks its backend once per process) and
prints two Markdown tables, in milliseconds (median of `--repeats`, after
warm-up):

1. The warp alone (`affine_grid` + `grid_sample`, bilinear, zeros), forward
   and forward+backward (gradients for the images and θ), on two workloads:
   the paper's RTS transformer (64 × 42×42×1 → 28×28) and a large one
   (8 × 224×224×3 → 224×224). TensorFlow: keras_stn's TF ops in a
   `tf.function` on the default path (the warp as XLA clusters inside TF's
   runtime), with the clusters turned off (`keras_stn.use_jit_compile
   (False)`), and all compiled (`jit_compile=True`); JAX: keras_stn under
   `jax.jit`; PyTorch: keras_stn (eager, calling torch's kernels) and
   `torch.nn.functional.affine_grid` + `grid_sample` called directly.
2. One training step of the paper's ST-CNN on RTS (batch 64, Adam), through
   Keras' `model.fit` on each backend (TensorFlow's runtime as `fit` runs
   it on a CPU, by default with the warp's XLA clusters, and without them;
   JAX jit-compiled, Keras' default there; PyTorch eager), and the same
   model written in plain PyTorch, with each step's ratio to it.

`--device cuda` (or `cuda:N`) places every worker's tensors, models and
steps on that GPU (TensorFlow: `tf.device`; JAX: `jax.default_device`;
Keras: `keras.device`; torch: `.to(device)`) and waits for the device before
each clock reading (reading results back; `torch.cuda.synchronize`). Not run
here: the benchmark machines have no GPU.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from grid_sample_speed import DEVICE_PATTERN
from grid_sample_speed import is_gpu
from grid_sample_speed import tf_device_name

WORKLOADS = {"RTS 64×42²→28²": (64, 42, 42, 1, 28, 28),
             "large 8×224²×3": (8, 224, 224, 3, 224, 224)}


def keras_device_name(device):
    """`--device` in Keras' spelling (`keras.device`): `cpu:0`, `gpu:N`."""
    index = device.partition(":")[2] or "0"
    return f"gpu:{index}" if is_gpu(device) else "cpu:0"


def torch_synchronizer(device):
    """A call that waits for `device`'s queued work (nothing on a CPU)."""
    if not is_gpu(device):
        return lambda: None
    import torch

    return lambda: torch.cuda.synchronize(device)


def median_ms(function, repeats, warmup=3):
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def inputs(workload, seed=0):
    import numpy as np

    batch, height, width, channels, out_h, out_w = workload
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(batch, height, width, channels)).astype("float32")
    angle = rng.uniform(-0.5, 0.5, batch)
    scale = rng.uniform(0.8, 1.2, batch)
    theta = np.stack([scale * np.cos(angle), -scale * np.sin(angle),
                      rng.uniform(-0.2, 0.2, batch), scale * np.sin(angle),
                      scale * np.cos(angle), rng.uniform(-0.2, 0.2, batch)],
                     1).astype("float32")
    return images, theta, (out_h, out_w)


# -- Warp timings, one function per backend ----------------------------------


def warp_tensorflow(workload, repeats, device="cpu"):
    import tensorflow as tf

    with tf.device(tf_device_name(device)):
        return _warp_tensorflow(workload, repeats)


def _warp_tensorflow(workload, repeats):
    import tensorflow as tf

    import keras_stn

    images, theta, size = inputs(workload)
    images, theta = tf.constant(images), tf.constant(theta)
    rows = {}
    for label, clusters, jit in (
            ("TensorFlow default (XLA clusters)", True, False),
            ("TensorFlow runtime (opt-out)", False, False),
            ("TensorFlow XLA (jit_compile=True)", True, True)):
        @tf.function(jit_compile=jit)
        def forward(images, theta):
            return keras_stn.grid_sample(images, keras_stn.affine_grid(
                theta, size))

        @tf.function(jit_compile=jit)
        def backward(images, theta):
            with tf.GradientTape() as tape:
                tape.watch([images, theta])
                loss = tf.reduce_sum(forward(images, theta))
            return tape.gradient(loss, [images, theta])

        with keras_stn.use_jit_compile(clusters):
            rows[label] = (
                median_ms(lambda: forward(images, theta).numpy(), repeats),
                median_ms(lambda: [g.numpy() for g in backward(
                    images, theta)], repeats))
    return rows


def warp_jax(workload, repeats, device="cpu"):
    import jax
    import jax.numpy as jnp

    import keras_stn

    images, theta, size = inputs(workload)
    target = jax.devices("gpu" if is_gpu(device) else "cpu")[0]
    images, theta = jax.device_put(images, target), jax.device_put(theta, target)

    @jax.jit
    def forward(images, theta):
        return keras_stn.grid_sample(images, keras_stn.affine_grid(theta, size))

    backward = jax.jit(jax.grad(lambda i, t: jnp.sum(forward(i, t)),
                                argnums=(0, 1)))
    return {"JAX (jit)": (
        median_ms(lambda: forward(images, theta).block_until_ready(), repeats),
        median_ms(lambda: [g.block_until_ready() for g in backward(
            images, theta)], repeats))}


def warp_torch(workload, repeats, device="cpu"):
    import keras
    import torch
    import torch.nn.functional as F

    import keras_stn

    images, theta, size = inputs(workload)
    synchronize = torch_synchronizer(device)
    rows = {}

    def keras_stn_warp(images, theta):
        return keras_stn.grid_sample(images, keras_stn.affine_grid(theta, size))

    def torch_warp(images, theta):
        # NCHW, as torch's own functions take it.
        grid = F.affine_grid(theta.reshape(-1, 2, 3),
                             (images.shape[0], images.shape[1], *size),
                             align_corners=False)
        return F.grid_sample(images, grid, align_corners=False)

    for label, function, layout in (
            ("PyTorch eager (keras_stn)", keras_stn_warp, images),
            ("PyTorch eager (torch's own functions)", torch_warp,
             images.transpose(0, 3, 1, 2).copy())):
        image_tensor = torch.tensor(layout, device=device)
        theta_tensor = torch.tensor(theta, device=device)

        def forward():
            with torch.no_grad():
                result = function(image_tensor, theta_tensor)
            synchronize()
            return result

        def backward():
            images_ = image_tensor.clone().requires_grad_(True)
            theta_ = theta_tensor.clone().requires_grad_(True)
            function(images_, theta_).sum().backward()
            synchronize()
            return images_.grad, theta_.grad

        # keras_stn's ops make their own tensors (the grid) on Keras' device.
        with keras.device(keras_device_name(device)):
            rows[label] = (median_ms(forward, repeats),
                           median_ms(backward, repeats))
    return rows


# -- The ST-CNN's training step ----------------------------------------------


def fit_step_ms(steps, device="cpu"):
    import keras

    with keras.device(keras_device_name(device)):
        return _fit_step_ms(steps)


def _fit_step_ms(steps):
    import keras
    import numpy as np

    from keras_stn.paper import models

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(64, 42, 42, 1)).astype("float32")
    labels = rng.integers(0, 10, 64)
    x = np.tile(images, (steps, 1, 1, 1))
    y = np.tile(labels, steps)
    model = models.paper_st_cnn((42, 42, 1), output_size=(28, 28))
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:64 * 5], y[:64 * 5], batch_size=64, epochs=1, verbose=0,
              shuffle=False)  # warm-up: trace / compile
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
        best = min(best, (time.perf_counter() - start) / steps)
    return 1000.0 * best


def plain_torch_step_ms(steps, device="cpu"):
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)

    class STCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.localization = nn.Sequential(
                nn.MaxPool2d(2), nn.Conv2d(1, 20, 5), nn.ReLU(),
                nn.MaxPool2d(2), nn.Conv2d(20, 20, 5), nn.ReLU(),
                nn.Flatten(), nn.Linear(20 * 4 * 4, 50), nn.ReLU(),
                nn.Linear(50, 6))
            nn.init.zeros_(self.localization[-1].weight)
            with torch.no_grad():
                self.localization[-1].bias.copy_(
                    torch.tensor([1.0, 0, 0, 0, 1, 0]))
            self.classifier = nn.Sequential(
                nn.Conv2d(1, 32, 9), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 7), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(64 * 2 * 2, 10))

        def forward(self, images):
            theta = self.localization(images).view(-1, 2, 3)
            grid = F.affine_grid(theta, (images.shape[0], 1, 28, 28),
                                 align_corners=False)
            return self.classifier(F.grid_sample(images, grid,
                                                 align_corners=False))

    model = STCNN().to(device)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    images = torch.rand(64, 1, 42, 42, device=device)
    labels = torch.randint(0, 10, (64,), device=device)
    synchronize = torch_synchronizer(device)

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    for _ in range(5):
        step()
    best = float("inf")
    for _ in range(2):
        synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize()
        best = min(best, (time.perf_counter() - start) / steps)
    return 1000.0 * best


def worker(backend, repeats, fit_steps, device="cpu", workloads=None):
    warp = {"tensorflow": warp_tensorflow, "jax": warp_jax,
            "torch": warp_torch}[backend]
    workloads = WORKLOADS if workloads is None else workloads
    result = {"warp": {name: warp(workload, repeats, device)
                       for name, workload in workloads.items()},
              "fit": {backend: fit_step_ms(fit_steps, device)}}
    if backend == "tensorflow":
        import keras_stn

        with keras_stn.use_jit_compile(False):
            result["fit"]["tensorflow runtime"] = fit_step_ms(fit_steps,
                                                              device)
    if backend == "torch":
        result["fit"]["plain PyTorch"] = plain_torch_step_ms(fit_steps,
                                                             device)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--fit-steps", type=int, default=60)
    parser.add_argument("--backends", nargs="+",
                        default=["tensorflow", "jax", "torch"])
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda or cuda:N (every backend's worker)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not DEVICE_PATTERN.fullmatch(args.device):
        parser.error(f"--device must be cpu, cuda or cuda:N, got "
                     f"{args.device!r}")
    for name in ("repeats", "fit_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, "
                         f"got {getattr(args, name)}")
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats, args.fit_steps,
                                args.device)))
        return None
    results = {}
    for backend in args.backends:
        process = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", backend,
             "--repeats", str(args.repeats), "--fit-steps",
             str(args.fit_steps), "--device", args.device],
            capture_output=True, text=True, check=False,
            env=dict(os.environ, KERAS_BACKEND=backend,
                     TF_CPP_MIN_LOG_LEVEL="3"))
        if process.returncode != 0:
            raise RuntimeError(f"{backend} worker failed:\n{process.stderr}")
        results[backend] = json.loads(process.stdout.strip().splitlines()[-1])
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
          f"CPUs, device {args.device}; median of {args.repeats}, ms\n")
    print("| path | " + " | ".join(f"{name} fwd | {name} fwd+bwd"
                                    for name in WORKLOADS) + " |")
    print("|---|" + "---|---|" * len(WORKLOADS))
    for backend in args.backends:
        rows = {}
        for workload, timings in results[backend]["warp"].items():
            for label, pair in timings.items():
                rows.setdefault(label, {})[workload] = pair
        for label, by_workload in rows.items():
            cells = " | ".join(f"{by_workload[w][0]:.2f} | {by_workload[w][1]:.2f}"
                               for w in WORKLOADS)
            print(f"| {label} | {cells} |")
    print("\n| ST-CNN training step (RTS, batch 64, Adam) | ms per step "
          "(ratio to plain PyTorch) |")
    print("|---|---|")
    fit = {}
    for backend in args.backends:
        fit.update(results[backend]["fit"])
    labels = {"tensorflow": "Keras fit, TensorFlow (default: XLA clusters)",
              "tensorflow runtime": "Keras fit, TensorFlow (runtime, opt-out)",
              "jax": "Keras fit, JAX (jit)", "torch": "Keras fit, PyTorch (eager)",
              "plain PyTorch": "plain PyTorch (same model, torch's functions)"}
    reference = fit.get("plain PyTorch")
    for key, value in fit.items():
        ratio = f" ({value / reference:.2f}×)" if reference else ""
        print(f"| {labels[key]} | {value:.1f}{ratio} |")
    return results


if __name__ == "__main__":
    main()
