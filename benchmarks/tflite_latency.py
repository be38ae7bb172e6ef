"""TFLite (LiteRT) latency of an ST-CNN against the same CNN without the ST.

    python benchmarks/tflite_latency.py [--repeats 50] [--threads 2]

Both models come from `tests/fixtures/mnist_st_cnn.keras` (the quick start's
ST-CNN trained on rotated MNIST): the ST-CNN as it is, and its CNN alone (the
same layers after the spatial transformer). Each is converted with
`keras_stn.export_tflite` in float32 and in int8 (calibrated on 100 digits:
real MNIST test digits when `$KERAS_STN_MNIST_DIR` is set, uniform noise
otherwise), then timed in LiteRT with the given threads at batch 1 and 32:
warm-up runs, then the median of `--repeats` invocations (input already set,
so only `invoke` is timed). Prints a Markdown table.
"""

import argparse
import os
import pathlib
import platform
import statistics
import tempfile
import time

import keras
import numpy as np

import keras_stn

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "mnist_st_cnn.keras"


def calibration_images(count):
    mnist_dir = os.environ.get("KERAS_STN_MNIST_DIR")
    if mnist_dir:
        dataset = keras_stn.paper.datasets.load_mnist("test", mnist_dir=mnist_dir)
        images, _ = next(iter(dataset.batch(count)))
        return images.numpy(), "MNIST test digits"
    rng = np.random.default_rng(0)
    return rng.uniform(size=(count, 28, 28, 1)).astype(np.float32), "noise"


def models():
    st_cnn = keras.saving.load_model(FIXTURE)
    inputs = keras.Input((28, 28, 1))
    hidden = inputs
    for layer in st_cnn.layers[1:]:
        hidden = layer(hidden)
    return {"ST-CNN": st_cnn, "CNN": keras.Model(inputs, hidden)}


def median_invoke_ms(path, batch, threads, repeats, warmup):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], (batch, 28, 28, 1))
    interpreter.allocate_tensors()
    images = np.random.default_rng(1).uniform(size=(batch, 28, 28, 1))
    interpreter.set_tensor(detail["index"], images.astype(np.float32))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args(argv)

    calibration, source = calibration_images(100)

    def representative_dataset():
        for image in calibration:
            yield [image[None]]

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, model in models().items():
            for quantization in (None, "int8"):
                label = quantization or "float32"
                path = keras_stn.export_tflite(
                    model, os.path.join(scratch, f"{name}-{label}.tflite"),
                    quantization=quantization,
                    representative_dataset=representative_dataset)
                size = os.path.getsize(path)
                for batch in args.batches:
                    ms = median_invoke_ms(path, batch, args.threads,
                                          args.repeats, args.warmup)
                    rows.append((name, label, batch, ms, size))

    print(f"LiteRT, {args.threads} threads, median of {args.repeats} "
          f"invocations after {args.warmup} warm-up; {platform.machine()}, "
          f"{os.cpu_count()} CPUs; int8 calibrated on 100 {source}")
    print()
    print("| model | weights | batch | ms per batch | ms per image | "
          "ST-CNN / CNN | file size |")
    print("|---|---|---|---|---|---|---|")
    cnn = {(label, batch): ms for name, label, batch, ms, _ in rows
           if name == "CNN"}
    for name, label, batch, ms, size in rows:
        ratio = f"{ms / cnn[(label, batch)]:.2f}×" if name == "ST-CNN" else ""
        print(f"| {name} | {label} | {batch} | {ms:.3f} | {ms / batch:.4f} | "
              f"{ratio} | {size / 1024:.0f} KiB |")
    return rows


if __name__ == "__main__":
    main()
