"""A/B of the sampler's formulation choices, each against its alternative.

    python benchmarks/formulations_ab.py            # every experiment, ~5 min
    python benchmarks/formulations_ab.py --only materialise --tiny

Every "x % less time" figure of `benchmarks/README.md` comes from here. An
experiment times one step (forward, or forward and backward) of the layer's
path (`affine_coordinates` + `sample_coordinates`, affine θ near the
identity, bilinear, zeros padding) twice in one process: as the package
traces it (A) and with one formulation swapped at trace time (B), calls of A
and B interleaved so that a slow spell of the machine hits both alike. The
swaps patch private names of `keras_stn.backends.tensorflow.bilinear` and `.grid` for
the duration of a trace; the numbers are equal either way (the tests check
every formulation against a NumPy reference), only the time differs.

Output: a Markdown table, per experiment and workload, of the median times of
A and B and B / A (above 1: the package's choice is faster).
"""

import argparse
import contextlib
import os
import time

import numpy as np

WORKLOADS = {  # batch, height, width, channels (output size = input size)
    "28²×1": (256, 28, 28, 1),
    "60²×1": (128, 60, 60, 1),
    "224²×3": (32, 224, 224, 3),
    "64²×8": (16, 64, 64, 8),
    "64²×16": (16, 64, 64, 16),
    "64²×64": (8, 64, 64, 64),
}
TINY_WORKLOADS = {"8²×1": (2, 8, 8, 1), "8²×3": (2, 8, 8, 3)}


@contextlib.contextmanager
def patched(module, **replacements):
    """Replaces attributes of `module` for the duration of the block."""
    saved = {name: getattr(module, name) for name in replacements}
    for name, value in replacements.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def _experiments():
    import tensorflow as tf

    from keras_stn.backends.tensorflow import bilinear as _bilinear
    from keras_stn.backends.tensorflow import grid
    from keras_stn.backends.tensorflow import ops

    def no_materialise():
        return patched(_bilinear, _materialised=lambda values: values)

    def optimization_barrier():
        # XLA's own barrier (a private TF API) instead of the max reduction.
        from tensorflow.compiler.tf2xla.python import xla

        def barrier(values):
            result = xla.optimization_barrier(values)
            return result[0] if isinstance(result, (list, tuple)) else result

        return patched(_bilinear, _materialised=barrier)

    def gather_v2():
        return patched(_bilinear, _gather_nd=tf.gather)

    def concatenated_runtime_scatter():
        original = _bilinear._corner_scatter

        def scatter(updates, corners, segments, channels, xla):
            return original(updates, corners, segments, channels, True)

        return patched(_bilinear, _corner_scatter=scatter)

    def no_scalar_segments():
        return patched(_bilinear, _SCALAR_SCATTER_MAX_CHANNELS=1)

    def scalar_segments_up_to_64():
        return patched(_bilinear, _SCALAR_SCATTER_MAX_CHANNELS=64)

    def flat_xla_scatter():
        return patched(_bilinear, _QUAD_SCATTER_MAX_CHANNELS=0)

    def quad_xla_scatter_up_to_16():
        return patched(_bilinear, _QUAD_SCATTER_MAX_CHANNELS=16)

    def matmul_grid_under_xla():
        original = grid.times_meshgrid

        def times(weights, base, target=None):
            return original(weights, base, "runtime")

        # The TF op namespace calls it by this name.
        return patched(ops, times_meshgrid=times)

    # name: (jit_compile, mode, workloads, B's patch, what B is)
    return {
        "materialise": (True, "fwd+bwd", ("28²×1", "60²×1", "224²×3"),
                        no_materialise,
                        "XLA: index and fractions recomputed by every reader"),
        "barrier": (True, "fwd+bwd", ("28²×1", "60²×1", "224²×3"),
                    optimization_barrier,
                    "XLA: stored through xla.optimization_barrier"),
        "gather_nd": (False, "fwd", ("28²×1", "60²×1", "224²×3"), gather_v2,
                      "runtime: GatherV2 instead of GatherNd"),
        "runtime_scatter": (False, "fwd+bwd", ("28²×1", "60²×1", "224²×3"),
                            concatenated_runtime_scatter,
                            "runtime: one scatter of the concatenated corners"),
        "scalar_segments": (False, "fwd+bwd", ("224²×3", "64²×8", "64²×16"),
                            no_scalar_segments,
                            "runtime: rows of channels instead of scalars"),
        "scalar_limit": (False, "fwd+bwd", ("64²×64",),
                         scalar_segments_up_to_64,
                         "runtime: scalar segments at 64 channels too"),
        "quad_scatter": (True, "fwd+bwd", ("28²×1", "224²×3"),
                         flat_xla_scatter,
                         "XLA: flat scatter instead of 4-corner slices"),
        "quad_limit": (True, "fwd+bwd", ("64²×8", "64²×16"),
                       quad_xla_scatter_up_to_16,
                       "XLA: 4-corner slices at 8 and 16 channels too"),
        "xla_grid": (True, "fwd", ("28²×1", "60²×1"), matmul_grid_under_xla,
                     "XLA: the grid as one matmul"),
    }


def _step(mode, jit_compile, size):
    import tensorflow as tf

    import keras_stn

    def forward(images, theta):
        return keras_stn.sample_coordinates(
            images, keras_stn.affine_coordinates(theta, size))

    def forward_backward(images, theta):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            out = forward(images, theta)
            loss = tf.reduce_sum(out * out)
        return tape.gradient(loss, [images, theta])

    return tf.function(forward if mode == "fwd" else forward_backward,
                       jit_compile=jit_compile)


def _median_interleaved(calls, warmup, repeats):
    for call in calls:
        for _ in range(warmup):
            call()
    times = [[] for _ in calls]
    for _ in range(repeats):
        for index, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[index].append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def run(name, workloads, warmup, repeats):
    import tensorflow as tf

    jit_compile, mode, names, patch, description = _experiments()[name]
    rows = []
    for label in names if workloads is None else workloads:
        batch, height, width, channels = (WORKLOADS | TINY_WORKLOADS)[label]
        rng = np.random.default_rng(0)
        images = tf.constant(rng.uniform(
            size=(batch, height, width, channels)).astype(np.float32))
        theta = np.tile(np.float32([1, 0, 0, 0, 1, 0]), (batch, 1))
        theta = tf.constant(theta + rng.normal(0, 0.1, theta.shape).astype(
            np.float32))
        package = _step(mode, jit_compile, (height, width))
        swapped = _step(mode, jit_compile, (height, width))
        package.get_concrete_function(images, theta)
        with patch():
            swapped.get_concrete_function(images, theta)

        def call(function):
            return lambda: tf.nest.map_structure(
                lambda t: t.numpy(), function(images, theta))

        a, b = _median_interleaved([call(package), call(swapped)], warmup,
                                   repeats)
        rows.append((name, label, mode, description, a, b))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+",
                        help="experiments to run (default: all)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny workloads (a smoke run)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    experiments = _experiments()
    names = args.only or list(experiments)
    unknown = sorted(set(names) - set(experiments))
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; choose from "
                     f"{sorted(experiments)}")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    print(f"median of {args.repeats} interleaved calls after {args.warmup} "
          "warm-up; A = the package's formulation, B = the alternative; "
          "B / A above 1: the package's choice is faster")
    print()
    print("| experiment | workload | step | B is | A (ms) | B (ms) | B / A |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for name in names:
        workloads = None
        if args.tiny:
            workloads = ["8²×3"] if "scalar" in name or "quad_limit" in name \
                else ["8²×1"]
        for row in run(name, workloads, args.warmup, args.repeats):
            rows.append(row)
            _, label, mode, description, a, b = row
            print(f"| {name} | {label} | {mode} | {description} | "
                  f"{1000 * a:.2f} | {1000 * b:.2f} | {b / a:.2f} |")
    return rows


if __name__ == "__main__":
    main()
