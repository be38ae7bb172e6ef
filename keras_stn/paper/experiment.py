"""The main job: CNN vs ST-CNN on the paper's distorted MNIST, end to end.

`run()` is what `keras-stn train` and `examples/distorted_mnist.py` execute:

1. Data: `datasets.distorted_mnist` — fresh distortions every pass over the
   training set, one fixed test set per seed (generated once, cached, and
   scored by both models).
2. Models: `models.paper_cnn` and `models.paper_st_cnn` (the transformer
   downsamples 42 and 60 pixel canvases).
3. Train each with Adam and a cosine learning-rate decay on MNIST's first
   55,000 training digits, with a Keras progress bar, scoring the 5,000
   held-out ones after every epoch; time every epoch; resume after a kill;
   TensorBoard logs (with the transformer's snapshots).
4. Evaluate both on the same test images.
5. Export the ST-CNN: `model.keras`, a SavedModel, a builtins-only
   `model.tflite` whose parity with Keras is checked; `report.json`;
   `transforms.png` (test inputs beside the transformer's outputs) and
   `training_curves.png` (training and held-out loss and error per epoch).
"""

import dataclasses
import json
import os
import resource
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_stn.paper import datasets
from keras_stn import backends
from keras_stn import export
from keras_stn import transforms
from keras_stn._files import move_into_place
from keras_stn._files import write_json
from keras_stn.callbacks import TransformerSnapshots
from keras_stn.paper import models
from keras_stn.spatial_transformer import SpatialTransformer

# Jaderberg et al. 2015, Table 1: % test error of the CNN baseline and of the
# ST-CNN (affine; TC: the paper's best ST-CNN).
PAPER_TEST_ERROR = {
    "R": {"cnn": 1.2, "st_cnn": 0.7},
    "RTS": {"cnn": 0.8, "st_cnn": 0.5},
    "P": {"cnn": 1.5, "st_cnn": 0.8},
    "E": {"cnn": 1.4, "st_cnn": 1.2},
    "TC": {"cnn": 3.5, "st_cnn": 1.7},
}
# Table 1's ST-CNN rows: % test error per transform (TC: affine only).
PAPER_ST_CNN_ERROR = {
    "affine": {"R": 0.7, "RTS": 0.5, "P": 0.8, "E": 1.2, "TC": 1.7},
    "projective": {"R": 0.8, "RTS": 0.6, "P": 0.8, "E": 1.3},
    "tps": {"R": 0.7, "RTS": 0.5, "P": 0.8, "E": 1.1},
}
# The transformer's output canvas (None: the input's size): 42 and 60 pixel
# inputs are downsampled. Larger outputs (RTS 42², TC 40²) won quick screens
# but tied at `paper`, at about twice the ST-CNN's cost
# (saved_models/screening.md).
ST_OUTPUT_SIZE = {"R": None, "RTS": (28, 28), "P": None, "E": None,
                  "TC": (30, 30)}
# The ST-CNN's transformer starts as a zoom showing this fraction of the
# canvas (`models.paper_st_cnn(initial_scale=)`): TC's 28-pixel digit lies
# in a 60-pixel canvas, so 0.5 shows it at full resolution in the 30-pixel
# output from the first step. Started at the identity (1.0), its ST-CNN
# learned to translate but not to zoom and lost to the CNN; see
# saved_models/screening.md.
ST_INITIAL_SCALE = {"R": 1.0, "RTS": 1.0, "P": 1.0, "E": 1.0, "TC": 0.5}
# Both models' learning rate rises linearly from 0 over this many first
# steps (`compile_model`). Without it one TC start in three or four left
# the transformer's window off the digit within its first Adam steps and
# stayed at chance; R, RTS, P and E start at the identity and trained
# without it (saved_models/screening.md).
WARMUP_STEPS = {"R": 0, "RTS": 0, "P": 0, "E": 0, "TC": 500}
DEFAULTS = {"distortion": "RTS", "budget": "quick", "transform": "affine",
            "learning_rate": 1e-3, "dropout": 0.0, "weight_decay": 0.0,
            "initial_scale": None, "warmup_steps": None, "test_examples": 10000,
            "seed": 0}
# What runs started before a setting existed trained with.
_UNRECORDED_SETTINGS = {"dropout": 0.0, "weight_decay": 0.0,
                        "initial_scale": 1.0, "warmup_steps": 0}
_UNRECORDED_ST_OUTPUT_SIZE = {"RTS": [28, 28], "TC": [30, 30]}
# Training budgets (the same for both models): "quick" is the default run,
# "paper" trains until the held-out curves flatten (learning rate decayed
# to zero), inside 90 minutes per distortion on a 2-core CPU; "long" sees
# 2.5 times as many digits, for the distortions where "paper" falls short
# of the paper's error (R, RTS: about an hour alone on 2 cores).
BUDGETS = {
    "quick": {"epochs": 10, "steps_per_epoch": 500, "batch_size": 64},
    "paper": {"epochs": 20, "steps_per_epoch": 1000, "batch_size": 64},
    "long": {"epochs": 50, "steps_per_epoch": 1000, "batch_size": 64},
}
SMOKE = {"epochs": 1, "steps_per_epoch": 3, "batch_size": 16,
         "test_examples": 64}
# Held-out digits (MNIST train[55000:]) scored after every epoch.
VALIDATION_EXAMPLES = 5000
# TFLite float32 must agree with Keras to this (logits; float rounding).
TFLITE_PARITY_TOLERANCE = 1e-3


class _EpochLog(keras.callbacks.Callback):
    """Per-epoch metrics and seconds, kept on disk so that a resumed run
    reports every epoch, as an uninterrupted one does."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.entries = []
        if os.path.isfile(path):
            with open(path) as file:
                self.entries = json.load(file)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.entries.append({
            "seconds": time.perf_counter() - self._start,
            "logs": {key: float(value) for key, value in (logs or {}).items()},
        })
        write_json(self.path, self.entries)

    def history(self):
        keys = self.entries[0]["logs"] if self.entries else {}
        return {key: [entry["logs"][key] for entry in self.entries]
                for key in keys}

    def seconds(self):
        return [entry["seconds"] for entry in self.entries]


def compile_model(model, learning_rate, total_steps, weight_decay=0.0,
                  warmup_steps=0):
    """Compiles a model as the main job trains it: Adam, the learning rate
    following a cosine decay to zero over `total_steps`, cross-entropy on
    logits, accuracy.

    `warmup_steps` > 0 first raises the learning rate linearly from 0 to
    `learning_rate` over that many steps, then decays it along the cosine
    over the remaining ones. Adam's first steps move every weight by about
    the learning rate whatever its gradient's size; a transformer's
    zero-initialised head multiplies such steps by its O(10) features, and
    θ can jump out of the canvas before the classifier has learned
    anything (saved_models/screening.md).

    `weight_decay` > 0 makes the optimizer AdamW (decoupled decay: each
    step shrinks a weight by `weight_decay × learning rate` of itself) on
    the classifier's kernels only: biases are not decayed, nor is the
    spatial transformer (decay would pull its head towards θ = 0, a
    collapse of the output onto one point, instead of the identity).
    """
    models.check_fraction("weight_decay", weight_decay)
    check_warmup_steps(warmup_steps, total_steps)
    if warmup_steps:
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=total_steps - warmup_steps,
            warmup_target=learning_rate, warmup_steps=warmup_steps)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=total_steps)
    if weight_decay:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
        transformers = [layer for layer in model.layers
                        if isinstance(layer, SpatialTransformer)]
        optimizer.exclude_from_weight_decay(
            var_list=[variable for layer in transformers
                      for variable in layer.trainable_variables],
            var_names=["bias"])
    else:
        optimizer = keras.optimizers.Adam(schedule)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    return model


def check_warmup_steps(warmup_steps, total_steps):
    """Raises a `ValueError` naming `warmup_steps` unless it is an integer
    in [0, `total_steps`)."""
    if isinstance(warmup_steps, bool) or not isinstance(
            warmup_steps, (int, np.integer)) or not (
            0 <= warmup_steps < total_steps):
        raise ValueError(
            "Invalid value for argument `warmup_steps`. Expected an integer "
            f"in [0, {total_steps}) (the run's training steps). Received: "
            f"warmup_steps={warmup_steps!r}")


def _train(name, build, train_stream, validation, epochs, steps_per_epoch,
           learning_rate, verbose, backup_dir, snapshot_inputs=None,
           weight_decay=0.0, warmup_steps=0):
    """Trains (or resumes, or reloads) one model; returns it, its history and
    its seconds per epoch.

    `train_stream(epoch)` is the training stream from that epoch on.
    Progress lives in `backup_dir/<name>/`: Keras' `BackupAndRestore`
    checkpoint (weights, optimizer, epoch), the per-epoch log, and once
    trained the model itself, so that a killed run picks up where it was.
    """
    model_dir = os.path.join(backup_dir, name)
    os.makedirs(model_dir, exist_ok=True)
    done = os.path.join(model_dir, "done.json")
    if os.path.isfile(done):
        with open(done) as file:
            finished = json.load(file)
        print(f"== {name}: trained in an earlier, interrupted run; reloaded")
        model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
        return model, finished["history"], finished["seconds"]
    model = compile_model(build(), learning_rate, epochs * steps_per_epoch,
                          weight_decay, warmup_steps)
    log = _EpochLog(os.path.join(model_dir, "epochs.json"))
    if log.entries:
        print(f"== {name}: resuming after epoch {len(log.entries)} of "
              f"{epochs} (an earlier run was interrupted)")
    # The stream continues where the finished epochs left it.
    stream = train_stream(len(log.entries))
    backup = keras.callbacks.BackupAndRestore(
        os.path.join(model_dir, "checkpoint"), delete_checkpoint=False)
    log_dir = os.path.join(model_dir, "tensorboard")
    watchers = [keras.callbacks.TensorBoard(log_dir, write_graph=False)]
    if snapshot_inputs is not None:
        watchers.append(TransformerSnapshots(snapshot_inputs, log_dir))
    model.fit(stream, epochs=epochs, steps_per_epoch=steps_per_epoch,
              validation_data=validation, shuffle=False,
              callbacks=[backup, log, *watchers], verbose=verbose)
    model.save(os.path.join(model_dir, "model.keras"))
    write_json(done, {"history": log.history(), "seconds": log.seconds()})
    return model, log.history(), log.seconds()


def _command_line():
    """This process's command line, as a user would type it."""
    program, *arguments = sys.argv
    if os.path.basename(program).startswith("keras-stn"):
        program = "keras-stn"
    elif program.endswith(os.path.join("keras_stn", "cli.py")):
        program = "python -m keras_stn.cli"
    else:
        program = "python " + os.path.relpath(program)
    return " ".join([program, *arguments])


def _interval(values):
    """Mean and 95 % interval of per-digit values, in percent."""
    mean = values.mean()
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(
        values) > 1 else float("nan")
    return [round(float(100.0 * (mean - half)), 2),
            round(float(100.0 * (mean + half)), 2)]


def _unrecorded(key, previous):
    """What a run started before `key` was recorded trained with."""
    if key == "st_output_size":
        return _UNRECORDED_ST_OUTPUT_SIZE.get(previous.get("distortion"),
                                              [28, 28])
    return _UNRECORDED_SETTINGS.get(key)


def _prepare_backup(backup_dir, settings, restart):
    """The backup folder of this run, checked to belong to these settings."""
    if restart:
        shutil.rmtree(backup_dir, ignore_errors=True)
    path = os.path.join(backup_dir, "settings.json")
    if os.path.isfile(path):
        with open(path) as file:
            previous = json.load(file)
        # Settings added since a run started take their default value.
        changed = sorted(key for key in settings
                         if previous.get(key, _unrecorded(key, previous))
                         != settings[key])
        if changed:
            raise ValueError(
                f"An interrupted run with other settings ({', '.join(changed)}) "
                f"is saved in {backup_dir}: rerun it with the same arguments "
                "to resume it, or pass --restart to discard it.")
        return
    os.makedirs(backup_dir, exist_ok=True)
    write_json(path, settings)


def _save_pictures(output_dir, st_cnn, test, histories, distortion):
    # Imported here: matplotlib is an optional (examples) dependency.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, labels = next(iter(test.unbatch().batch(16)))
    warped = st_cnn.layers[0](images).numpy()
    predictions = st_cnn.predict(images, verbose=0).argmax(-1)
    figure, axes = plt.subplots(4, 8, figsize=(12, 6.6))
    for index in range(16):
        row, col = 2 * (index // 8), index % 8
        axes[row, col].imshow(images[index, ..., 0], cmap="gray", vmin=0, vmax=1)
        axes[row + 1, col].imshow(warped[index, ..., 0], cmap="gray",
                                  vmin=0, vmax=1)
        axes[row, col].set_title(f"input ({int(labels[index])})", fontsize=8)
        axes[row + 1, col].set_title(f"ST output → {predictions[index]}",
                                     fontsize=8)
    for axis in axes.ravel():
        axis.axis("off")
    figure.suptitle(f"{distortion}-distorted MNIST test digits and what the "
                    "spatial transformer feeds the CNN")
    figure.tight_layout()
    figure.savefig(os.path.join(output_dir, "transforms.png"), dpi=80)
    plt.close(figure)

    figure, (loss_axis, error_axis) = plt.subplots(1, 2, figsize=(10, 3.5))
    for index, (name, history) in enumerate(histories.items()):
        epochs = np.arange(1, len(history["loss"]) + 1)
        color = f"C{index}"
        loss_axis.plot(epochs, history["loss"], marker="o", color=color,
                       label=f"{name} training")
        error_axis.plot(epochs, 100 * (1 - np.array(history["accuracy"])),
                        marker="o", color=color, label=f"{name} training")
        if "val_accuracy" in history:
            loss_axis.plot(epochs, history["val_loss"], marker="s",
                           linestyle="--", color=color,
                           label=f"{name} held out")
            error_axis.plot(
                epochs, 100 * (1 - np.array(history["val_accuracy"])),
                marker="s", linestyle="--", color=color,
                label=f"{name} held out")
    loss_axis.set(xlabel="epoch", ylabel="loss", yscale="log")
    error_axis.set(xlabel="epoch", ylabel="error (%)", yscale="log")
    for axis in (loss_axis, error_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.suptitle(f"Training on {distortion}-distorted MNIST")
    figure.tight_layout()
    figure.savefig(os.path.join(output_dir, "training_curves.png"), dpi=80)
    plt.close(figure)


def _export(output_dir, st_cnn, test):
    keras_path = os.path.join(output_dir, "model.keras")
    st_cnn.save(keras_path)
    saved_model_dir = os.path.join(output_dir, "saved_model")
    st_cnn.export(saved_model_dir, verbose=False)
    tflite_path = export.export_tflite(
        st_cnn, os.path.join(output_dir, "model.tflite"))
    images, _ = next(iter(test))
    expected = st_cnn.predict(images, verbose=0)
    reloaded = keras.saving.load_model(keras_path).predict(images, verbose=0)
    # Keep the loaded object alive while its function runs.
    loaded = tf.saved_model.load(saved_model_dir)
    served = loaded.serve(images).numpy()
    litert = export.tflite_parity(st_cnn, tflite_path, images.numpy())
    parity = {
        "keras_reload_max_abs": float(np.abs(reloaded - expected).max()),
        "saved_model_max_abs": float(np.abs(served - expected).max()),
        "tflite_max_abs": litert["outputs"][0]["max_abs"],
        "tflite_top1_agreement": litert["outputs"][0]["top1_agreement"],
        "examples": litert["examples"],
    }
    worst = max(parity["keras_reload_max_abs"], parity["saved_model_max_abs"],
                parity["tflite_max_abs"])
    if worst > TFLITE_PARITY_TOLERANCE:
        raise RuntimeError(f"exported models disagree with Keras: {parity}")
    return {
        # Relative to the run's folder (written elsewhere, then moved).
        "files": {"keras": "model.keras", "saved_model": "saved_model",
                  "tflite": "model.tflite"},
        "tflite_ops": export.tflite_ops(tflite_path),
        "tflite_bytes": os.path.getsize(tflite_path),
        "parity": parity,
    }


def default_run_name(distortion, transform="affine", budget="quick",
                     smoke=False):
    """The run's folder name: `rts`, `p-projective-paper`, `rts-long`,
    `tc-smoke`.

    Example:

    >>> keras_stn.paper.experiment.default_run_name("E", "tps", "paper")
    'e-tps-paper'
    """
    return "".join([
        distortion.lower(), "" if transform == "affine" else f"-{transform}",
        "" if budget == "quick" else f"-{budget}", "-smoke" if smoke else ""])


def run(distortion=DEFAULTS["distortion"], budget=DEFAULTS["budget"],
        epochs=None, steps_per_epoch=None, batch_size=None,
        transform=DEFAULTS["transform"],
        learning_rate=DEFAULTS["learning_rate"], dropout=DEFAULTS["dropout"],
        weight_decay=DEFAULTS["weight_decay"],
        initial_scale=DEFAULTS["initial_scale"],
        warmup_steps=DEFAULTS["warmup_steps"],
        test_examples=DEFAULTS["test_examples"], seed=DEFAULTS["seed"],
        output_dir="saved_models", run_name=None, mnist_dir=None,
        data_dir=None, smoke=False, verbose=1, restart=False, command=None):
    """Trains the CNN baseline and the ST-CNN on one distortion and reports.

    Args:
        distortion: one of `datasets.DISTORTIONS`.
        budget: `"quick"`, `"paper"` or `"long"` (`BUDGETS`): epochs,
            steps per epoch and batch size, unless given below.
        epochs, steps_per_epoch, batch_size: override the budget's.
        transform: the ST-CNN's transform (`"affine"`, `"projective"`,
            `"tps"`, ...); the paper's Table 1 has all three.
        learning_rate: Adam's initial learning rate, decayed to zero along
            a cosine (the same for both models).
        dropout: rate of the dropout before both classifiers' logits
            (`models.paper_cnn`).
        weight_decay: AdamW's decoupled weight decay on both classifiers'
            kernels (`compile_model`); 0 trains with Adam.
        initial_scale: the ST-CNN's transformer starts as a zoom showing
            this fraction of the canvas (1: the identity); `None` takes the
            distortion's (`ST_INITIAL_SCALE`: TC 0.5, the others 1).
        warmup_steps: both models' learning rate rises linearly from 0
            over this many first steps before its cosine decay
            (`compile_model`); 0: no warm-up; `None` takes the
            distortion's (`WARMUP_STEPS`: TC 500, the others 0).
        test_examples: how many test digits (of 10,000) to score.
        seed: seeds the weights, the training stream and the test set.
        output_dir: parent folder of the run's folder.
        run_name: the run's folder name; defaults to
            `default_run_name(distortion, transform, budget, smoke)`.
        mnist_dir, data_dir: as in `datasets.load_mnist`.
        smoke: a few steps on 64 test digits, to check the whole pipeline.
        verbose: Keras' `fit` verbosity (1: progress bar).
        restart: discard the progress an interrupted run with this name
            left (by default it is resumed after its last finished epoch).
        command: how the run was started, for the report (default: this
            process's command line).

    The run is written to `<output_dir>/.<run_name>.partial/` and renamed to
    `<output_dir>/<run_name>/` once everything is written; its progress
    lives in `<output_dir>/.<run_name>.backup/` until then.

    Returns:
        The report, also written to `<output_dir>/<run_name>/report.json`.
    """
    plan = _plan(distortion, budget, epochs, steps_per_epoch, batch_size,
                 transform, learning_rate, dropout, weight_decay,
                 initial_scale, warmup_steps, test_examples, seed,
                 output_dir, run_name, mnist_dir, data_dir, smoke, restart)
    start = time.perf_counter()
    data = _data(plan)
    trained, histories, results, wrong = {}, {}, {}, {}
    for name in _MODEL_NAMES:
        trained[name], histories[name], seconds = _train_model(
            plan, data, name, verbose)
        results[name], wrong[name] = _evaluate(plan, data, name,
                                               trained[name], histories[name],
                                               seconds)
    exported = _export(plan.work_dir, trained["st_cnn"], data.test)
    _save_pictures(plan.work_dir, trained["st_cnn"], data.test, histories,
                   distortion)
    report = _report(plan, results, wrong, histories, exported,
                     _command_line() if command is None else command,
                     time.perf_counter() - start)
    _publish(plan, report)
    print(f"\nCNN {results['cnn']['test_error_percent']:.2f} % vs ST-CNN "
          f"{results['st_cnn']['test_error_percent']:.2f} % test error on "
          f"{distortion}; {report['wall_seconds']:.0f} s; wrote "
          f"{plan.run_dir}/")
    return report


_MODEL_NAMES = ("cnn", "st_cnn")


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A run's checked settings and its folders."""

    distortion: str
    transform: str
    budget: str
    epochs: int
    steps_per_epoch: int
    batch_size: int
    learning_rate: float
    dropout: float
    weight_decay: float
    initial_scale: float
    warmup_steps: int
    st_output_size: list
    seed: int
    test_examples: int
    smoke: bool
    validation_examples: int
    mnist_dir: str
    data_dir: str
    run_dir: str
    work_dir: str
    backup_dir: str



def _check_requirements():
    # Fail before training, not after: the job exports to SavedModel and
    # TFLite (TensorFlow tools), draws pictures and writes TensorBoard logs.
    backends.require_tensorflow(
        "The main job (it exports the ST-CNN to SavedModel and TFLite)")
    try:
        import matplotlib  # noqa: F401
        import tensorboard  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "The main job draws transforms.png and training_curves.png with "
            "matplotlib and writes TensorBoard logs: pip install "
            "'keras-stn[examples]' (or matplotlib and tensorboard)."
        ) from error


def _check_choices(distortion, budget, transform):
    if budget not in BUDGETS:
        raise ValueError(
            f"Invalid value for argument `budget`. Expected one of "
            f"{tuple(BUDGETS)}. Received: budget={budget!r}")
    if transform not in PAPER_ST_CNN_ERROR or distortion not in (
            PAPER_ST_CNN_ERROR[transform]):
        choices = [name for name, rows in PAPER_ST_CNN_ERROR.items()
                   if distortion in rows]
        raise ValueError(
            f"Invalid value for argument `transform`. Expected one of "
            f"{choices} for distortion {distortion!r} (the paper's Table 1). "
            f"Received: transform={transform!r}")
    if distortion not in datasets.DISTORTIONS:
        raise ValueError(
            "Invalid value for argument `distortion`. Expected one of "
            f"{datasets.DISTORTIONS}. Received: distortion={distortion!r}")


def _plan(distortion, budget, epochs, steps_per_epoch, batch_size,
          transform, learning_rate, dropout, weight_decay, initial_scale,
          warmup_steps, test_examples, seed, output_dir, run_name, mnist_dir,
          data_dir, smoke, restart):
    """Checks the arguments, resolves the budget and prepares the folders
    (resuming an interrupted run's progress unless `restart`)."""
    _check_requirements()
    _check_choices(distortion, budget, transform)
    models.check_fraction("dropout", dropout)
    models.check_fraction("weight_decay", weight_decay)
    if initial_scale is None:
        initial_scale = ST_INITIAL_SCALE[distortion]
    transforms.check_scale(initial_scale, "initial_scale")
    initial_scale = float(initial_scale)
    epochs = epochs or BUDGETS[budget]["epochs"]
    steps_per_epoch = steps_per_epoch or BUDGETS[budget]["steps_per_epoch"]
    batch_size = batch_size or BUDGETS[budget]["batch_size"]
    validation_examples = VALIDATION_EXAMPLES
    if smoke:
        epochs, steps_per_epoch = SMOKE["epochs"], SMOKE["steps_per_epoch"]
        batch_size = SMOKE["batch_size"]
        test_examples = min(test_examples, SMOKE["test_examples"])
        validation_examples = SMOKE["test_examples"]
    total_steps = epochs * steps_per_epoch
    if warmup_steps is None:
        warmup_steps = WARMUP_STEPS[distortion]
    if smoke and isinstance(warmup_steps, int):
        # A smoke run checks the pipeline: a longer warm-up is cut to fit.
        warmup_steps = min(warmup_steps, total_steps - 1)
    check_warmup_steps(warmup_steps, total_steps)
    warmup_steps = int(warmup_steps)
    run_name = run_name or default_run_name(distortion, transform, budget,
                                            smoke)
    # Checked before anything is written (download when no folder is set).
    mnist_dir = datasets.resolve_mnist_dir(mnist_dir)
    settings = {"distortion": distortion, "transform": transform,
                "budget": budget, "epochs": epochs,
                "steps_per_epoch": steps_per_epoch, "batch_size": batch_size,
                "learning_rate": learning_rate, "dropout": dropout,
                "weight_decay": weight_decay, "initial_scale": initial_scale,
                "warmup_steps": warmup_steps,
                "st_output_size": list(ST_OUTPUT_SIZE[distortion]
                                       or (datasets.CANVAS_SIZES[distortion],)
                                       * 2),
                "seed": seed,
                "test_examples": test_examples, "smoke": smoke}
    backup_dir = os.path.join(output_dir, f".{run_name}.backup")
    _prepare_backup(backup_dir, settings, restart)
    work_dir = os.path.join(output_dir, f".{run_name}.partial")
    shutil.rmtree(work_dir, ignore_errors=True)
    os.makedirs(work_dir)
    return _Plan(**settings, validation_examples=validation_examples,
                 mnist_dir=mnist_dir, data_dir=data_dir,
                 run_dir=os.path.join(output_dir, run_name),
                 work_dir=work_dir, backup_dir=backup_dir)


@dataclasses.dataclass(frozen=True)
class _Data:
    train_stream: object  # epoch -> the training stream from that epoch on
    validation: tf.data.Dataset
    test: tf.data.Dataset
    labels: np.ndarray  # of `test`
    snapshot_inputs: np.ndarray  # held-out inputs TensorBoard shows


def _data(plan):
    """Trained on MNIST's first 55,000 training digits; the last 5,000 are
    the held-out curve (the test set is only scored at the end)."""
    common = {"seed": plan.seed, "mnist_dir": plan.mnist_dir,
              "data_dir": plan.data_dir}

    def train_stream(epoch):
        return datasets.distorted_mnist(
            "fit", plan.distortion, repeat=True, batch_size=plan.batch_size,
            start=epoch * plan.steps_per_epoch * plan.batch_size,
            **common).prefetch(tf.data.AUTOTUNE)

    validation = datasets.distorted_mnist(
        "validation", plan.distortion, batch_size=256,
        count=plan.validation_examples, **common).cache()
    test = datasets.distorted_mnist(
        "test", plan.distortion, batch_size=256, count=plan.test_examples,
        **common).cache()
    labels = np.concatenate([batch[1].numpy() for batch in test])
    snapshot_inputs = next(iter(validation.unbatch().batch(16)))[0].numpy()
    return _Data(train_stream, validation, test, labels, snapshot_inputs)


def _train_model(plan, data, name, verbose):
    """`(model, history, seconds per epoch)` of the CNN or the ST-CNN."""
    size = datasets.CANVAS_SIZES[plan.distortion]
    if name == "cnn":
        def build():
            return models.paper_cnn((size, size, 1), dropout=plan.dropout)
    else:
        def build():
            return models.paper_st_cnn(
                (size, size, 1), output_size=tuple(plan.st_output_size),
                transform=plan.transform, dropout=plan.dropout,
                initial_scale=plan.initial_scale)
    keras.utils.set_random_seed(plan.seed)
    print(f"\n== {name} on {plan.distortion}: {plan.epochs} × "
          f"{plan.steps_per_epoch} steps of {plan.batch_size}")
    return _train(
        name, build, data.train_stream, data.validation, plan.epochs,
        plan.steps_per_epoch, plan.learning_rate, verbose, plan.backup_dir,
        snapshot_inputs=data.snapshot_inputs if name == "st_cnn" else None,
        weight_decay=plan.weight_decay, warmup_steps=plan.warmup_steps)


def _paper_error(plan, name):
    if name == "cnn":
        return PAPER_TEST_ERROR[plan.distortion]["cnn"]
    return PAPER_ST_CNN_ERROR[plan.transform][plan.distortion]


def _evaluate(plan, data, name, model, history, seconds):
    """The model's results on the test digits, and which it got wrong."""
    wrong = model.predict(data.test, verbose=0).argmax(-1) != data.labels
    results = {
        "test_error_percent": round(float(100.0 * wrong.mean()), 2),
        "test_error_ci95_percent": _interval(wrong.astype(float)),
        "parameters": int(model.count_params()),
        "seconds_per_epoch": [round(s, 1) for s in seconds],
        "train_seconds": round(sum(seconds), 1),
        "final_train_loss": round(float(history["loss"][-1]), 4),
        "paper_test_error_percent": _paper_error(plan, name),
    }
    print(f"== {name}: test error {results['test_error_percent']:.2f} % "
          f"(paper {results['paper_test_error_percent']} %)")
    return results, wrong


def _report(plan, results, wrong, histories, exported, command, seconds):
    """The run's report: settings, results, the paired comparison, the
    export's checks and the environment."""
    # Paired over the same test digits: CNN wrong minus ST-CNN wrong.
    difference = wrong["cnn"].astype(float) - wrong["st_cnn"].astype(float)
    interval = _interval(difference)
    size = datasets.CANVAS_SIZES[plan.distortion]
    return {
        "distortion": plan.distortion,
        "transform": plan.transform,
        "budget": plan.budget,
        "command": command,
        "canvas": size,
        "st_output_size": plan.st_output_size,
        "epochs": plan.epochs,
        "steps_per_epoch": plan.steps_per_epoch,
        "batch_size": plan.batch_size,
        "examples_seen_per_model": (plan.epochs * plan.steps_per_epoch
                                    * plan.batch_size),
        "learning_rate": plan.learning_rate,
        "dropout": plan.dropout,
        "weight_decay": plan.weight_decay,
        "initial_scale": plan.initial_scale,
        "warmup_steps": plan.warmup_steps,
        "seed": plan.seed,
        "test_examples": plan.test_examples,
        "validation_examples": plan.validation_examples,
        "training_digits": "MNIST train[:55000]; held out: train[55000:]",
        "smoke": plan.smoke,
        "models": results,
        "st_cnn_beats_cnn": results["st_cnn"]["test_error_percent"]
        < results["cnn"]["test_error_percent"],
        # The CNN's error minus the ST-CNN's, with its 95 % interval
        # (normal approximation, paired: both models scored the same digits).
        "error_difference_percent": round(float(100.0 * difference.mean()), 2),
        "error_difference_ci95_percent": interval,
        "st_cnn_beats_cnn_significantly": bool(interval[0] > 0),
        "optimizer": (f"AdamW (weight decay {plan.weight_decay} on the "
                      "classifier's kernels)" if plan.weight_decay else "Adam")
        + (f", learning rate warmed up linearly over {plan.warmup_steps} "
           "steps" if plan.warmup_steps else "")
        + ", cosine learning-rate decay to 0 over the run",
        "export": exported,
        "wall_seconds": round(seconds, 1),
        "peak_rss_mb": round(resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "environment": {"tensorflow": tf.__version__,
                        "keras": keras.__version__,
                        "cpus": os.cpu_count()},
        "history": {name: {key: [round(float(v), 5) for v in values]
                           for key, values in history.items()}
                    for name, history in histories.items()},
    }


def _publish(plan, report):
    """Writes the report and the TensorBoard logs of every (resumed)
    session, then moves the finished run into place."""
    write_json(os.path.join(plan.work_dir, "report.json"), report)
    for name in _MODEL_NAMES:
        logs = os.path.join(plan.backup_dir, name, "tensorboard")
        if os.path.isdir(logs):
            shutil.copytree(logs, os.path.join(plan.work_dir, "tensorboard",
                                               name))
    move_into_place(plan.work_dir, plan.run_dir)
    shutil.rmtree(plan.backup_dir, ignore_errors=True)


def add_arguments(parser):
    """The command-line flags of `run`, shared by the CLI and the example."""
    parser.add_argument("--distortion", default=DEFAULTS["distortion"],
                        choices=datasets.DISTORTIONS)
    parser.add_argument(
        "--budget", default=DEFAULTS["budget"], choices=tuple(BUDGETS),
        help="quick: 10 x 500 steps of 64 (minutes); paper: 20 x 1000 "
             "steps of 64, until the curves flatten (up to 90 min per "
             "distortion on 2 cores); long: 50 x 1000 steps of 64 (about "
             "an hour for R or RTS)")
    parser.add_argument("--transform", default=DEFAULTS["transform"],
                        choices=tuple(PAPER_ST_CNN_ERROR),
                        help="the ST-CNN's transform (Table 1's rows)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the budget's epochs")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="override the budget's steps per epoch")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="override the budget's batch size")
    parser.add_argument("--learning-rate", type=float,
                        default=DEFAULTS["learning_rate"])
    parser.add_argument("--dropout", type=float, default=DEFAULTS["dropout"],
                        help="dropout rate before both classifiers' logits")
    parser.add_argument(
        "--weight-decay", type=float, default=DEFAULTS["weight_decay"],
        help="AdamW's decoupled weight decay on the classifiers' kernels "
             "(0: Adam)")
    parser.add_argument(
        "--initial-scale", type=float, default=DEFAULTS["initial_scale"],
        help="the ST-CNN's transformer starts zoomed, showing this fraction "
             "of the canvas (1: the identity; default: the distortion's, "
             "TC 0.5, the others 1)")
    parser.add_argument(
        "--warmup-steps", type=int, default=DEFAULTS["warmup_steps"],
        help="both models' learning rate rises linearly from 0 over this "
             "many first steps (0: no warm-up; default: the distortion's, "
             "TC 500, the others 0)")
    parser.add_argument("--test-examples", type=int,
                        default=DEFAULTS["test_examples"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--output-dir", default="saved_models")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--mnist-dir", default=None,
                        help="folder of the four MNIST IDX files (default "
                             "$KERAS_STN_MNIST_DIR; unset: download)")
    parser.add_argument("--data-dir", default=None,
                        help="tensorflow-datasets data folder")
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps, to check the pipeline in seconds")
    parser.add_argument("--restart", action="store_true",
                        help="discard what an interrupted run of the same "
                             "name left and start over")
    return parser


def _check_report(report):
    """Raises `KeyError`/`ValueError` unless `report` has the table's fields."""
    for name in ("cnn", "st_cnn"):
        float(report["models"][name]["test_error_percent"])
        float(report["models"][name]["paper_test_error_percent"])
    if report["distortion"] not in datasets.DISTORTIONS:
        raise ValueError(f"unknown distortion {report['distortion']!r}")
    for key in ("canvas", "st_output_size", "epochs", "steps_per_epoch",
                "batch_size", "wall_seconds"):
        report[key]


def run_from_args(args):
    return run(distortion=args.distortion, budget=args.budget,
               transform=args.transform, epochs=args.epochs,
               steps_per_epoch=args.steps_per_epoch,
               batch_size=args.batch_size, learning_rate=args.learning_rate,
               dropout=args.dropout, weight_decay=args.weight_decay,
               initial_scale=args.initial_scale,
               warmup_steps=args.warmup_steps,
               test_examples=args.test_examples, seed=args.seed,
               output_dir=args.output_dir, run_name=args.run_name,
               mnist_dir=args.mnist_dir, data_dir=args.data_dir,
               smoke=args.smoke, restart=getattr(args, "restart", False))


def _reports(output_dir, warn=None):
    """Every complete, non-smoke main-job report under `output_dir`."""
    rows = []
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name, "report.json")
        if name.startswith(".") or not os.path.isfile(path):
            continue
        try:
            with open(path) as file:
                report = json.load(file)
            if report.get("smoke") or "distortion" not in report:
                continue
            _check_report(report)
        except (OSError, ValueError, KeyError, TypeError) as error:
            if warn is not None:
                warn(f"skipping {path}: {type(error).__name__}: {error}")
            continue
        rows.append(report)
    return rows


def results_table(output_dir="saved_models", warn=None):
    """A Markdown table of every main-job run's `report.json` under `output_dir`.

    Smoke runs are left out. Rows follow the paper's order (R, RTS, P, E, TC).
    An unreadable or incomplete report is skipped; `warn(text)`, if given,
    is told which and why.
    """
    rows = _reports(output_dir, warn)
    rows.sort(key=lambda r: (datasets.DISTORTIONS.index(r["distortion"]),
                             r["epochs"] * r["steps_per_epoch"],
                             r.get("transform", "affine")))
    lines = [
        "| distortion | ST | CNN (ours) | ST-CNN (ours) | "
        "CNN − ST-CNN, 95 % CI | CNN (paper) | ST-CNN (paper) | budget | "
        "wall time | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for report in rows:
        cnn, st_cnn = report["models"]["cnn"], report["models"]["st_cnn"]
        interval = report.get("error_difference_ci95_percent")
        rss = (f"{report['peak_rss_mb'] / 1024:.1f} GB"
               if "peak_rss_mb" in report else "—")
        difference = "—" if interval is None else (
            f"{report['error_difference_percent']:.2f} "
            f"[{interval[0]:.2f}, {interval[1]:.2f}]")
        lines.append(
            f"| {report['distortion']} | {report.get('transform', 'affine')} | "
            f"{cnn['test_error_percent']:.2f} | "
            f"**{st_cnn['test_error_percent']:.2f}** | {difference} | "
            f"{cnn['paper_test_error_percent']} | "
            f"{st_cnn['paper_test_error_percent']} | "
            f"{_budget_cell(report)} | {report['wall_seconds'] / 60:.1f} min | "
            f"{rss} |")
    return "\n".join(lines)


def _budget_cell(report):
    """The budget's name where the run kept it, else epochs × steps × batch;
    then the transformer's output where it differs from the canvas, and any
    regularisation, zoomed start or warm-up the run trained with."""
    size = (report["epochs"], report["steps_per_epoch"], report["batch_size"])
    named = BUDGETS.get(report.get("budget"), {})
    cell = (report["budget"] if size == (
        named.get("epochs"), named.get("steps_per_epoch"),
        named.get("batch_size")) else " × ".join(str(n) for n in size))
    extras = []
    output, canvas = report.get("st_output_size"), report.get("canvas")
    if output and canvas and tuple(output) != (canvas, canvas):
        extras.append("×".join(str(n) for n in output) + " output")
    extras += [f"{name.replace('_', ' ')} {report[name]}"
               for name in ("dropout", "weight_decay") if report.get(name)]
    if report.get("initial_scale", 1.0) != 1.0:
        extras.append(f"zoomed start {report['initial_scale']:.3g}")
    if report.get("warmup_steps"):
        extras.append(f"warm-up {report['warmup_steps']} steps")
    return ", ".join([cell] + extras)


def results_figure(output_dir, path, budget=("paper", "long")):
    """Draws our test errors against the paper's Table 1, per distortion.

    One group of bars per distortion: the CNN and each ST-CNN of the runs
    with `budget` (a name or several) under `output_dir`, ours (with their
    95 % intervals) beside the paper's; a budget other than the first is
    named in the legend. Writes `path` (PNG) and returns it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    budgets = (budget,) if isinstance(budget, str) else tuple(budget)
    bars = {}  # (distortion, model) -> (ours, interval, paper)
    for report in _reports(output_dir):
        run_budget = report.get("budget", "quick")
        if run_budget not in budgets:
            continue
        distortion = report["distortion"]
        transform = report.get("transform", "affine")
        suffix = "" if run_budget == budgets[0] else f", '{run_budget}'"
        for name, label in (("cnn", f"CNN{suffix}"),
                            ("st_cnn", f"ST-CNN {transform}{suffix}")):
            model = report["models"][name]
            bars[(distortion, label)] = (
                model["test_error_percent"],
                model.get("test_error_ci95_percent"),
                model["paper_test_error_percent"])
    labels = sorted({label for _, label in bars},
                    key=lambda label: (not label.startswith("CNN"), label))
    distortions = [d for d in datasets.DISTORTIONS
                   if any(key[0] == d for key in bars)]
    figure, axis = plt.subplots(figsize=(10, 4))
    # Each distortion's bars side by side, without gaps for absent models.
    present = {d: [label for label in labels if (d, label) in bars]
               for d in distortions}
    width = 0.8 / max([len(names) for names in present.values()] + [1])
    named = set()
    for index, label in enumerate(labels):
        for position, distortion in enumerate(distortions):
            if (distortion, label) not in bars:
                continue
            ours, interval, paper = bars[(distortion, label)]
            slot = present[distortion].index(label)
            x = position + (slot - (len(present[distortion]) - 1) / 2) * width
            error = None if interval is None else [[ours - interval[0]],
                                                   [interval[1] - ours]]
            axis.bar(x, ours, width * 0.9, color=f"C{index}", yerr=error,
                     capsize=2, label=None if label in named else label)
            named.add(label)
            axis.plot([x - width * 0.45, x + width * 0.45], [paper, paper],
                      color="black", linewidth=2)
    axis.plot([], [], color="black", linewidth=2, label="paper (Table 1)")
    axis.set_xticks(range(len(distortions)), distortions)
    axis.set_ylabel("test error (%)")
    axis.set_yscale("log")
    for axis_format in (axis.yaxis.set_major_formatter,
                        axis.yaxis.set_minor_formatter):
        axis_format(matplotlib.ticker.FormatStrFormatter("%g"))
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    names = " and ".join(f"'{name}'" for name in budgets)
    axis.set_title(f"Distorted MNIST, {names} budget"
                   f"{'s' if len(budgets) > 1 else ''}: ours (bars, 95 % "
                   "interval) and the paper's (black)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
