"""The paper's distortions: shapes, ranges, determinism, geometry, and that
their warps are keras_stn's own ops; the main job end to end (--smoke)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras_stn
from keras_stn.paper import datasets
from tests import reference
from tests.conftest import REPO_ROOT
from tests.conftest import mnist_dir

MNIST_DIR = mnist_dir()
needs_mnist = pytest.mark.skipif(
    MNIST_DIR is None,
    reason="the MNIST IDX folder (../shared/data/mnist or "
    "$KERAS_STN_MNIST_DIR) is absent; tests never download")
WARPS = ("R", "RTS", "P", "E")


def seeds(count, start=0):
    return [tf.constant([11, start + index], tf.int64) for index in range(count)]


def digit_like():
    """A smooth asymmetric blob on a 28×28 canvas, inside its central 20 px."""
    rows, cols = np.mgrid[0:28, 0:28].astype(np.float32)
    blob = np.exp(-((rows - 11.0) ** 2 / 18.0 + (cols - 15.0) ** 2 / 8.0))
    blob[(rows < 4) | (rows > 23) | (cols < 4) | (cols > 23)] = 0.0
    return blob[..., None]


def samples(distortion, count=4):
    dataset = datasets.distorted_mnist("test", distortion, seed=3,
                                       mnist_dir=MNIST_DIR)
    return list(dataset.take(count))


@needs_mnist
@pytest.mark.parametrize("distortion", datasets.DISTORTIONS)
def test_shapes_ranges_and_determinism(distortion):
    size = datasets.CANVAS_SIZES[distortion]
    first = samples(distortion)
    again = samples(distortion)
    for (image, label), (image_again, label_again) in zip(first, again):
        assert image.shape == (size, size, 1) and image.dtype == tf.float32
        assert label.dtype == tf.int64 and 0 <= int(label) <= 9
        values = image.numpy()
        assert values.min() >= 0.0 and values.max() <= 1.0 + 1e-6
        assert values.sum() > 10.0  # a digit is there
        np.testing.assert_array_equal(values, image_again.numpy())
        assert int(label) == int(label_again)
    other_seed = list(datasets.distorted_mnist(
        "test", distortion, seed=4, mnist_dir=MNIST_DIR).take(4))
    assert any(not np.array_equal(a[0].numpy(), b[0].numpy())
               for a, b in zip(first, other_seed))


@needs_mnist
def test_test_set_is_independent_of_batching_and_streams_replay():
    dataset = datasets.distorted_mnist("test", "RTS", seed=0, mnist_dir=MNIST_DIR)
    one_by_one = np.stack([image.numpy() for image, _ in dataset.take(40)])
    batched = np.concatenate([images.numpy() for images, _ in
                              dataset.take(40).batch(16)])
    np.testing.assert_array_equal(one_by_one, batched)
    # A training stream is reproducible: the same seed replays it.
    def stream():
        train = datasets.distorted_mnist("train", "R", seed=0, repeat=True,
                                         mnist_dir=MNIST_DIR)
        return [image.numpy() for image, _ in train.take(3)]

    for a, b in zip(stream(), stream()):
        np.testing.assert_array_equal(a, b)


def test_parameter_ranges():
    many = 300
    params = {d: [datasets.sample_distortion(d, s) for s in seeds(many)]
              for d in datasets.DISTORTIONS}
    angles = np.array([float(p["angle"]) for p in params["R"]])
    assert angles.min() >= -math.pi / 2 and angles.max() <= math.pi / 2
    assert angles.min() < -1.3 and angles.max() > 1.3  # spans the range
    rts = params["RTS"]
    angles = np.array([float(p["angle"]) for p in rts])
    scales = np.array([float(p["scale"]) for p in rts])
    offsets = np.array([p["offset"].numpy() for p in rts])
    assert np.abs(angles).max() <= math.pi / 4
    assert scales.min() >= 0.7 and scales.max() <= 1.2
    room = (42 - 28 * scales) / 2
    assert (np.abs(offsets) <= room[:, None] + 1e-5).all()
    corner = np.concatenate([p["corner_noise"].numpy().ravel()
                             for p in params["P"]])
    control = np.concatenate([p["control_noise"].numpy().ravel()
                              for p in params["E"]])
    # Standard deviations 5 and 1.5 px, estimated from 2,400 / 9,600 draws.
    assert abs(corner.std() - 5.0) < 0.25 and abs(control.std() - 1.5) < 0.05
    for name in ("P", "E"):
        scale = np.array([float(p["scale"]) for p in params[name]])
        assert scale.min() >= 0.75 and scale.max() <= 1.0
    tc = params["TC"]
    assert all(p["clutter_position"].shape == (6, 2) for p in tc)
    positions = np.stack([p["clutter_position"].numpy() for p in tc])
    assert positions.min() >= 0 and positions.max() <= 54
    offsets = np.stack([p["offset"].numpy() for p in tc])
    assert np.abs(offsets).max() <= 16 and (offsets == np.round(offsets)).all()


def test_rotation_geometry_is_exact():
    image = digit_like()
    quarter = {"angle": tf.constant(math.pi / 2)}
    out = datasets.apply_distortion(image, "R", quarter).numpy()
    # θ maps output (x, y) to input (−y, x): a quarter turn of the image.
    np.testing.assert_allclose(out, np.rot90(image, k=1), atol=1e-5)


def test_rts_matches_an_independent_reference():
    image = digit_like()
    angle, scale, offset = 0.3, 0.8, np.array([5.0, -3.0])
    params = {"angle": tf.constant(angle), "scale": tf.constant(scale),
              "offset": tf.constant(offset, tf.float32)}
    out = datasets.apply_distortion(image, "RTS", params).numpy()
    # Canvas pixel u (from the canvas centre) reads digit pixel
    # R(angle) (u − offset) / scale; written directly in pixel units.
    rotation = np.array([[math.cos(angle), -math.sin(angle)],
                         [math.sin(angle), math.cos(angle)]])
    grid = np.zeros((1, 42, 42, 2))
    for i in range(42):
        for j in range(42):
            canvas = np.array([j - 20.5, i - 20.5])
            digit = rotation @ (canvas - offset) / scale
            grid[0, i, j] = (digit + 13.5 + 0.5) / 14.0 - 1.0
    expected = reference.grid_sample(image[None], grid, "bilinear", "zeros",
                                     False)[0]
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("distortion", ["RTS", "E"])
def test_mass_stays_inside_the_canvas(distortion):
    image = digit_like()
    for seed in seeds(40):
        params = datasets.sample_distortion(distortion, seed)
        out = datasets.apply_distortion(image, distortion, params).numpy()
        if distortion == "RTS":
            # Area scales by scale²: nothing is cut off at the edges.
            expected = float(params["scale"]) ** 2 * image.sum()
            assert abs(out.sum() - expected) < 0.03 * expected
        else:
            assert out[0].sum() + out[-1].sum() + out[:, 0].sum() \
                + out[:, -1].sum() < 0.02 * out.sum()


def test_projective_maps_moved_corners_back_to_the_digit_corners():
    # P's corners move by N(0, 5 px), which may push strokes to the edge;
    # what must hold is that H sends each moved corner to its digit corner.
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32)
    for seed in seeds(20):
        params = datasets.sample_distortion("P", seed)
        moved = (float(params["scale"]) * corners
                 + params["corner_noise"].numpy() / 14.0)
        h = np.append(datasets._homography(tf.constant(moved),
                                           tf.constant(corners)).numpy(), 1.0)
        h = h.reshape(3, 3)
        for point, corner in zip(moved, corners):
            u, v, w = h @ np.array([point[0], point[1], 1.0])
            np.testing.assert_allclose([u / w, v / w], corner, atol=1e-4)


def test_elastic_and_projective_without_noise_are_identity():
    image = digit_like()
    flat_e = {"scale": tf.constant(1.0), "control_noise": tf.zeros([16, 2])}
    flat_p = {"scale": tf.constant(1.0), "corner_noise": tf.zeros([4, 2])}
    np.testing.assert_allclose(
        datasets.apply_distortion(image, "E", flat_e).numpy(), image, atol=1e-5)
    np.testing.assert_allclose(
        datasets.apply_distortion(image, "P", flat_p).numpy(), image, atol=1e-5)


def test_translated_cluttered_layout():
    digit = np.zeros((28, 28, 1), np.float32)
    digit[10:18, 10:18] = 0.5
    clutter = np.ones((6, 28, 28, 1), np.float32)
    params = datasets.sample_distortion("TC", tf.constant([1, 2], tf.int64))
    out = datasets.apply_distortion(digit, "TC", params, clutter).numpy()[..., 0]
    expected = np.zeros((60, 60), np.float32)
    # offset is (x, y): the digit's centre from the canvas centre, in pixels.
    col, row = (params["offset"].numpy() + 16).astype(int)
    expected[row + 10:row + 18, col + 10:col + 18] = 0.5
    for top, left in params["clutter_position"].numpy().astype(int):
        expected[top:top + 6, left:left + 6] = 1.0
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # Exactly six 6×6 patches of clutter (possibly overlapping).
    assert len(params["clutter_position"]) == 6


def test_warps_are_the_packages_own_ops(monkeypatch):
    calls = []
    original = keras_stn.sampling.grid_sample

    def spy(*args, **kwargs):
        calls.append(args[1].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(keras_stn.sampling, "grid_sample", spy)
    image = digit_like()
    for distortion in WARPS + ("TC",):
        params = datasets.sample_distortion(distortion, tf.constant([0, 1],
                                                                    tf.int64))
        clutter = np.zeros((6, 28, 28, 1), np.float32)
        datasets.apply_distortion(image, distortion, params, clutter)
    size = datasets.CANVAS_SIZES
    assert calls == [(1, size[d], size[d], 2) for d in WARPS + ("TC",)]


def test_bad_distortion():
    with pytest.raises(ValueError, match=r"distortion.*'RST'"):
        datasets.sample_distortion("RST", tf.constant([0, 0], tf.int64))
    with pytest.raises(ValueError, match="clutter"):
        datasets.apply_distortion(digit_like(), "TC", datasets.sample_distortion(
            "TC", tf.constant([0, 0], tf.int64)))


def _run_smoke(command, tmp_path):
    result = subprocess.run(
        command + ["--smoke", "--output-dir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                 KERAS_STN_MNIST_DIR=MNIST_DIR))
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@needs_mnist
def test_main_job_smoke_end_to_end(tmp_path):
    _run_smoke([sys.executable, "examples/distorted_mnist.py"], tmp_path)
    run_dir = tmp_path / "rts-smoke"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["distortion"] == "RTS" and report["smoke"] is True
    for name in ("cnn", "st_cnn"):
        model = report["models"][name]
        assert 0.0 <= model["test_error_percent"] <= 100.0
        assert model["parameters"] > 10000
        assert len(model["seconds_per_epoch"]) == report["epochs"]
        assert model["paper_test_error_percent"] in (0.8, 0.5)
    assert report["export"]["parity"]["tflite_max_abs"] <= 1e-3
    ops = report["export"]["tflite_ops"]
    assert "GATHER" in ops and not [op for op in ops if "FLEX" in op
                                    or "CUSTOM" in op]
    for name in ("model.keras", "model.tflite", "transforms.png",
                 "training_curves.png", "saved_model/saved_model.pb"):
        assert (run_dir / name).is_file(), name


@needs_mnist
def test_cli_train_smoke_cluttered(tmp_path):
    _run_smoke([sys.executable, "-m", "keras_stn.cli", "train",
                "--distortion", "TC"], tmp_path)
    report = json.loads((tmp_path / "tc-smoke" / "report.json").read_text())
    assert report["canvas"] == 60 and report["st_output_size"] == [30, 30]


def test_results_table_reads_the_committed_reports():
    from keras_stn.paper import experiment

    table = experiment.results_table(str(REPO_ROOT / "saved_models"))
    report = json.loads((REPO_ROOT / "saved_models" / "rts" / "report.json")
                        .read_text())
    row = next(line for line in table.splitlines() if line.startswith("| RTS"))
    assert f"{report['models']['cnn']['test_error_percent']:.2f}" in row
    assert f"**{report['models']['st_cnn']['test_error_percent']:.2f}**" in row
    # The default run: the ST-CNN beats the CNN on RTS.
    assert report["st_cnn_beats_cnn"] and not report["smoke"]
    assert report["wall_seconds"] <= 20 * 60
