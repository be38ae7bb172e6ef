"""Accuracy of each TFLite quantisation of a trained ST-CNN against Keras.

    KERAS_STN_MNIST_DIR=../shared/data/mnist python benchmarks/tflite_parity.py

Takes `tests/fixtures/mnist_st_cnn.keras` (the quick start's ST-CNN trained
on MNIST rotated in ±60°), rebuilt to output both its logits and the
spatial transformer's output, converts it with `keras_stn.export_tflite` in
every quantisation mode, plus a naive full-int8 conversion that quantises the
coordinate path too (TFLite's converter as is), and compares each with the
Keras float model on `--count` rotated MNIST test digits: top-1 agreement
and the transformed images' mean and max absolute difference. Calibration
uses 200 other test digits. Prints a Markdown table.
"""

import argparse
import os
import pathlib
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

import keras_stn

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "mnist_st_cnn.keras"


def rotated_test_digits(count):
    sys.path.insert(0, str(ROOT / "examples"))
    import quickstart

    test = quickstart.make_dataset("test", None, seed=1, repeat=False)
    batches = test.take(-(-count // quickstart.BATCH_SIZE))
    return np.concatenate([images.numpy() for images, _ in batches])[:count]


def two_output_model():
    return keras_stn.paper.models.with_transformer_output(
        keras.saving.load_model(FIXTURE))


def naive_int8(model, path, representative_dataset):
    """Full-integer conversion with nothing kept in float."""
    with tempfile.TemporaryDirectory() as scratch:
        model.export(scratch, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        with open(path, "wb") as file:
            file.write(converter.convert())
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args(argv)

    digits = rotated_test_digits(args.count + 200)
    calibration, digits = digits[:200], digits[200:]

    def representative_dataset():
        for image in calibration:
            yield [image[None]]

    model = two_output_model()
    modes = [("float32", None), ("float16", "float16"),
             ("dynamic_range", "dynamic_range"),
             ("int8 (coordinate path in float)", "int8"),
             ("int8, everything quantised (naive)", "naive")]
    print(f"{len(digits)} rotated MNIST test digits, against Keras float32")
    print()
    print("| TFLite | file | top-1 agreement | transformed image, mean / max "
          "abs. diff. |")
    print("|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for label, quantization in modes:
            path = os.path.join(scratch, f"{quantization}.tflite")
            if quantization == "naive":
                naive_int8(model, path, representative_dataset)
            else:
                keras_stn.export_tflite(
                    model, path, quantization=quantization,
                    representative_dataset=representative_dataset)
            logits, images = keras_stn.export.tflite_parity(
                model, path, digits)["outputs"]
            agreement = logits["top1_agreement"]
            size = os.path.getsize(path) / 1024
            rows.append((label, size, agreement, images["mean_abs"],
                         images["max_abs"]))
            print(f"| {label} | {size:.0f} KiB | {100 * agreement:.1f} % | "
                  f"{images['mean_abs']:.1e} / {images['max_abs']:.1e} |")
    return rows


if __name__ == "__main__":
    main()
