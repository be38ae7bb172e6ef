"""`keras-stn` as a tool: one-line errors, nothing half-written, quiet logs,
resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_stn
from tests.conftest import REPO_ROOT
from tests.conftest import assert_close
from tests.conftest import mnist_dir

needs_mnist = pytest.mark.skipif(mnist_dir() is None,
                                 reason="MNIST IDX folder absent")


def keras_stn_command(*arguments, cwd, environment=None, timeout=600):
    """Runs the console script as a user would; returns the finished
    process (stdout, stderr as text)."""
    script = os.path.join(os.path.dirname(sys.executable), "keras-stn")
    env = dict(os.environ, **(environment or {}))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command must be quiet itself
    return subprocess.run([script, *arguments], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def run_in_process(capfd, monkeypatch):
    """`keras-stn ARGS` as `keras_stn.cli.main(ARGS)` in this process, for
    what the command's Python code decides (errors, warnings, exit codes):
    no TensorFlow start-up per call. The console script itself runs in the
    tests of what only a fresh process shows (a quiet start, a traceback
    under --debug, a killed run). Returns a `CompletedProcess`."""
    from keras_stn import cli

    def run(*arguments, cwd, environment=None):
        monkeypatch.chdir(cwd)
        for key, value in (environment or {}).items():
            monkeypatch.setenv(key, value)
        capfd.readouterr()
        try:
            code = cli.main(list(arguments))
        except SystemExit as exited:
            code = exited.code
        stdout, stderr = capfd.readouterr()
        return subprocess.CompletedProcess(arguments, code or 0, stdout,
                                           stderr)

    return run


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("keras-stn: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    loc_net = keras.Sequential([keras.layers.Flatten(),
                                keras_stn.localization_head("affine")])
    model = keras.Sequential([
        keras.Input((12, 12, 1)),
        keras_stn.SpatialTransformer(loc_net, output_size=(8, 8)),
        keras.layers.Flatten(), keras.layers.Dense(3)])
    path = folder / "model.keras"
    model.save(path)
    return path


class TestExportErrors:
    def test_missing_file(self, tmp_path, run_in_process):
        result = run_in_process("export", str(tmp_path / "none.keras"),
                                "--tflite", "out.tflite", cwd=tmp_path)
        assert_one_line_error(result, "not found", "none.keras")
        assert os.listdir(tmp_path) == []

    def test_random_bytes_named_keras(self, tmp_path, run_in_process):
        (tmp_path / "bad.keras").write_bytes(os.urandom(200))
        result = run_in_process("export", "bad.keras", "--tflite",
                                "out.tflite", "--saved-model", "sm",
                                cwd=tmp_path)
        assert_one_line_error(result, "bad.keras", "not a .keras model")
        assert os.listdir(tmp_path) == ["bad.keras"]

    def test_bad_suffix_before_anything_is_written(self, tmp_path, small_model,
                                                   run_in_process):
        result = run_in_process("export", str(small_model), "--tflite",
                                "out.bin", "--saved-model", "sm",
                                cwd=tmp_path)
        assert_one_line_error(result, ".tflite", "out.bin")
        assert os.listdir(tmp_path) == []

    def test_two_input_model(self, tmp_path, run_in_process):
        first, second = keras.Input((4,)), keras.Input((4,))
        model = keras.Model([first, second], keras.layers.Add()(
            [first, second]))
        model.save(tmp_path / "two.keras")
        result = run_in_process("export", "two.keras", "--tflite",
                                "out.tflite", "--saved-model", "sm",
                                cwd=tmp_path)
        assert_one_line_error(result, "single-input", "2 inputs")
        assert os.listdir(tmp_path) == ["two.keras"]

    def test_debug_shows_the_traceback(self, tmp_path):
        result = keras_stn_command("export", "none.keras", "--tflite",
                                   "o.tflite", "--debug", cwd=tmp_path)
        assert result.returncode != 0
        assert "Traceback" in result.stderr

    def test_quiet_success_writes_both(self, tmp_path, small_model):
        np.save(tmp_path / "calibration.npy", np.random.default_rng(0).uniform(
            size=(16, 12, 12, 1)).astype(np.float32))
        result = keras_stn_command("export", str(small_model), "--tflite",
                                   "out.tflite", "--saved-model", "sm",
                                   "--calibration-data", "calibration.npy",
                                   cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr  # no C++/LiteRT log lines
        assert "GATHER" in result.stdout
        deviation = float(result.stdout.split("max |TFLite - Keras| = ")[1]
                          .split()[0])
        assert deviation < 1e-4  # float32 TFLite: parity on the given data
        assert (tmp_path / "sm" / "saved_model.pb").is_file()
        assert sorted(os.listdir(tmp_path)) == ["calibration.npy",
                                                "out.tflite", "sm"]
        again = keras_stn_command("export", str(small_model), "--tflite",
                                  "out.tflite", cwd=tmp_path)
        assert_one_line_error(again, "exists", "--overwrite")


class TestResults:
    def test_unreadable_report_skipped_with_one_warning(self, tmp_path, run_in_process):
        good = json.loads((REPO_ROOT / "saved_models" / "rts-paper" /
                           "report.json").read_text())
        (tmp_path / "rts").mkdir()
        (tmp_path / "rts" / "report.json").write_text(json.dumps(good))
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "report.json").write_text('{"distortion": "R"')
        result = run_in_process("results", "--output-dir", str(tmp_path),
                                cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        warnings = result.stderr.strip().splitlines()
        assert len(warnings) == 1 and warnings[0].startswith(
            "keras-stn: warning: skipping"), result.stderr
        assert "broken" in warnings[0]
        assert "| RTS |" in result.stdout


class TestTrainErrors:
    def test_empty_mnist_folder(self, tmp_path, run_in_process):
        (tmp_path / "mnist").mkdir()
        result = run_in_process(
            "train", "--smoke", "--output-dir", "out", cwd=tmp_path,
            environment={"KERAS_STN_MNIST_DIR": str(tmp_path / "mnist")})
        assert_one_line_error(result, "mnist_dir", "lacks")
        assert not (tmp_path / "out").exists()

    @needs_mnist
    def test_truncated_gz(self, tmp_path, run_in_process):
        folder = tmp_path / "mnist"
        folder.mkdir()
        for name in os.listdir(mnist_dir()):
            if name.endswith(".gz"):
                with open(os.path.join(mnist_dir(), name), "rb") as file:
                    data = file.read()
                if name.startswith("t10k-labels"):
                    data = data[: len(data) // 2]
                (folder / name).write_bytes(data)
        result = run_in_process("train", "--smoke", "--mnist-dir",
                                str(folder), "--output-dir", "out",
                                cwd=tmp_path)
        assert_one_line_error(result, "t10k-labels", "gzip")
        assert not (tmp_path / "out").exists()


def test_help_has_an_example_per_command(capsys):
    # In this process: the console script itself runs in the other tests.
    from keras_stn import cli

    for command in ([], ["train"], ["results"], ["export"]):
        with pytest.raises(SystemExit) as exited:
            cli.main([*command, "--help"])
        assert exited.value.code == 0
        assert "example" in capsys.readouterr().out, command


def test_interrupted_training_resumes_after_its_last_finished_epoch(
        tmp_path, monkeypatch, capsys):
    """The main job's resume, in process (the killed-run test below does it
    with SIGKILL on the real job): a run that dies after its first epoch
    continues from that epoch's checkpoint and stream position, and ends
    where an uninterrupted run ends; once trained, the model is reloaded."""
    import tensorflow as tf

    from keras_stn.paper import experiment

    rng = np.random.default_rng(0)
    images = rng.uniform(size=(48, 8, 8, 1)).astype("float32")
    labels = rng.integers(0, 10, 48)

    def train_stream(epoch):
        # The stream from `epoch` on: 3 steps of 8 per epoch.
        return tf.data.Dataset.from_tensor_slices(
            (images, labels)).repeat().skip(epoch * 24).batch(8)

    validation = tf.data.Dataset.from_tensor_slices(
        (images[:16], labels[:16])).batch(8)

    def build():
        return keras.Sequential([keras.Input((8, 8, 1)),
                                 keras.layers.Flatten(),
                                 keras.layers.Dense(10)])

    def train(backup_dir):
        keras.utils.set_random_seed(0)
        return experiment._train("cnn", build, train_stream, validation, 2,
                                 3, 1e-2, 0, str(backup_dir))

    _, uninterrupted, _ = train(tmp_path / "once")

    original = experiment._EpochLog.on_epoch_end

    def dies_after_the_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt  # after the checkpoint and the log are written

    monkeypatch.setattr(experiment._EpochLog, "on_epoch_end",
                        dies_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "twice")
    monkeypatch.setattr(experiment._EpochLog, "on_epoch_end", original)
    capsys.readouterr()
    _, resumed, seconds = train(tmp_path / "twice")
    assert "cnn: resuming after epoch 1 of 2" in capsys.readouterr().out
    assert len(seconds) == 2
    for key in ("loss", "val_loss"):
        assert_close(resumed[key], uninterrupted[key])
    model, reloaded, _ = train(tmp_path / "twice")
    assert "trained in an earlier, interrupted run" in capsys.readouterr().out
    assert reloaded == resumed and isinstance(model, keras.Model)


def test_a_finished_run_replaces_the_old_one_whole(tmp_path):
    """What `experiment.run` publishes with: the target holds the old run
    or the new one, and nothing staged is left beside it."""
    from keras_stn._files import move_into_place

    target = tmp_path / "out" / "r"
    target.mkdir(parents=True)
    (target / "report.json").write_text("old")
    (target / "stale.png").write_text("old")
    work = tmp_path / "out" / ".r.partial"
    work.mkdir()
    (work / "report.json").write_text("new")
    move_into_place(str(work), str(target))
    assert sorted(os.listdir(target)) == ["report.json"]
    assert (target / "report.json").read_text() == "new"
    assert sorted(os.listdir(tmp_path / "out")) == ["r"]


@pytest.mark.slow
@needs_mnist
def test_killed_run_resumes_and_never_leaves_a_mix(tmp_path):
    """SIGKILL during the ST-CNN's training, then the same command again:
    it resumes after the last finished epoch, reports every epoch, and the
    run folder only ever holds a complete run."""
    # Epochs long enough (40 steps) that the kill lands inside training
    # even on a loaded machine.
    arguments = ["train", "--distortion", "R", "--epochs", "3",
                 "--steps-per-epoch", "40", "--batch-size", "8",
                 "--test-examples", "64", "--output-dir", "out",
                 "--run-name", "r"]
    script = os.path.join(os.path.dirname(sys.executable), "keras-stn")
    environment = dict(os.environ, KERAS_STN_MNIST_DIR=mnist_dir())
    process = subprocess.Popen([script, *arguments], cwd=tmp_path,
                               env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    log = tmp_path / "out" / ".r.backup" / "st_cnn" / "epochs.json"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if log.exists() and json.loads(log.read_text() or "[]"):
            break
        time.sleep(0.2)
    finished_early = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not finished_early, "the run ended before it could be killed"
    assert log.exists(), "the run ended before its first ST-CNN epoch"
    assert not (tmp_path / "out" / "r").exists()  # nothing half-written

    result = keras_stn_command(*arguments, cwd=tmp_path,
                               environment={"KERAS_STN_MNIST_DIR":
                                            mnist_dir()})
    assert result.returncode == 0, result.stderr
    assert "cnn: trained in an earlier, interrupted run" in result.stdout
    assert "st_cnn: resuming after epoch" in result.stdout
    report = json.loads((tmp_path / "out" / "r" / "report.json").read_text())
    for name in ("cnn", "st_cnn"):
        assert len(report["history"][name]["loss"]) == 3
        # The held-out curve: MNIST train[55000:], never the test set.
        assert len(report["history"][name]["val_accuracy"]) == 3
        assert len(report["models"][name]["seconds_per_epoch"]) == 3
    assert sorted(os.listdir(tmp_path / "out")) == ["r"]  # backup removed
    assert np.isfinite(report["models"]["st_cnn"]["test_error_percent"])
