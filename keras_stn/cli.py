"""The `keras-stn` command line: thin wrappers over the package's functions."""

import argparse
import os
import sys

import numpy as np

_QUANTIZATION_CHOICES = ("float32", "float16", "dynamic_range", "int8")


def _load_calibration(path, count):
    """First array of a `.npy` / `.npz` file, at most `count` examples."""
    if path.endswith(".npz"):
        with np.load(path) as data:
            array = data[data.files[0]]
    else:
        array = np.load(path)
    return np.asarray(array, dtype=np.float32)[:count]


def _export(args):
    import keras

    from keras_stn import export

    model = keras.saving.load_model(args.model)
    if args.saved_model:
        model.export(args.saved_model, verbose=False)
        print(f"SavedModel: {args.saved_model}")
    if not args.tflite:
        return 0
    input_shape = tuple(model.inputs[0].shape[1:])
    if args.calibration_data:
        samples = _load_calibration(args.calibration_data, args.calibration_size)
        if samples.shape[1:] != input_shape:
            raise SystemExit(
                f"--calibration-data holds arrays of shape {samples.shape[1:]}; "
                f"the model takes {input_shape}")
    elif args.quantization == "int8":
        raise SystemExit("--quantization int8 needs --calibration-data FILE.npy "
                         "(real inputs, batch first)")
    else:
        # No data given: parity on uniform inputs in [0, 1].
        rng = np.random.default_rng(0)
        samples = rng.uniform(size=(8,) + input_shape).astype(np.float32)

    def representative_dataset():
        for sample in samples:
            yield [sample[None]]

    quantization = None if args.quantization == "float32" else args.quantization
    source = args.saved_model or model
    path = export.export_tflite(
        source, args.tflite, quantization=quantization,
        representative_dataset=representative_dataset
        if quantization == "int8" else None)
    ops = export.tflite_ops(path)
    parity = export.tflite_parity(model, path, samples[:32])
    print(f"TFLite: {path} ({os.path.getsize(path):,} bytes, "
          f"quantization={args.quantization})")
    print(f"ops ({len(ops)}): {', '.join(ops)}")
    first = parity["outputs"][0]
    print(f"parity: max |TFLite - Keras| = {first['max_abs']:.3g} over "
          f"{parity['examples']} inputs")
    if "top1_agreement" in first:
        print(f"parity: top-1 agreement {first['top1_agreement']:.2%}")
    return 0


def _train(args):
    from keras_stn.paper import experiment

    experiment.run_from_args(args)
    return 0


def _results(args):
    from keras_stn.paper import experiment

    print(experiment.results_table(args.output_dir))
    return 0


def build_parser():
    from keras_stn.paper import experiment

    parser = argparse.ArgumentParser(
        prog="keras-stn",
        description="Spatial Transformer Networks for Keras 3: tools.")
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser(
        "train", help="the main job: CNN vs ST-CNN on distorted MNIST",
        description=experiment.__doc__.splitlines()[0])
    experiment.add_arguments(train_parser)
    train_parser.set_defaults(handler=_train)

    results_parser = commands.add_parser(
        "results", help="Markdown table of the main job's report.json files")
    results_parser.add_argument("--output-dir", default="saved_models")
    results_parser.set_defaults(handler=_results)

    export_parser = commands.add_parser(
        "export", help="export a .keras model to SavedModel and/or TFLite",
        description="Export a .keras model to a SavedModel folder and/or a "
                    "builtins-only .tflite file; prints the TFLite op list, "
                    "size and parity with Keras.")
    export_parser.add_argument("model", help="the .keras file")
    export_parser.add_argument("--saved-model", metavar="DIR",
                               help="write a SavedModel here")
    export_parser.add_argument("--tflite", metavar="FILE",
                               help="write a .tflite file here")
    export_parser.add_argument("--quantization", default="float32",
                               choices=_QUANTIZATION_CHOICES)
    export_parser.add_argument(
        "--calibration-data", metavar="FILE",
        help=".npy/.npz of real inputs (batch first): int8 calibration and "
             "the parity check")
    export_parser.add_argument("--calibration-size", type=int, default=200,
                               help="examples of --calibration-data to use")
    export_parser.set_defaults(handler=_export)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "export" and not (args.saved_model or args.tflite):
        build_parser().error("export needs --saved-model DIR and/or --tflite FILE")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
