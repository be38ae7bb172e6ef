"""ONNX export of the committed models, on the backend of this process.

    python benchmarks/onnx_export.py                      # TensorFlow: tf2onnx
    KERAS_BACKEND=torch python benchmarks/onnx_export.py  # PyTorch: torch.onnx

Loads every `saved_models/*/model.keras` (the paper's ST-CNNs of every
transform, the quick start, the JAX-trained model, the registration model's
velocity U-Net where present), writes it with `keras_stn.export_onnx`
(dynamic batch) and prints a Markdown table: the opset, the ops that do the
sampling, the op count, the file size, the export time and the largest
|ONNX - Keras| over uniform inputs at batch sizes 1 and 3, run in
onnxruntime. Needs `pip install keras-stn[onnx]`.
"""

import argparse
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The ops a backend's exporter samples with.
SAMPLING_OPS = ("GatherND", "Gather", "GridSample", "AffineGrid")


def export_row(path, scratch):
    import keras

    import keras_stn
    from keras_stn import export

    model = keras.saving.load_model(path)
    target = pathlib.Path(scratch) / f"{path.parent.name}.onnx"
    start = time.perf_counter()
    keras_stn.export_onnx(model, target, check=False)
    seconds = time.perf_counter() - start
    listing = export.onnx_ops(target)
    parity = export.onnx_parity(model, target)
    sampling = [f"{op} ×{listing['ops'][op]}" for op in SAMPLING_OPS
                if op in listing["ops"]]
    return {"model": path.parent.name, "opset": listing["opset"],
            "sampling": ", ".join(sampling),
            "ops": sum(listing["ops"].values()),
            "kb": target.stat().st_size / 1024, "seconds": seconds,
            "max_abs": parity["max_abs"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", type=pathlib.Path,
                        help="`.keras` files (default: saved_models/*/)")
    args = parser.parse_args(argv)
    import keras

    paths = args.models or sorted((ROOT / "saved_models").glob(
        "*/model.keras"))
    print(f"backend {keras.backend.backend()}; |ONNX - Keras| at batch "
          "sizes 1 and 3 (one file each, dynamic batch)")
    print()
    print("| model | opset | sampling ops | ops | KB | export s | "
          "max abs |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for path in paths:
            row = export_row(path, scratch)
            print(f"| {row['model']} | {row['opset']} | {row['sampling']} | "
                  f"{row['ops']} | {row['kb']:.0f} | {row['seconds']:.1f} | "
                  f"{row['max_abs']:.2g} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
