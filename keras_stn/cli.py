"""The `keras-stn` command line: thin wrappers over the package's functions.

User errors (missing or corrupt files, a bad suffix, an unsupported model, a
bad data folder) end the command with one line, `keras-stn: error: ...`, and
exit status 2, after checking everything before writing any file; `--debug`
shows the traceback instead. TensorFlow's C++ and absl logs stay off unless
`--verbose` is given.
"""

import argparse
import contextlib
import os
import sys
import tempfile
import zipfile

import numpy as np

from keras_stn._files import move_into_place

_QUANTIZATION_CHOICES = ("float32", "float16", "dynamic_range", "int8")
_PROG = "keras-stn"


class UserError(Exception):
    """A mistake in what the user asked for: reported in one line."""


def _load_calibration(path, count, input_shape):
    """First array of a `.npy` / `.npz` file, at most `count` examples."""
    try:
        if path.endswith(".npz"):
            with np.load(path) as data:
                array = data[data.files[0]]
        else:
            array = np.load(path)
        array = np.asarray(array, dtype=np.float32)[:count]
    except (OSError, ValueError, IndexError) as error:
        raise UserError(
            f"--calibration-data: cannot read {path!r} as a .npy/.npz array "
            f"({_first_line(error)})") from error
    if array.shape[1:] != input_shape:
        raise UserError(
            f"--calibration-data: expected arrays of shape {input_shape} "
            f"(batch first), the model's input; received {array.shape[1:]} "
            f"in {path!r}")
    return array


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _load_model(path):
    import keras

    import keras_stn  # noqa: F401 (registers the layer for load_model)

    if not os.path.isfile(path):
        raise UserError(f"model file not found: {path!r}")
    if not path.endswith(".keras"):
        raise UserError(f"expected a .keras model file; received {path!r}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path!r} is not a .keras model file (not a zip "
                        "archive: corrupt or of another format)")
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # Keras raises many types for bad files
        raise UserError(f"cannot load {path!r} as a Keras model "
                        f"({_first_line(error)})") from error


@contextlib.contextmanager
def _quiet_stderr(enabled):
    """Silences native (C++, absl, LiteRT) log lines on descriptor 2 for
    the duration of the block only: TensorFlow's start-up, the SavedModel
    export and the TFLite conversion print them whatever the log level.
    A crash outside these blocks still reaches the terminal."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _export(args):
    _check_export_arguments(args)
    with _quiet_stderr(not args.verbose):
        model = _load_model(args.model)
    if len(model.inputs) != 1:
        raise UserError(
            f"keras-stn export takes single-input models; {args.model!r} has "
            f"{len(model.inputs)} inputs (use keras_stn.export_tflite from "
            "Python for others)")
    samples = _export_samples(args, tuple(model.inputs[0].shape[1:]))
    written = _write_exports(args, model, samples)
    if args.saved_model:
        print(f"SavedModel: {args.saved_model}")
    if args.tflite:
        _print_tflite_summary(args, *written["tflite"])
    if args.onnx:
        _print_onnx_summary(args, *written["onnx"])
    return 0


def _check_export_arguments(args):
    from keras_stn import backends

    try:
        backends.require_tensorflow("keras-stn export")
    except RuntimeError as error:
        raise UserError(str(error)) from error
    if args.tflite and not args.tflite.endswith(".tflite"):
        raise UserError(f"--tflite: expected a file name ending in .tflite; "
                        f"received {args.tflite!r}")
    if args.onnx and not args.onnx.endswith(".onnx"):
        raise UserError(f"--onnx: expected a file name ending in .onnx; "
                        f"received {args.onnx!r}")
    for target in (args.saved_model, args.tflite, args.onnx):
        if target and os.path.exists(target) and not args.overwrite:
            raise UserError(f"{target!r} exists; pass --overwrite to replace "
                            "it")


def _export_samples(args, input_shape):
    """Inputs for int8 calibration and the parity check: the user's, or
    (float exports only) uniform inputs in [0, 1]."""
    if args.calibration_data:
        return _load_calibration(args.calibration_data, args.calibration_size,
                                 input_shape)
    if args.quantization == "int8":
        raise UserError("--quantization int8 needs --calibration-data "
                        "FILE.npy (real inputs, batch first)")
    rng = np.random.default_rng(0)
    return rng.uniform(size=(8,) + input_shape).astype(np.float32)


def _write_exports(args, model, samples):
    """Writes the SavedModel, TFLite and/or ONNX file the flags ask for,
    made in a scratch folder first so that a failure leaves no file behind.

    Returns:
        `{"tflite": (ops, bytes, parity), "onnx": (ops, bytes, parity)}`,
        with Nones for a file not asked for.
    """
    from keras_stn import export

    quantization = None if args.quantization == "float32" else args.quantization

    def representative_dataset():
        for sample in samples:
            yield [sample[None]]

    ops = size = parity = None
    with tempfile.TemporaryDirectory() as scratch:
        saved_model = os.path.join(scratch, "saved_model")
        if args.saved_model:
            with _quiet_stderr(not args.verbose):
                model.export(saved_model, verbose=False)
        path = os.path.join(scratch, "model.tflite") if args.tflite else None
        if path:
            try:
                with _quiet_stderr(not args.verbose):
                    export.export_tflite(
                        saved_model if args.saved_model else model, path,
                        quantization=quantization,
                        representative_dataset=representative_dataset
                        if quantization == "int8" else None)
                    parity = export.tflite_parity(model, path, samples[:32])
            except ValueError as error:
                raise UserError(_first_line(error)) from error
            ops, size = export.tflite_ops(path), os.path.getsize(path)
        onnx_path = os.path.join(scratch, "model.onnx") if args.onnx else None
        onnx = (None, None, None)
        if onnx_path:
            onnx = _write_onnx(args, model, onnx_path)
        for source, target in ((saved_model, args.saved_model),
                               (path, args.tflite), (onnx_path, args.onnx)):
            if target:
                move_into_place(source, target)
    return {"tflite": (ops, size, parity), "onnx": onnx}


def _write_onnx(args, model, path):
    """The ONNX file (tf2onnx), checked in onnxruntime: `(ops, bytes,
    parity)`."""
    from keras_stn import export
    from keras_stn.export.onnx import check_parity

    try:
        with _quiet_stderr(not args.verbose):
            export.export_onnx(model, path, check=False)
            parity = export.onnx_parity(model, path)
        check_parity(parity, args.onnx)
    except ImportError as error:
        raise UserError(f"--onnx needs tf2onnx and onnxruntime: pip install "
                        f"keras-stn[onnx] ({_first_line(error)})") from error
    except ValueError as error:
        raise UserError(_first_line(error)) from error
    return export.onnx_ops(path), os.path.getsize(path), parity


def _print_tflite_summary(args, ops, size, parity):
    print(f"TFLite: {args.tflite} ({size:,} bytes, "
          f"quantization={args.quantization})")
    print(f"ops ({len(ops)}): {', '.join(ops)}")
    first = parity["outputs"][0]
    print(f"parity: max |TFLite - Keras| = {first['max_abs']:.3g} over "
          f"{parity['examples']} inputs")
    if "top1_agreement" in first:
        print(f"parity: top-1 agreement {first['top1_agreement']:.2%}")


def _print_onnx_summary(args, ops, size, parity):
    print(f"ONNX: {args.onnx} ({size:,} bytes, opset {ops['opset']}, "
          "dynamic batch)")
    print(f"ops ({len(ops['ops'])}): {', '.join(ops['ops'])}")
    print(f"parity: max |ONNX - Keras| = {parity['max_abs']:.3g} at batch "
          f"sizes {', '.join(map(str, parity['batch_sizes']))}")


def _train(args):
    from keras_stn.paper import experiment

    try:
        experiment.run_from_args(args)
    except (ValueError, ImportError) as error:
        raise UserError(_first_line(error)) from error
    return 0


def _results(args):
    from keras_stn.paper import experiment

    if not os.path.isdir(args.output_dir):
        raise UserError(f"--output-dir: no folder {args.output_dir!r}")
    warn = lambda text: print(f"{_PROG}: warning: {text}",  # noqa: E731
                              file=sys.stderr)
    print(experiment.results_table(args.output_dir, warn=warn))
    if args.figure:
        experiment.results_figure(args.output_dir, args.figure)
        print(f"wrote {args.figure}")
    return 0


_EXAMPLES = {
    None: """examples:
  keras-stn train                              # the main job (RTS, ~10 min)
  keras-stn train --distortion TC --smoke      # check the pipeline in seconds
  keras-stn results                            # table of saved_models/*/report.json
  keras-stn export saved_models/rts/model.keras --tflite /tmp/stn.tflite""",
    "train": """example:
  KERAS_STN_MNIST_DIR=/data/mnist keras-stn train --distortion RTS --epochs 10

An interrupted run (Ctrl-C, a kill) resumes after its last finished epoch
when run again with the same arguments; --restart starts over. The run is
written to a temporary folder beside OUTPUT_DIR/RUN_NAME and moved there
when complete.""",
    "results": """example:
  keras-stn results --output-dir saved_models""",
    "export": """examples:
  keras-stn export saved_models/rts/model.keras --saved-model /tmp/stn \\
      --tflite /tmp/stn.tflite --quantization int8 --calibration-data x.npy
  keras-stn export saved_models/rts/model.keras --onnx /tmp/stn.onnx""",
}


def _add_common_flags(parser):
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and LiteRT's own log lines")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error")


def build_parser():
    from keras_stn.paper import experiment

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=_PROG, formatter_class=formatter, epilog=_EXAMPLES[None],
        description="Spatial Transformer Networks for Keras 3: tools.")
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser(
        "train", help="the main job: CNN vs ST-CNN on distorted MNIST",
        description=experiment.__doc__.splitlines()[0],
        formatter_class=formatter, epilog=_EXAMPLES["train"])
    experiment.add_arguments(train_parser)
    train_parser.set_defaults(handler=_train)

    results_parser = commands.add_parser(
        "results", help="Markdown table of the main job's report.json files",
        description="Markdown table of the main job's report.json files "
                    "(unreadable reports are skipped with a warning).",
        formatter_class=formatter, epilog=_EXAMPLES["results"])
    results_parser.add_argument("--output-dir", default="saved_models")
    results_parser.add_argument(
        "--figure", default=None,
        help="also draw ours against the paper's Table 1 per distortion "
             "(a .png path)")
    results_parser.set_defaults(handler=_results)

    export_parser = commands.add_parser(
        "export",
        help="export a .keras model to SavedModel, TFLite and/or ONNX",
        description="Export a .keras model to a SavedModel folder, a "
                    "builtins-only .tflite file and/or an .onnx file; prints "
                    "each file's op list, size and parity with Keras. Nothing "
                    "is written unless everything succeeds.",
        formatter_class=formatter, epilog=_EXAMPLES["export"])
    export_parser.add_argument("model", help="the .keras file")
    export_parser.add_argument("--saved-model", metavar="DIR",
                               help="write a SavedModel here")
    export_parser.add_argument("--tflite", metavar="FILE",
                               help="write a .tflite file here")
    export_parser.add_argument("--onnx", metavar="FILE",
                               help="write an .onnx file here (tf2onnx; "
                                    "needs keras-stn[onnx])")
    export_parser.add_argument("--quantization", default="float32",
                               choices=_QUANTIZATION_CHOICES)
    export_parser.add_argument(
        "--calibration-data", metavar="FILE",
        help=".npy/.npz of real inputs (batch first): int8 calibration and "
             "the parity check")
    export_parser.add_argument("--calibration-size", type=int, default=200,
                               help="examples of --calibration-data to use")
    export_parser.add_argument("--overwrite", action="store_true",
                               help="replace existing output files")
    export_parser.set_defaults(handler=_export)
    for sub in (train_parser, results_parser, export_parser):
        _add_common_flags(sub)
    return parser


def _wants_verbose(argv):
    """Whether `argv` asks for `--verbose`, as argparse reads it (so its
    abbreviations, `--verb`, count), before the full parser is built:
    building it loads TensorFlow, whose log level must be set first."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--verbose", action="store_true")
    known, _ = early.parse_known_args(argv)
    return known.verbose


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = _wants_verbose(argv)
    if not verbose:
        # Set before TensorFlow loads (importing keras_stn does not load
        # it): its C++ logs read these once, at start-up.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    with _quiet_stderr(not verbose):
        # TensorFlow's absl start-up notices go to descriptor 2 whatever
        # the log level.
        import keras_stn

        keras_stn.register_serializables()
        parser = build_parser()
    if not verbose:
        import absl.logging
        import tensorflow as tf

        absl.logging.set_verbosity(absl.logging.ERROR)
        tf.get_logger().setLevel("ERROR")
    args = parser.parse_args(argv)
    if args.command == "export" and not (args.saved_model or args.tflite
                                         or args.onnx):
        parser.error("export needs --saved-model DIR, --tflite FILE and/or "
                     "--onnx FILE")
    try:
        return args.handler(args)
    except UserError as error:
        if args.debug:
            raise
        print(f"{_PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
