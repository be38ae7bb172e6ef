"""Speed of keras_stn's affine_grid + grid_sample against reference samplers.

    python benchmarks/grid_sample_speed.py            # the four workloads
    python benchmarks/grid_sample_speed.py --allocator reuse  # steady state
    python benchmarks/grid_sample_speed.py --scaling  # the cost model
    python benchmarks/grid_sample_speed.py --tiny     # seconds, for tests
    python benchmarks/grid_sample_speed.py --device cuda  # a GPU machine

Implementations, each measured in its own process on the same inputs
(affine θ near the identity, bilinear, zeros padding, align_corners=False):

- `keras_stn`: `keras_stn.affine_grid` + `keras_stn.grid_sample` in a
  plain `tf.function`: TF's default path, the warp as XLA clusters inside
  TF's runtime (as `fit` runs it on a CPU); `keras_stn_runtime`: the same
  with the clusters turned off (`keras_stn.use_jit_compile(False)`: TF's
  runtime op by op); `keras_stn_xla`: the whole function compiled
  (`jit_compile=True`);
- `keras_stn_jax`, `keras_stn_torch`: the same public ops on the JAX
  backend (`jax.jit` of the function and of its `jax.grad`) and on the
  PyTorch backend (eager), each in a process of that Keras backend;
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
better). `--allocator default` (the default) times with the C library's
allocator as users get it: glibc serves buffers of 32 MiB and more (and,
until its adaptive threshold has grown, smaller ones) with fresh pages from
the OS, so large workloads pay page faults on every call, in proportion to
the bytes each implementation allocates (the XLA forward pass on
64x64x256: 38 ms, against 9 ms without the faults, on this VM).
`--allocator reuse` sets MALLOC_MMAP_MAX_=0 and a high MALLOC_TRIM_THRESHOLD_
in every worker, so freed buffers are reused as a caching allocator would:
the steady state of a training loop, and much less noisy.

The peak-memory column is the memory of one warmed-up `fwd+bwd` step above
what was allocated just before it, measured in a separate process per
implementation, median of 3 steps, from the allocator each framework's
buffers come from:

- TensorFlow (every `keras_stn*` TF path, XLA clusters included): TF's own
  CPU allocator, which pools its memory, so neither the resident set nor
  malloc sees a step's buffers (`tf.config.experimental.get_memory_info`);
- torch, the PyTorch and JAX backends: the C heap, counted by
  `benchmarks/heap_peak.c` (compiled with `cc` on first use, loaded with
  LD_PRELOAD: the bytes malloc, calloc, realloc and the aligned allocators
  hand out, and their peak);
- without a C compiler, or off Linux: the peak resident set above the one
  before the step (the peak reset through /proc/self/clear_refs, glibc's
  MALLOC_MMAP_THRESHOLD_ fixed at 64 KiB so that freed large buffers leave
  the resident set at once); this undercounts pooled memory.

The table says which measure each row used.
The cost column is nanoseconds per output pixel-channel, to check that the
cost scales linearly with the workload. `--scaling` measures that cost
model properly: the forward pass of the layer's path (fused, with and
without XLA; torch; TFLite) over three sweeps that grow the batch, the
image size and the channels one at a time, and a least-squares line
`time = fixed + slope × output pixel-channels` per sweep and implementation
(slope in ns, R² of the fit).

`--device cuda` (or `cuda:N`) runs the TensorFlow and torch workers
unchanged on a GPU build: tensors are placed there, every timed call ends
with the device synchronised (TF: reading the result; torch:
`torch.cuda.synchronize()`), and peak memory is the device allocator's
peak (`tf.config.experimental.get_memory_info`,
`torch.cuda.max_memory_allocated`) instead of the resident set. LiteRT
always runs on the CPU. Not run here (no GPU); `cpu` is the default.
"""

import argparse
import json
import os
import re
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
# The cost model's sweeps: one of batch, size, channels grows at a time.
SCALING_SWEEPS = {
    "batch": [(batch, 28, 28, 1, 28, 28) for batch in (32, 64, 128, 256, 512)],
    "size": [(32, size, size, 1, size, size) for size in (28, 56, 112, 224)],
    "channels": [(8, 64, 64, channels, 64, 64)
                 for channels in (1, 4, 16, 64, 256)],
}
TINY_SCALING_SWEEPS = {
    "batch": [(batch, 8, 8, 1, 8, 8) for batch in (1, 2, 4)],
    "channels": [(2, 8, 8, channels, 8, 8) for channels in (1, 2, 4)],
}
SCALING_IMPLEMENTATIONS = ("keras_stn_fused", "keras_stn_fused_xla", "torch",
                           "tflite")
MODES = ("fwd", "fwd+bwd", "fwd+dθ")
IMPLEMENTATIONS = ("keras_stn", "keras_stn_runtime", "keras_stn_xla",
                   "keras_stn_fused", "keras_stn_fused_xla", "keras_stn_jax",
                   "keras_stn_torch", "naive_tf", "naive_tf_xla", "torch",
                   "tflite")
# Workers that run keras_stn on another Keras backend (their own process).
KERAS_BACKENDS = {"keras_stn_jax": "jax", "keras_stn_torch": "torch"}


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


def _status_kb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


DEVICE_PATTERN = re.compile(r"cpu|cuda(:[0-9]+)?")


def ratio_text(value, reference):
    """` (1.23×)` for a value over its reference, or ` (n/a)` when the
    reference is missing or not positive (a tiny workload's allocator peak
    can read 0 MB), so that a report never divides by zero."""
    if reference is None or not reference > 0:
        return " (n/a)"
    return f" ({value / reference:.2f}×)"


def is_gpu(device):
    """True for `cuda` / `cuda:N`, False for `cpu`."""
    return device.startswith("cuda")


def tf_device_name(device):
    """`--device` in TensorFlow's spelling: `/CPU:0`, `/GPU:N`."""
    index = device.partition(":")[2] or "0"
    return f"/GPU:{index}" if is_gpu(device) else "/CPU:0"


def device_peak_mb(call, device, framework, repeats=3, warmup=2):
    """Peak device memory of one `call()` above what was allocated before
    it, from the framework's own allocator (GPU runs; TensorFlow's CPU
    allocator too)."""
    for _ in range(warmup):
        call()
    peaks = []
    for _ in range(repeats):
        if framework == "torch":
            import torch

            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            call()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
        else:
            import tensorflow as tf

            name = tf_device_name(device).lstrip("/")
            tf.config.experimental.reset_memory_stats(name)
            before = tf.config.experimental.get_memory_info(name)["current"]
            call()
            peak = tf.config.experimental.get_memory_info(name)["peak"]
        peaks.append((peak - before) / 2**20)
    return statistics.median(peaks)


def step_peak_mb(call, repeats=3, warmup=2):
    """Peak resident memory of one `call()` above the memory before it.

    Falls back to the growth of the process's lifetime peak RSS where
    /proc/self/clear_refs cannot reset the peak (not Linux).
    """
    for _ in range(warmup):
        call()
    peaks = []
    for _ in range(repeats):
        try:
            before = _status_kb("VmRSS")
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")  # Reset VmHWM to the current RSS.
            call()
            peaks.append((_status_kb("VmHWM") - before) / 1024.0)
        except OSError:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            call()
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peaks.append((after - before) / 1024.0)
    return statistics.median(peaks)


HEAP_PEAK_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "heap_peak.c")


def heap_peak_library():
    """The heap counter `heap_peak.c` built as a shared library (cached by
    its source's content in the temp folder), or None without `cc`."""
    import hashlib
    import shutil

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not sys.platform.startswith("linux"):
        return None
    with open(HEAP_PEAK_SOURCE, "rb") as file:
        digest = hashlib.sha256(file.read()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(),
                        f"keras_stn_heap_peak_{digest}.so")
    if not os.path.isfile(path):
        partial = f"{path}.{os.getpid()}.partial"
        built = subprocess.run(
            [compiler, "-shared", "-fPIC", "-O2", "-o", partial,
             HEAP_PEAK_SOURCE], capture_output=True, text=True, check=False)
        if built.returncode != 0:
            return None
        os.replace(partial, path)
    return path


def _heap_counter():
    """The loaded heap counter's functions, or None (not preloaded)."""
    import ctypes

    process = ctypes.CDLL(None)
    try:
        reset, peak, current = (process.heap_peak_reset,
                                process.heap_peak_bytes,
                                process.heap_current_bytes)
    except AttributeError:
        return None
    peak.restype = current.restype = ctypes.c_int64
    return reset, peak, current


def heap_peak_mb(call, repeats=3, warmup=2):
    """Peak C-heap bytes of one `call()` above those in use before it (the
    process must run with `heap_peak_library()` preloaded)."""
    reset, peak, current = _heap_counter()
    for _ in range(warmup):
        call()
    peaks = []
    for _ in range(repeats):
        reset()
        before = current()
        call()
        peaks.append((peak() - before) / 2**20)
    return statistics.median(peaks)


def measure(workload, calls, memory, modes, warmup, repeats, device="cpu",
            framework="tensorflow"):
    """One workload's row: the step's peak memory (`memory`), else the
    median time of each of `modes`; `calls` maps a mode to a call."""
    row = {"workload": workload}
    if memory and (is_gpu(device) or framework == "tensorflow"):
        row["peak_mb"] = device_peak_mb(calls["fwd+bwd"], device, framework)
        row["memory_measure"] = "TF allocator"
    elif memory and _heap_counter() is not None:
        row["peak_mb"] = heap_peak_mb(calls["fwd+bwd"])
        row["memory_measure"] = "C heap"
    elif memory:
        row["peak_mb"] = step_peak_mb(calls["fwd+bwd"])
        row["memory_measure"] = "RSS"
    else:
        for mode in modes:
            row[mode] = median_seconds(calls[mode], warmup, repeats)
    return row


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


def tf_worker(name, workloads, warmup, repeats, memory, modes=MODES,
              device="cpu"):
    import tensorflow as tf

    with tf.device(tf_device_name(device)):
        return _tf_rows(name, workloads, warmup, repeats, memory, modes,
                        device)


def _tf_rows(name, workloads, warmup, repeats, memory, modes, device):
    import keras_stn

    xla = name.endswith("_xla")
    # The default path runs the warp as XLA clusters inside TF's runtime;
    # `_runtime` is the opt-out, TF's runtime formulation op by op.
    with keras_stn.use_jit_compile(not name.endswith("_runtime")):
        return _tf_workloads(name, workloads, warmup, repeats, memory, modes,
                             device, xla)


def _tf_workloads(name, workloads, warmup, repeats, memory, modes, device,
                  xla):
    import tensorflow as tf

    import keras_stn

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

        calls = {"fwd": run(fwd), "fwd+bwd": run(fwd_bwd),
                 "fwd+dθ": run(fwd_dtheta)}
        results.append(measure(workload, calls, memory, modes, warmup,
                               repeats, device, "tensorflow"))
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


def torch_worker(workloads, warmup, repeats, memory, modes=MODES,
                 device="cpu"):
    import torch
    import torch.nn.functional as F

    if not is_gpu(device):
        torch.set_num_threads(2)

    def synchronised(call):
        if not is_gpu(device):
            return call

        def call_and_wait():
            call()
            torch.cuda.synchronize(device)
        return call_and_wait

    results = []
    for workload in workloads:
        images_np, theta_np = inputs_for(workload)
        batch, _, _, channels, out_h, out_w = workload
        images = torch.from_numpy(images_np).permute(0, 3, 1, 2).contiguous()
        images = images.to(device)
        theta = torch.from_numpy(theta_np).reshape(batch, 2, 3).to(device)
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

        calls = {"fwd": fwd, "fwd+bwd": fwd_bwd, "fwd+dθ": fwd_dtheta}
        calls = {mode: synchronised(call) for mode, call in calls.items()}
        results.append(measure(workload, calls, memory, modes, warmup,
                               repeats, device, "torch"))
    return results


def keras_backend_worker(name, workloads, warmup, repeats, memory,
                         modes=MODES, device="cpu"):
    """keras_stn's public ops on the JAX backend (`jax.jit`, Keras' default
    there) or the PyTorch backend (eager, as Keras runs it)."""
    import keras

    import keras_stn

    backend = keras.backend.backend()
    if backend != KERAS_BACKENDS[name]:
        raise SystemExit(f"{name} needs KERAS_BACKEND={KERAS_BACKENDS[name]}"
                         f", got {backend}")
    results = []
    for workload in workloads:
        images_np, theta_np = inputs_for(workload)
        out_size = workload[4:]

        def forward(images, theta):
            grid = keras_stn.affine_grid(theta, out_size)
            return keras_stn.grid_sample(images, grid)

        if backend == "jax":
            calls = _jax_calls(forward, images_np, theta_np, device)
        else:
            calls = _keras_torch_calls(forward, images_np, theta_np, device)
        results.append(measure(workload, calls, memory, modes, warmup,
                               repeats, device, backend))
    return results


def _jax_calls(forward, images_np, theta_np, device):
    import jax
    import jax.numpy as jnp

    target = jax.devices("gpu" if is_gpu(device) else "cpu")[0]
    images = jax.device_put(jnp.asarray(images_np), target)
    theta = jax.device_put(jnp.asarray(theta_np), target)

    def loss(images, theta):
        return jnp.sum(forward(images, theta) ** 2)

    fwd = jax.jit(lambda images, theta: jnp.sum(forward(images, theta)))
    fwd_bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
    fwd_dtheta = jax.jit(jax.grad(loss, argnums=1))
    return {mode: (lambda f=f: jax.block_until_ready(f(images, theta)))
            for mode, f in (("fwd", fwd), ("fwd+bwd", fwd_bwd),
                            ("fwd+dθ", fwd_dtheta))}


def _keras_torch_calls(forward, images_np, theta_np, device):
    import torch

    if not is_gpu(device):
        torch.set_num_threads(2)
    images = torch.from_numpy(images_np).to(device)
    theta = torch.from_numpy(theta_np).to(device)

    def synchronised(value):
        if is_gpu(device):
            torch.cuda.synchronize(device)
        return value

    def fwd():
        with torch.no_grad():
            synchronised(forward(images, theta).sum().item())

    def fwd_bwd():
        a = images.clone().requires_grad_(True)
        t = theta.clone().requires_grad_(True)
        (forward(a, t) ** 2).sum().backward()
        synchronised(None)

    def fwd_dtheta():
        t = theta.clone().requires_grad_(True)
        (forward(images, t) ** 2).sum().backward()
        synchronised(None)

    return {"fwd": fwd, "fwd+bwd": fwd_bwd, "fwd+dθ": fwd_dtheta}


def worker(name, workloads, warmup, repeats, memory=False, modes=MODES,
           device="cpu"):
    if name in KERAS_BACKENDS:
        return keras_backend_worker(name, workloads, warmup, repeats, memory,
                                    modes, device)
    if name == "torch":
        return torch_worker(workloads, warmup, repeats, memory, modes, device)
    if name == "tflite":
        return tflite_worker(workloads, warmup, repeats)
    return tf_worker(name, workloads, warmup, repeats, memory, modes, device)


# -- Driver -------------------------------------------------------------------


def torch_available():
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except ImportError:
        return False


def _median_rows(runs):
    """Per workload and mode, the median over the rounds' timings."""
    rows = []
    for cells in zip(*runs):
        row = {"workload": cells[0]["workload"]}
        for mode in MODES:
            if mode in cells[0]:
                row[mode] = statistics.median(cell[mode] for cell in cells)
        rows.append(row)
    return rows


def linear_fit(work, seconds):
    """Least-squares `seconds = fixed + slope * work`: (slope, fixed, R²)."""
    work, seconds = np.asarray(work, float), np.asarray(seconds, float)
    slope, fixed = np.polyfit(work, seconds, 1)
    residual = seconds - (fixed + slope * work)
    spread = np.sum((seconds - seconds.mean()) ** 2)
    r2 = 1.0 - np.sum(residual**2) / spread if spread > 0 else 1.0
    return float(slope), float(fixed), float(r2)


def scaling_sweeps(args):
    return TINY_SCALING_SWEEPS if args.tiny else SCALING_SWEEPS


def selected_workloads(args):
    if args.scaling:
        return [workload for sweep in scaling_sweeps(args).values()
                for workload in sweep]
    return TINY_WORKLOADS if args.tiny else WORKLOADS


def run_worker(name, args, memory=False):
    if args.in_process:
        # Smoke runs: one process for every implementation (no isolation of
        # allocators or compilers between them: not for timings).
        return json.loads(json.dumps(worker(
            name, selected_workloads(args), args.warmup, args.repeats, memory,
            ("fwd",) if args.scaling else MODES, args.device)))
    command = [sys.executable, __file__, "--worker", name, "--warmup",
               str(args.warmup), "--repeats", str(args.repeats),
               "--device", args.device]
    if args.tiny:
        command.append("--tiny")
    if args.scaling:
        command.append("--scaling")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if name in KERAS_BACKENDS:
        env["KERAS_BACKEND"] = KERAS_BACKENDS[name]
    if args.allocator == "reuse" and not memory:
        env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(2**40))
    if memory:
        # Freed buffers of 64 KiB and more leave the resident set at once,
        # so a step's peak RSS is its live memory (glibc otherwise raises
        # this threshold adaptively and keeps freed buffers resident). Not
        # for timings: every large buffer then costs page faults.
        command.append("--memory")
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        library = heap_peak_library()
        if library is not None:
            env["LD_PRELOAD"] = " ".join(
                filter(None, [library, env.get("LD_PRELOAD")]))
    done = subprocess.run(command, capture_output=True, text=True, env=env,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--implementations", nargs="+",
                        choices=IMPLEMENTATIONS)
    parser.add_argument("--scaling", action="store_true",
                        help="the cost model: forward time over growing "
                        "batch, size and channels")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=1,
                        help="processes per implementation, run round-robin")
    parser.add_argument("--allocator", choices=("default", "reuse"),
                        default="default",
                        help="glibc malloc settings of the timing workers")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the peak-memory column (no timings: "
                        "runs beside other work without disturbing it)")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda or cuda:N (TF and torch workers; "
                        "LiteRT stays on the CPU)")
    parser.add_argument("--in-process", action="store_true",
                        help="run every implementation in this process "
                        "(smoke tests; timings are not isolated)")
    args = parser.parse_args(argv)
    for name in ("rounds", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got "
                         f"{getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    if not DEVICE_PATTERN.fullmatch(args.device):
        parser.error(f"--device must be cpu, cuda or cuda:N, got "
                     f"{args.device!r}")
    workloads = selected_workloads(args)
    modes = ("fwd",) if args.scaling else MODES

    if args.worker:
        print(json.dumps(worker(args.worker, workloads, args.warmup,
                                args.repeats, args.memory, modes,
                                args.device)))
        return None

    names = list(args.implementations or (
        SCALING_IMPLEMENTATIONS if args.scaling else IMPLEMENTATIONS))
    if args.in_process:
        import keras

        # One process has one Keras backend.
        names = [name for name in names if KERAS_BACKENDS.get(
            name, keras.backend.backend()) == keras.backend.backend()]
    if "torch" in names and not torch_available():
        print("torch is not installed: no ratios (pip install torch==2.13.0)")
        names.remove("torch")
    # Round-robin over the implementations, so that a slow spell of the
    # machine hits them alike; each cell is the median over the rounds.
    rounds = {name: [] for name in names}
    for _ in range(0 if args.memory_only else args.rounds):
        for name in names:
            rounds[name].append(run_worker(name, args))
    results = {name: _median_rows(runs) if runs else [
        {"workload": workload} for workload in workloads]
        for name, runs in rounds.items()}
    if args.scaling:
        return report_scaling(args, results)
    for name in names:
        if name != "tflite":
            peaks = run_worker(name, args, memory=True)
            for row, peak in zip(results[name], peaks):
                row["peak_mb"] = peak["peak_mb"]
                row["memory_measure"] = peak.get("memory_measure", "RSS")

    print(f"{os.cpu_count()} CPUs, device {args.device}; median of "
          f"{args.repeats} calls after "
          f"{args.warmup} warm-up, median over {args.rounds} round(s); "
          f"allocator: {args.allocator}; times in ms; "
          "(ratio to torch)")
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
                    text += ratio_text(row[mode], reference.get(mode))
                cells.append(text)
            peak = f"{row['peak_mb']:.1f}" if "peak_mb" in row else ""
            if peak and reference and name != "torch":
                peak += ratio_text(row["peak_mb"], reference.get("peak_mb"))
            if peak:
                peak += f", {row['memory_measure']}"
            cost = (f"{1e9 * row['fwd'] / (batch * out_h * out_w * channels):.2f}"
                    if "fwd" in row else "")
            print(f"| {label} | {name} | {' | '.join(cells)} | {peak} | "
                  f"{cost} |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"workloads": workloads, "results": results}, file,
                      indent=1)
    return results


def report_scaling(args, results):
    """Prints the cost model: ns per output pixel-channel along each sweep
    and the straight line through each sweep's times."""
    sweeps = scaling_sweeps(args)
    names = list(results)
    print(f"{os.cpu_count()} CPUs; forward pass, median of {args.repeats} "
          f"calls after {args.warmup} warm-up, median over {args.rounds} "
          f"round(s); allocator: {args.allocator}; ms (ns per output "
          "pixel-channel)")
    print()
    print("| sweep | workload | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    index = 0
    fits = {}
    for sweep, workloads in sweeps.items():
        work = [batch * out_h * out_w * channels
                for batch, _, _, channels, out_h, out_w in workloads]
        rows = {name: results[name][index:index + len(workloads)]
                for name in names}
        for position, workload in enumerate(workloads):
            batch, height, width, channels, out_h, out_w = workload
            cells = []
            for name in names:
                seconds = rows[name][position]["fwd"]
                cells.append(f"{1000 * seconds:.2f} "
                             f"({1e9 * seconds / work[position]:.2f})")
            print(f"| {sweep} | B={batch}, {height}×{width}×{channels} | "
                  + " | ".join(cells) + " |")
        for name in names:
            fits.setdefault(sweep, {})[name] = linear_fit(
                work, [row["fwd"] for row in rows[name]])
        index += len(workloads)
    print()
    print("| sweep | implementation | slope (ns per output pixel-channel) | "
          "fixed (ms) | R² |")
    print("|---|---|---|---|---|")
    for sweep, by_name in fits.items():
        for name, (slope, fixed, r2) in by_name.items():
            print(f"| {sweep} | {name} | {1e9 * slope:.2f} | "
                  f"{1000 * fixed:.3f} | {r2:.4f} |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"sweeps": sweeps, "results": results, "fits": fits},
                      file, indent=1)
    return fits


if __name__ == "__main__":
    main()
