"""Train an ST-CNN on JAX, deploy it as builtins-only TFLite.

1. Under Keras' JAX backend (this process): train the paper's ST-CNN briefly
   on RTS-distorted MNIST (the data come through `tf.data`, which Keras'
   JAX backend reads), score it, save `model.keras`.
2. Under the TensorFlow backend (a second process, as a deployment machine
   would be): load the same `model.keras`, check its predictions against
   JAX's, export it with `keras_stn.export_tflite` and run it in LiteRT.

    KERAS_STN_MNIST_DIR=../shared/data/mnist python examples/train_on_jax_deploy_tflite.py
    python examples/train_on_jax_deploy_tflite.py --smoke    # seconds, for tests

Writes `saved_models/jax_to_tflite/`: `model.keras`, `model.tflite` and
`report.json` (test error on JAX, and how far TensorFlow's and LiteRT's
predictions are from JAX's).
"""

import argparse
import json
import os
import subprocess
import sys
import time

# Keras reads its backend once, when first imported.
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_stn  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=300)
    parser.add_argument("--test-examples", type=int, default=2000)
    parser.add_argument("--output-dir", default="saved_models/jax_to_tflite")
    parser.add_argument("--mnist-dir", default=None)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--deploy", action="store_true",
                        help="(internal) step 2, under TensorFlow")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.steps_per_epoch, args.test_examples = 1, 5, 64
    return args


def train_on_jax(args):
    """Step 1: train, score and save under the JAX backend."""
    from keras_stn.paper import datasets
    from keras_stn.paper import models

    keras.utils.set_random_seed(0)
    train = datasets.distorted_mnist("fit", "RTS", repeat=True, batch_size=64,
                                     mnist_dir=args.mnist_dir)
    test = datasets.distorted_mnist("test", "RTS", batch_size=256,
                                    count=args.test_examples,
                                    mnist_dir=args.mnist_dir).cache()
    model = models.paper_st_cnn((42, 42, 1), output_size=(28, 28))
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(train, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
              shuffle=False, verbose=2)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(test, verbose=0)
    os.makedirs(args.output_dir, exist_ok=True)
    model.save(os.path.join(args.output_dir, "model.keras"))
    images = np.concatenate([batch[0].numpy() for batch in test.take(1)])
    np.save(os.path.join(args.output_dir, "probe_images.npy"), images)
    np.save(os.path.join(args.output_dir, "jax_predictions.npy"),
            model.predict(images, verbose=0))
    return {"backend": keras.backend.backend(), "train_seconds": round(seconds, 1),
            "steps": args.epochs * args.steps_per_epoch, "batch_size": 64,
            "test_examples": args.test_examples,
            "test_error_percent": round(100 * (1 - float(accuracy)), 2)}


def deploy_on_tensorflow(args):
    """Step 2: load the JAX-trained file under TensorFlow, export, run."""
    folder = args.output_dir
    images = np.load(os.path.join(folder, "probe_images.npy"))
    expected = np.load(os.path.join(folder, "jax_predictions.npy"))
    model = keras.saving.load_model(os.path.join(folder, "model.keras"))
    keras_predictions = model.predict(images, verbose=0)
    tflite_path = keras_stn.export_tflite(model,
                                          os.path.join(folder, "model.tflite"))
    litert = keras_stn.run_tflite(tflite_path, images)
    ops = keras_stn.tflite_ops(tflite_path)
    return {"backend": keras.backend.backend(),
            "examples": len(images),
            "keras_vs_jax_max_abs": float(np.abs(keras_predictions
                                                 - expected).max()),
            "tflite_vs_jax_max_abs": float(np.abs(litert - expected).max()),
            "tflite_top1_agreement": float(np.mean(
                litert.argmax(-1) == expected.argmax(-1))),
            "tflite_ops": ops,
            "builtins_only": not [op for op in ops
                                  if "FLEX" in op or "CUSTOM" in op]}


def main(argv=None):
    args = parse_args(argv)
    if args.deploy:
        print(json.dumps(deploy_on_tensorflow(args)))
        return None
    report = {"train": train_on_jax(args)}
    command = [sys.executable, os.path.abspath(__file__), "--deploy",
               "--output-dir", args.output_dir]
    deployed = subprocess.run(
        command, capture_output=True, text=True, check=False,
        env=dict(os.environ, KERAS_BACKEND="tensorflow"))
    if deployed.returncode != 0:
        raise RuntimeError(f"the TensorFlow step failed:\n{deployed.stderr}")
    report["deploy"] = json.loads(deployed.stdout.strip().splitlines()[-1])
    report["smoke"] = args.smoke
    for name in ("probe_images.npy", "jax_predictions.npy"):
        os.remove(os.path.join(args.output_dir, name))
    with open(os.path.join(args.output_dir, "report.json"), "w") as file:
        json.dump(report, file, indent=2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
