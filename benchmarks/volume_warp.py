"""A dense 3-D warp at the size of VoxelMorph's brain scans, on every path.

    python benchmarks/volume_warp.py [--size 160 192 224] [--repeats 5]
                                     [--device cpu] [--json out.json]

`keras_stn.fields.warp(volume, displacement)`, trilinear, zeros padding, on
a `1 × 160 × 192 × 224 × 1` volume with a smooth random displacement of a
few voxels, against what VoxelMorph 0.3 runs for the same warp: PyTorch's
5-D `F.grid_sample(align_corners=True)` at the voxel coordinates p + u. Per
path, one process each (Keras picks its backend once per process):

- `tf_default`: keras_stn on TensorFlow tensors in a `tf.function` (what
  `fit` runs on a CPU): TF's default path, the warp as an XLA cluster in
  TF's runtime;
- `tf_runtime`: the same with the clusters turned off
  (`keras_stn.use_jit_compile(False)`: TF's runtime op by op);
- `tf_xla`: the whole function compiled (`jit_compile=True`);
- `jax`: keras_stn on JAX arrays, under `jax.jit`;
- `torch_backend`: keras_stn on PyTorch tensors (its `F.grid_sample`);
- `torch`: VoxelMorph's formulation in plain PyTorch, the reference.

Prints a Markdown table of the median forward and forward+backward times
(gradients for the volume and the displacement), in ms, and the step's peak
resident memory above what it started with, in MB, each with its ratio to
`torch`. `--device cuda` runs every path on a GPU build unchanged (TF and
JAX place on their default device; torch on `cuda`).
"""

import argparse
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from grid_sample_speed import is_gpu  # noqa: E402
from grid_sample_speed import median_seconds  # noqa: E402
from grid_sample_speed import ratio_text  # noqa: E402
from grid_sample_speed import step_peak_mb  # noqa: E402

PATHS = ("torch", "tf_default", "tf_runtime", "tf_xla", "jax",
         "torch_backend")
BACKEND_OF = {"torch": "torch", "tf_default": "tensorflow",
              "tf_runtime": "tensorflow",
              "tf_xla": "tensorflow", "jax": "jax",
              "torch_backend": "torch"}


def inputs(size, seed=0):
    """A `[1, *size, 1]` volume and a smooth `[1, *size, 3]` displacement
    (`indexing="ij"`, voxels) of up to ~3 voxels, float32."""
    import numpy as np

    rng = np.random.default_rng(seed)
    volume = rng.uniform(size=(1, *size, 1)).astype("float32")
    coarse = rng.normal(scale=3.0, size=(4, 4, 4, 3))
    # Trilinear upsampling of a 4³ control grid: smooth, cheap to make.
    axes = [np.linspace(0, 3, n) for n in size]
    low = [np.minimum(np.floor(a).astype(int), 2) for a in axes]
    frac = [a - lo for a, lo in zip(axes, low)]
    field = 0.0
    for corner in np.ndindex(2, 2, 2):
        index = np.ix_(*[lo + c for lo, c in zip(low, corner)])
        weight = 1.0
        for axis, c in enumerate(corner):
            shape = [1, 1, 1]
            shape[axis] = -1
            f = frac[axis].reshape(shape)
            weight = weight * (f if c else 1.0 - f)
        field = field + weight[..., None] * coarse[index]
    return volume, field[None].astype("float32")


def _median_ms(call, warmup, repeats):
    return 1000.0 * median_seconds(call, warmup, repeats)


def _tensorflow_calls(volume, field, jit_compile, clusters=True):
    import tensorflow as tf

    import keras_stn
    from keras_stn import fields

    volume, field = tf.constant(volume), tf.constant(field)

    @tf.function(jit_compile=jit_compile)
    def forward(volume, field):
        return fields.warp(volume, field, indexing="ij")

    @tf.function(jit_compile=jit_compile)
    def backward(volume, field):
        with tf.GradientTape() as tape:
            tape.watch([volume, field])
            loss = tf.reduce_sum(fields.warp(volume, field, indexing="ij"))
        return tape.gradient(loss, [volume, field])

    def traced_as_asked(call):
        # The choice is read when the functions trace (their first call).
        def run():
            with keras_stn.use_jit_compile(clusters):
                return call()
        return run

    return {"fwd": traced_as_asked(lambda: forward(volume, field).numpy()),
            "fwd+bwd": traced_as_asked(
                lambda: [g.numpy() for g in backward(volume, field)])}


def _jax_calls(volume, field):
    import jax
    import jax.numpy as jnp

    from keras_stn import fields

    volume, field = jnp.asarray(volume), jnp.asarray(field)
    forward = jax.jit(lambda v, f: fields.warp(v, f, indexing="ij"))
    backward = jax.jit(jax.grad(
        lambda v, f: jnp.sum(fields.warp(v, f, indexing="ij")),
        argnums=(0, 1)))
    return {"fwd": lambda: forward(volume, field).block_until_ready(),
            "fwd+bwd": lambda: [g.block_until_ready()
                                for g in backward(volume, field)]}


def _torch_calls(volume, field, device, through_keras_stn):
    import torch
    import torch.nn.functional as F

    volume = torch.tensor(volume, device=device)
    field = torch.tensor(field, device=device)
    if through_keras_stn:
        from keras_stn import fields

        def warp(volume, field):
            return fields.warp(volume, field, indexing="ij")
    else:
        # VoxelMorph 0.3: channels first, p + u normalised with
        # align_corners=True, (x, y, z) order for grid_sample.
        channels_first = volume.permute(0, 4, 1, 2, 3).contiguous()
        shape = field.shape[1:4]
        grid = torch.stack(torch.meshgrid(
            *[torch.arange(n, dtype=field.dtype, device=device)
              for n in shape], indexing="ij"), -1)
        scale = torch.tensor([2.0 / (n - 1) for n in shape],
                             dtype=field.dtype, device=device)

        def warp(volume, field):
            coords = (grid + field) * scale - 1.0
            return F.grid_sample(volume, coords.flip(-1), mode="bilinear",
                                 padding_mode="zeros", align_corners=True)

        volume = channels_first

    def sync():
        if is_gpu(device):
            torch.cuda.synchronize()

    def forward():
        with torch.no_grad():
            warp(volume, field)
        sync()

    def backward():
        v = volume.detach().requires_grad_(True)
        f = field.detach().requires_grad_(True)
        warp(v, f).sum().backward()
        sync()

    return {"fwd": forward, "fwd+bwd": backward}


def worker(path, size, warmup, repeats, device):
    volume, field = inputs(size)
    if path.startswith("tf_"):
        calls = _tensorflow_calls(volume, field, path == "tf_xla",
                                  clusters=path != "tf_runtime")
    elif path == "jax":
        calls = _jax_calls(volume, field)
    else:
        calls = _torch_calls(volume, field, device, path == "torch_backend")
    row = {mode: _median_ms(call, warmup, repeats)
           for mode, call in calls.items()}
    row["peak_mb"] = step_peak_mb(calls["fwd+bwd"], repeats=2, warmup=1)
    return row


def run_worker(path, args):
    command = [sys.executable, os.path.abspath(__file__), "--worker", path,
               "--size", *map(str, args.size), "--warmup", str(args.warmup),
               "--repeats", str(args.repeats), "--device", args.device]
    # Freed buffers leave the resident set at once, so the step's peak RSS
    # is its live memory (see grid_sample_speed.run_worker).
    env = dict(os.environ, KERAS_BACKEND=BACKEND_OF[path],
               TF_CPP_MIN_LOG_LEVEL="2", MALLOC_MMAP_THRESHOLD_="65536")
    done = subprocess.run(command, capture_output=True, text=True, env=env,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results, args):
    reference = results.get("torch", {})
    size = "×".join(map(str, args.size))
    print(f"1×{size}×1 volume, trilinear, zeros; {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), device "
          f"{args.device}; median of {args.repeats} after {args.warmup} "
          "warm-up; (ratio to torch)")
    print()
    print("| path | fwd ms | fwd+bwd ms | peak MB (fwd+bwd) |")
    print("|---|---|---|---|")
    for path, row in results.items():
        cells = [f"{row[key]:.1f}" + ("" if path == "torch" else
                                       ratio_text(row[key],
                                                  reference.get(key)))
                 for key in ("fwd", "fwd+bwd", "peak_mb")]
        print(f"| {path} | " + " | ".join(cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, nargs=3, default=[160, 192, 224])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=PATHS)
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, tuple(args.size), args.warmup,
                                args.repeats, args.device)))
        return
    paths = ["torch"] + [p for p in args.paths if p != "torch"]
    results = {path: run_worker(path, args) for path in paths}
    report(results, args)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"size": args.size, "device": args.device,
                       "results": results}, file, indent=1)


if __name__ == "__main__":
    main()
