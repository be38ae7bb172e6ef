"""What the sampler's building blocks cost, in TF's runtime and in LiteRT.

    python benchmarks/op_costs.py           # 200,704 samples (256×28×28)
    python benchmarks/op_costs.py --tiny    # seconds, for tests

The profile behind the sampler's formulation (see README → Performance):
one gather per corner (GatherV2 or GatherNd; one value or a 4-corner row),
elementwise ops on every sample, the image gradient's segment sum, and the
ops LiteRT runs slowly (a 4-D PAD, slicing or stacking a small last axis).
Each row times one op on the same inputs, as a `tf.function` (TF runtime,
2 threads) and as a LiteRT model (2 threads);
the cost of an identity function of the same output size is subtracted, so
a row is the op's own cost. Median of `--repeats` calls after `--warmup`.
"""

import argparse
import os

import numpy as np

# The sibling script (this folder is on sys.path when run as a script).
from grid_sample_speed import median_seconds


def cases(batch, size):
    """(name, function, inputs) of the ops to time, and the identity."""
    import tensorflow as tf

    samples = batch * size * size
    rng = np.random.default_rng(0)
    flat = rng.uniform(size=(samples, 1)).astype(np.float32)
    flat4 = rng.uniform(size=(samples, 4)).astype(np.float32)
    # Indices near the identity warp, as a sampler's are.
    near = np.arange(samples) + rng.integers(-3, 4, samples)
    index = np.clip(near, 0, samples - 1).astype(np.int32)
    values = rng.uniform(size=samples).astype(np.float32)
    grid = rng.uniform(-1, 1, (batch, size, size, 2)).astype(np.float32)
    images = rng.uniform(size=(batch, size, size, 1)).astype(np.float32)

    def pad_4d(images):
        return tf.pad(images, [[0, 0], [2, 3], [2, 3], [0, 0]])

    def pad_3d(images):
        rows = tf.reshape(images, [-1, size, size])
        return tf.pad(rows, [[0, 0], [2, 3], [2, 3]])

    return [
        ("gather, 1 value per index", lambda f, i: tf.gather(f, i),
         (flat, index)),
        ("gather_nd, 1 value per index",
         lambda f, i: tf.gather_nd(f, tf.expand_dims(i, -1)), (flat, index)),
        ("gather, 4 values per index (rows of 4)",
         lambda f, i: tf.gather(f, i), (flat4, index)),
        ("stack 4 planes on a new last axis",
         lambda v: tf.stack([v, v + 1.0, v + 2.0, v + 3.0], -1), (values,)),
        ("multiply (elementwise)", lambda v: v * v, (values,)),
        ("floor + cast to int32", lambda v: tf.cast(tf.floor(v), tf.int32),
         (values,)),
        ("select (where)", lambda v: tf.where(v > 0.5, v, 0.0), (values,)),
        ("unsorted_segment_sum, 1 update per index",
         lambda f, i: tf.math.unsorted_segment_sum(f, i, samples),
         (flat, index)),
        ("slice grid[..., 0] (last axis of 2)", lambda g: g[..., 0],
         (grid,)),
        ("pad, 4-D [B, H, W, 1]", pad_4d, (images,)),
        ("pad, 3-D [B, H, W]", pad_3d, (images,)),
    ], ("identity", lambda v: v + 0.0, (values,))


def tf_seconds(function, inputs, warmup, repeats):
    import tensorflow as tf

    compiled = tf.function(function)
    tensors = [tf.constant(array) for array in inputs]
    return median_seconds(lambda: compiled(*tensors).numpy(), warmup,
                          repeats)


def litert_seconds(function, inputs, warmup, repeats):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    specs = [tf.TensorSpec(array.shape, array.dtype) for array in inputs]
    concrete = tf.function(function).get_concrete_function(*specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert(),
                              num_threads=2)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()
    output = interpreter.get_output_details()[0]["index"]

    def call():
        for detail, array in zip(details, inputs):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return median_seconds(call, warmup, repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(2)
    except RuntimeError:  # already initialised (run from the test suite)
        pass
    batch, size = (2, 8) if args.tiny else (256, 28)
    rows, (_, identity, identity_inputs) = cases(batch, size)
    base = {
        "tf": tf_seconds(identity, identity_inputs, args.warmup, args.repeats),
        "litert": litert_seconds(identity, identity_inputs, args.warmup,
                                 args.repeats),
    }
    print(f"{batch * size * size:,} samples; median of {args.repeats} calls "
          f"after {args.warmup} warm-up; ms above an identity function of "
          f"the same size (TF {1000 * base['tf']:.3f} ms, LiteRT "
          f"{1000 * base['litert']:.3f} ms)")
    print()
    print("| op | TF runtime (ms) | LiteRT (ms) |")
    print("|---|---|---|")
    results = {}
    for name, function, inputs in rows:
        cost = {
            "tf": tf_seconds(function, inputs, args.warmup, args.repeats),
            "litert": litert_seconds(function, inputs, args.warmup,
                                     args.repeats),
        }
        results[name] = {key: cost[key] - base[key] for key in cost}
        print(f"| {name} | {1000 * results[name]['tf']:.3f} | "
              f"{1000 * results[name]['litert']:.3f} |")
    return results


if __name__ == "__main__":
    main()
