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


def positions(count, start=0):
    return tf.range(start, start + count, dtype=tf.int64)


def digit_like():
    """A smooth asymmetric blob on a 28×28 canvas, inside its central 20 px."""
    rows, cols = np.mgrid[0:28, 0:28].astype(np.float32)
    blob = np.exp(-((rows - 11.0) ** 2 / 18.0 + (cols - 15.0) ** 2 / 8.0))
    blob[(rows < 4) | (rows > 23) | (cols < 4) | (cols > 23)] = 0.0
    return blob[..., None]


def batch_of(image, count):
    return np.repeat(image[None], count, axis=0)


def samples(distortion, count=4, seed=3):
    dataset = datasets.distorted_mnist("test", distortion, seed=seed,
                                       batch_size=count, count=count,
                                       mnist_dir=MNIST_DIR)
    return next(iter(dataset))


@needs_mnist
@pytest.mark.parametrize("distortion", datasets.DISTORTIONS)
def test_shapes_ranges_and_determinism(distortion):
    size = datasets.CANVAS_SIZES[distortion]
    images, labels = samples(distortion)
    images_again, labels_again = samples(distortion)
    assert images.shape == (4, size, size, 1) and images.dtype == tf.float32
    assert labels.dtype == tf.int64
    assert set(labels.numpy()) <= set(range(10))
    values = images.numpy()
    assert values.min() >= 0.0 and values.max() <= 1.0 + 1e-6
    assert (values.sum(axis=(1, 2, 3)) > 10.0).all()  # a digit is there
    np.testing.assert_array_equal(values, images_again.numpy())
    np.testing.assert_array_equal(labels.numpy(), labels_again.numpy())
    other_seed = samples(distortion, seed=4)[0].numpy()
    assert not np.array_equal(values, other_seed)


@needs_mnist
@pytest.mark.parametrize("distortion", datasets.DISTORTIONS)
def test_examples_do_not_depend_on_the_batch_they_fall_in(distortion):
    def stream(batch_size):
        dataset = datasets.distorted_mnist(
            "test", distortion, seed=0, batch_size=batch_size, count=40,
            mnist_dir=MNIST_DIR)
        return np.concatenate([images.numpy() for images, _ in dataset])

    by_16 = stream(16)
    np.testing.assert_array_equal(by_16, stream(16))
    # Parameters are bit-identical; the batched grid's matmul may round
    # differently (≤ a few ulps of a [0, 1] image).
    np.testing.assert_allclose(by_16, stream(7), atol=1e-4)
    params = datasets.sample_distortions(distortion, 5, positions(16))
    some = datasets.sample_distortions(distortion, 5, positions(5, start=3))
    for key, values in params.items():
        np.testing.assert_array_equal(values.numpy()[3:8], some[key].numpy())


@needs_mnist
@pytest.mark.parametrize("distortion", ["R", "TC"])
def test_a_resumed_stream_continues_the_same_examples(distortion):
    def batches(start, count):
        train = datasets.distorted_mnist(
            "fit", distortion, seed=0, repeat=True, batch_size=8,
            start=start, mnist_dir=MNIST_DIR)
        return [(images.numpy(), labels.numpy())
                for images, labels in train.take(count)]

    whole = batches(0, 4)
    resumed = batches(16, 2)
    for (images, labels), (again, labels_again) in zip(whole[2:], resumed):
        np.testing.assert_array_equal(images, again)
        np.testing.assert_array_equal(labels, labels_again)
    # Reproducible: the same seed replays the stream.
    for (images, _), (again, _) in zip(whole, batches(0, 4)):
        np.testing.assert_array_equal(images, again)


@needs_mnist
@pytest.mark.parametrize("distortion", WARPS)
def test_stream_seed_gives_the_parameters_a_test_digit_was_drawn_with(
        distortion):
    images, _ = samples(distortion, count=6, seed=2)
    digits, _ = datasets.mnist_arrays("test", mnist_dir=MNIST_DIR)
    params = datasets.sample_distortions(
        distortion, datasets.stream_seed("test", seed=2), positions(6))
    again = datasets.apply_distortions(
        tf.constant(digits[:6], tf.float32) / 255.0, distortion, params)
    # The same batch of 6 through the same ops, outside XLA: float rounding.
    np.testing.assert_allclose(again.numpy(), images.numpy(), atol=1e-5)
    wrong = datasets.sample_distortions(
        distortion, datasets.stream_seed("fit", seed=2), positions(6))
    assert not np.allclose(
        datasets.apply_distortions(tf.constant(digits[:6], tf.float32) / 255.0,
                                   distortion, wrong).numpy(), images.numpy(),
        atol=1e-2)
    with pytest.raises(ValueError, match=r"`split`.*'valid'"):
        datasets.stream_seed("valid")


def test_parameter_ranges():
    many = 300
    params = {d: datasets.sample_distortions(d, 11, positions(many))
              for d in datasets.DISTORTIONS}
    angles = params["R"]["angle"].numpy()
    assert angles.min() >= -math.pi / 2 and angles.max() <= math.pi / 2
    assert angles.min() < -1.3 and angles.max() > 1.3  # spans the range
    rts = params["RTS"]
    assert np.abs(rts["angle"].numpy()).max() <= math.pi / 4
    scales = rts["scale"].numpy()
    assert scales.min() >= 0.7 and scales.max() <= 1.2
    assert scales.min() < 0.72 and scales.max() > 1.18
    placement = rts["placement"].numpy()
    assert placement.min() >= 0.0 and placement.max() < 1.0
    corner = params["P"]["corner_noise"].numpy()
    control = params["E"]["control_noise"].numpy()
    assert corner.shape == (many, 4, 2) and control.shape == (many, 16, 2)
    # Standard deviations 5 and 1.5 px, estimated from 2,400 / 9,600 draws
    # (the estimate's own spread is ~1.5 % and ~0.7 %).
    assert abs(corner.std() - 5.0) < 0.25 and abs(control.std() - 1.5) < 0.05
    assert abs(corner.mean()) < 0.3 and abs(control.mean()) < 0.05
    for name in ("P", "E"):
        scale = params[name]["scale"].numpy()
        assert scale.min() >= 0.75 and scale.max() <= 1.0
    tc = params["TC"]
    positions_ = tc["clutter_position"].numpy()
    choice = tc["clutter_choice"].numpy()
    assert positions_.shape == (many, 6, 2) and choice.shape == (many, 6)
    assert positions_.min() == 0 and positions_.max() == 54
    assert choice.min() >= 0.0 and choice.max() < 1.0
    assert (positions_ == np.round(positions_)).all()


def test_rotation_geometry_is_exact():
    image = digit_like()
    quarter = {"angle": tf.constant([math.pi / 2])}
    out = datasets.apply_distortions(image[None], "R", quarter).numpy()[0]
    # θ maps output (x, y) to input (−y, x): a quarter turn of the image.
    np.testing.assert_allclose(out, np.rot90(image, k=1), atol=1e-5)


def reference_offset(image, angle, scale, placement, canvas):
    """Where the ink of `image`, rotated and scaled, may go; written out."""
    cos, sin = math.cos(angle), math.sin(angle)
    rows, cols = np.nonzero(image[..., 0] > 0)
    x, y = cols - 13.5, rows - 13.5
    # Digit point d lands at offset + scale · Rᵀ d.
    landed_x = scale * (cos * x + sin * y)
    landed_y = scale * (-sin * x + cos * y)
    half = (canvas - 1) / 2
    offset = []
    for values, fraction in zip((landed_x, landed_y), placement):
        first, last = -half - values.min(), half - values.max()
        offset.append(first + fraction * (last - first))
    return np.array(offset)


def test_rts_matches_an_independent_reference():
    image = digit_like()
    angle, scale, placement = 0.3, 0.8, (0.9, 0.2)
    params = {"angle": tf.constant([angle]), "scale": tf.constant([scale]),
              "placement": tf.constant([placement])}
    out = datasets.apply_distortions(image[None], "RTS", params).numpy()[0]
    offset = reference_offset(image, angle, scale, placement, 42)
    np.testing.assert_allclose(
        datasets.placement_offsets(image[None], "RTS", params).numpy()[0],
        offset, atol=1e-4)
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
    count = 40
    params = datasets.sample_distortions(distortion, 11, positions(count))
    out = datasets.apply_distortions(
        batch_of(image, count), distortion, params).numpy()[..., 0]
    if distortion == "RTS":
        # Area scales by scale²: nothing is cut off at the edges, even
        # where the placement puts the ink against them.
        expected = params["scale"].numpy() ** 2 * image.sum()
        np.testing.assert_allclose(out.sum(axis=(1, 2)), expected, rtol=0.03)
        # The placement range lets the ink (any value > 0) reach an edge.
        edges = np.concatenate([out[:, 0], out[:, -1], out[:, :, 0],
                                out[:, :, -1]], axis=1).max(axis=1)
        assert (edges > 0).sum() >= 5
    else:
        border = (out[:, 0].sum(1) + out[:, -1].sum(1) + out[:, :, 0].sum(1)
                  + out[:, :, -1].sum(1))
        assert (border < 0.02 * out.sum(axis=(1, 2))).all()


def test_projective_maps_moved_corners_back_to_the_digit_corners():
    # P's corners move by N(0, 5 px), which may push strokes to the edge;
    # what must hold is that H sends each moved corner to its digit corner.
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32)
    params = datasets.sample_distortions("P", 11, positions(20))
    moved = (params["scale"].numpy()[:, None, None] * corners
             + params["corner_noise"].numpy() / 14.0)
    homographies = datasets._homographies(
        tf.constant(moved), tf.constant(np.broadcast_to(corners, moved.shape)))
    for h, points in zip(homographies.numpy(), moved):
        h = np.append(h, 1.0).reshape(3, 3)
        for point, corner in zip(points, corners):
            u, v, w = h @ np.array([point[0], point[1], 1.0])
            np.testing.assert_allclose([u / w, v / w], corner, atol=1e-4)


def test_elastic_and_projective_without_noise_are_identity():
    image = digit_like()[None]
    flat_e = {"scale": tf.constant([1.0]), "control_noise": tf.zeros([1, 16, 2])}
    flat_p = {"scale": tf.constant([1.0]), "corner_noise": tf.zeros([1, 4, 2])}
    np.testing.assert_allclose(
        datasets.apply_distortions(image, "E", flat_e).numpy(), image, atol=1e-5)
    np.testing.assert_allclose(
        datasets.apply_distortions(image, "P", flat_p).numpy(), image, atol=1e-5)


def test_translated_cluttered_layout():
    digit = np.zeros((28, 28, 1), np.float32)
    digit[10:18, 10:18] = 0.5
    count = 8
    clutter = np.ones((count, 6, 28, 28, 1), np.float32)
    params = datasets.sample_distortions("TC", 1, positions(count))
    out = datasets.apply_distortions(batch_of(digit, count), "TC", params,
                                     clutter).numpy()[..., 0]
    for index in range(count):
        expected = np.zeros((60, 60), np.float32)
        # Digit pixel j lands on canvas pixel j + 16 + offset (whole pixels);
        # its ink (pixels 10..17) fits for offsets in [-26, 26].
        col, row = (-26 + np.minimum(np.floor(
            params["placement"].numpy()[index] * 53), 52)).astype(int)
        expected[row + 26:row + 34, col + 26:col + 34] = 0.5
        for top, left in params["clutter_position"].numpy()[index].astype(int):
            expected[top:top + 6, left:left + 6] = 1.0
        np.testing.assert_array_equal(out[index], expected)


def test_clutter_patches_come_from_their_source_position():
    digits = np.arange(6 * 28 * 28, dtype=np.float32).reshape(1, 6, 28, 28, 1)
    params = {"clutter_source": tf.constant([[[0, 0], [3, 5], [22, 22],
                                              [1, 2], [7, 0], [0, 9]]], tf.float32),
              "clutter_position": tf.constant([[[0, 0], [54, 54], [10, 40],
                                                [30, 2], [5, 20], [40, 40]]],
                                              tf.float32)}
    layer = datasets._clutter(tf.constant(digits), params["clutter_source"],
                              params["clutter_position"]).numpy()[0, ..., 0]
    for index in range(6):
        (sr, sc), (top, left) = (params["clutter_source"].numpy()[0, index],
                                 params["clutter_position"].numpy()[0, index])
        sr, sc, top, left = int(sr), int(sc), int(top), int(left)
        np.testing.assert_array_equal(
            layer[top:top + 6, left:left + 6],
            digits[0, index, sr:sr + 6, sc:sc + 6, 0])
    assert (layer > 0).sum() == 6 * 36 - 1  # digit 0's pixel (0, 0) is 0


def reference_clutter_sources(digits, choice):
    """Corners whose 6×6 patch holds ≥ half the richest patch's ink, in
    row-major order; the floor(choice × count)-th; written out."""
    corners = np.zeros(choice.shape + (2,), np.int64)
    for item, patch in np.ndindex(*choice.shape):
        image = digits[item, patch, ..., 0].astype(np.float64)
        ink = np.array([[image[r:r + 6, c:c + 6].sum() for c in range(23)]
                        for r in range(23)])
        allowed = np.argwhere(ink >= 0.5 * ink.max())
        corners[item, patch] = allowed[
            min(int(choice[item, patch] * len(allowed)), len(allowed) - 1)]
    return corners


@needs_mnist
def test_clutter_is_cut_where_its_digit_has_ink():
    digits, _ = datasets.mnist_arrays("test", mnist_dir=MNIST_DIR)
    clutter = (digits[:60].reshape(10, 6, 28, 28, 1) / 255.0).astype(np.float32)
    choice = np.random.default_rng(0).random((10, 6)).astype(np.float32)
    choice[0] = [0.0, 0.999999, 0.5, 0.25, 0.75, 0.1]  # the ends included
    corners = datasets.clutter_sources(clutter, choice).numpy()
    np.testing.assert_array_equal(corners, reference_clutter_sources(
        clutter, choice))
    for item, patch in np.ndindex(10, 6):
        row, col = corners[item, patch]
        cut = clutter[item, patch, row:row + 6, col:col + 6, 0]
        # A stroke crosses every patch: it is never a blank margin.
        assert cut.sum() >= 3.0, (item, patch, cut.sum())
    # A blank digit keeps every corner: choice spans all 23 × 23.
    blank = np.zeros((1, 6, 28, 28, 1), np.float32)
    ends = datasets.clutter_sources(
        blank, np.array([[0.0, 0.999999, 0.5, 0.0, 0.0, 0.0]], np.float32))
    assert ends.numpy()[0, :3].tolist() == [[0, 0], [22, 22], [11, 11]]


@needs_mnist
def test_tc_clutter_carries_ink_in_the_stream():
    # On real test images every clutter patch adds ink to the canvas: the
    # canvas outside the digit holds six patches' worth of strokes.
    images, _ = samples("TC", count=32)
    params = datasets.sample_distortions(
        "TC", datasets.stream_seed("test", 3), positions(32))
    ink = images.numpy()[..., 0]
    for index in range(32):
        for top, left in params["clutter_position"].numpy()[index].astype(int):
            assert ink[index, top:top + 6, left:left + 6].sum() >= 3.0


def test_warps_are_one_grid_sample_per_batch(monkeypatch):
    calls = []
    original = keras_stn.sampling.grid_sample

    def spy(*args, **kwargs):
        calls.append(tuple(args[1].shape))
        return original(*args, **kwargs)

    monkeypatch.setattr(keras_stn.sampling, "grid_sample", spy)
    images = batch_of(digit_like(), 5)
    for distortion in WARPS + ("TC",):
        params = datasets.sample_distortions(distortion, 0, positions(5))
        clutter = np.zeros((5, 6, 28, 28, 1), np.float32)
        datasets.apply_distortions(images, distortion, params, clutter)
    size = datasets.CANVAS_SIZES
    assert calls == [(5, size[d], size[d], 2) for d in WARPS + ("TC",)]


def test_bad_distortion():
    with pytest.raises(ValueError, match=r"distortion.*'RST'"):
        datasets.sample_distortions("RST", 0, positions(2))
    with pytest.raises(ValueError, match="clutter"):
        datasets.apply_distortions(
            digit_like()[None], "TC",
            datasets.sample_distortions("TC", 0, positions(1)))


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
    # TC: the largest canvas, clutter, and the transformer's downsampling.
    # (The killed-run test runs `keras-stn train` itself, on R.)
    _run_smoke([sys.executable, "examples/distorted_mnist.py",
                "--distortion", "TC"], tmp_path)
    run_dir = tmp_path / "tc-smoke"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["distortion"] == "TC" and report["smoke"] is True
    assert report["canvas"] == 60 and report["st_output_size"] == [30, 30]
    assert report["budget"] == "quick" and report["transform"] == "affine"
    # TC's transformer starts zoomed: its 30-pixel output shows the central
    # 30 pixels of the 60-pixel canvas at full resolution.
    assert report["initial_scale"] == 0.5
    # ... and its learning rate warms up: TC's 500 steps, cut to fit the
    # smoke run's 3.
    assert report["warmup_steps"] == 2
    assert report["command"].startswith("python examples/distorted_mnist.py")
    assert report["peak_rss_mb"] > 100
    low, high = report["error_difference_ci95_percent"]
    assert low <= report["error_difference_percent"] <= high
    assert report["st_cnn_beats_cnn_significantly"] == (low > 0)
    for name in ("cnn", "st_cnn"):
        model = report["models"][name]
        assert 0.0 <= model["test_error_percent"] <= 100.0
        assert model["parameters"] > 10000
        assert len(model["seconds_per_epoch"]) == report["epochs"]
        assert model["paper_test_error_percent"] in (3.5, 1.7)
        low, high = model["test_error_ci95_percent"]
        assert low <= model["test_error_percent"] <= high
    assert report["export"]["parity"]["tflite_max_abs"] <= 1e-3
    ops = report["export"]["tflite_ops"]
    assert "GATHER" in ops and not [op for op in ops if "FLEX" in op
                                    or "CUSTOM" in op]
    for name in ("model.keras", "model.tflite", "transforms.png",
                 "training_curves.png", "saved_model/saved_model.pb"):
        assert (run_dir / name).is_file(), name


def test_results_table_reads_the_committed_reports():
    from keras_stn.paper import experiment

    table = experiment.results_table(str(REPO_ROOT / "saved_models"))
    report = json.loads((REPO_ROOT / "saved_models" / "rts-paper" /
                         "report.json").read_text())
    row = next(line for line in table.splitlines() if line.startswith("| RTS"))
    assert f"{report['models']['cnn']['test_error_percent']:.2f}" in row
    assert f"**{report['models']['st_cnn']['test_error_percent']:.2f}**" in row
    low, high = report["error_difference_ci95_percent"]
    assert f"[{low:.2f}, {high:.2f}]" in row
    # The paper-scale run: the ST-CNN beats the CNN by more than the 95 %
    # interval of the difference, inside 90 minutes.
    assert report["st_cnn_beats_cnn_significantly"] and low > 0
    assert report["budget"] == "paper" and not report["smoke"]


def test_results_table_names_the_budget_and_the_regularisation():
    from keras_stn.paper import experiment

    report = {"budget": "long", "epochs": 50, "steps_per_epoch": 1000,
              "batch_size": 64, "dropout": 0.0, "weight_decay": 0.0}
    assert experiment._budget_cell(report) == "long"
    # Overridden sizes are spelled out; older reports lack the two keys.
    older = {"budget": "paper", "epochs": 30, "steps_per_epoch": 1000,
             "batch_size": 64}
    assert experiment._budget_cell(older) == "30 × 1000 × 64"
    regularised = dict(report, dropout=0.3, weight_decay=0.02)
    assert experiment._budget_cell(regularised) == (
        "long, dropout 0.3, weight decay 0.02")
    zoomed = dict(report, initial_scale=0.5)
    assert experiment._budget_cell(zoomed) == "long, zoomed start 0.5"
    assert experiment._budget_cell(dict(report, initial_scale=1.0)) == "long"
    assert experiment._budget_cell(dict(report, initial_scale=2 / 3)) == (
        "long, zoomed start 0.667")
    # A transformer output smaller than the canvas is part of the recipe.
    downsampled = dict(report, canvas=60, st_output_size=[40, 40],
                       initial_scale=2 / 3)
    assert experiment._budget_cell(downsampled) == (
        "long, 40×40 output, zoomed start 0.667")
    assert experiment._budget_cell(
        dict(report, canvas=42, st_output_size=[42, 42])) == "long"
    assert experiment._budget_cell(dict(report, warmup_steps=500)) == (
        "long, warm-up 500 steps")
    assert experiment._budget_cell(dict(report, warmup_steps=0)) == "long"


def test_committed_runs_keep_the_papers_budget_promises():
    """Every committed paper-scale run finished inside 90 minutes on this
    2-core machine and says how it was run."""
    from keras_stn.paper import experiment

    reports = [json.loads(path.read_text())
               for path in (REPO_ROOT / "saved_models").glob("*/report.json")]
    runs = [r for r in reports if r.get("budget") in ("paper", "long")]
    assert {r["distortion"] for r in runs} == set(datasets.DISTORTIONS)
    for report in runs:
        name = experiment.default_run_name(
            report["distortion"], report["transform"], report["budget"])
        assert report["wall_seconds"] <= 90 * 60, name
        assert report["command"].startswith("python -m keras_stn.cli train")
        assert f"--budget {report['budget']}" in report["command"], name
        assert report["peak_rss_mb"] > 100, name
        assert report["test_examples"] == 10000, name
        budget = experiment.BUDGETS[report["budget"]]
        assert report["epochs"] == budget["epochs"], name
        assert report["steps_per_epoch"] == budget["steps_per_epoch"], name
        for key, model in report["models"].items():
            assert len(model["seconds_per_epoch"]) == report["epochs"]
            # Trained until the held-out curve flattened: the last five
            # epochs' held-out errors lie within half a percentage point.
            errors = [100 * (1 - accuracy) for accuracy in
                      report["history"][key]["val_accuracy"][-5:]]
            assert len(errors) == 5 and max(errors) - min(errors) <= 0.5, (
                name, key, errors)


@needs_mnist
def test_mnist_arrays_hold_load_mnists_digits_in_order():
    images, labels = datasets.mnist_arrays("validation", mnist_dir=MNIST_DIR)
    assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8
    streamed = next(iter(datasets.load_mnist(
        "validation", mnist_dir=MNIST_DIR).batch(50)))
    np.testing.assert_array_equal(
        images[:50].astype(np.float32) / np.float32(255.0), streamed[0].numpy())
    np.testing.assert_array_equal(labels[:50], streamed[1].numpy())
    assert not images.flags.writeable  # shared by every pipeline


def test_budgets_and_table_1_transforms_are_checked_before_training(tmp_path):
    from keras_stn.paper import experiment

    assert experiment.BUDGETS["paper"]["epochs"] * experiment.BUDGETS[
        "paper"]["steps_per_epoch"] > 2 * experiment.BUDGETS["quick"][
        "epochs"] * experiment.BUDGETS["quick"]["steps_per_epoch"]
    with pytest.raises(ValueError, match=r"`budget`.*'quick', 'paper'.*'huge'"):
        experiment.run(budget="huge", output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"`transform`.*\['affine'\].*'tps'"):
        experiment.run(distortion="TC", transform="tps",
                       output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"`dropout`.*Received: dropout=1.5"):
        experiment.run(dropout=1.5, output_dir=str(tmp_path))
    with pytest.raises(ValueError,
                       match=r"`weight_decay`.*Received: weight_decay=-1"):
        experiment.run(weight_decay=-1, output_dir=str(tmp_path))
    with pytest.raises(ValueError,
                       match=r"`initial_scale`.*Received: initial_scale=0"):
        experiment.run(initial_scale=0, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"`warmup_steps`.*\[0, 5000\).*"
                                         r"Received: warmup_steps=5000"):
        experiment.run(warmup_steps=5000, output_dir=str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_run_names_say_transform_budget_and_smoke():
    from keras_stn.paper import experiment

    assert experiment.default_run_name("RTS") == "rts"
    assert experiment.default_run_name("P", "projective", "paper") == (
        "p-projective-paper")
    assert experiment.default_run_name("RTS", "affine", "long") == "rts-long"
    assert experiment.default_run_name("TC", smoke=True) == "tc-smoke"
    # Every committed run sits in the folder its settings name.
    for path in (REPO_ROOT / "saved_models").glob("*/report.json"):
        report = json.loads(path.read_text())
        if "distortion" in report:
            assert path.parent.name == experiment.default_run_name(
                report["distortion"], report["transform"], report["budget"],
                report["smoke"])


def test_results_figure_draws_the_committed_runs(tmp_path):
    from keras_stn.paper import experiment

    budgets = {json.loads(path.read_text()).get("budget", "quick")
               for path in (REPO_ROOT / "saved_models").glob("*/report.json")
               if "distortion" in json.loads(path.read_text())}
    for budget in budgets:
        path = experiment.results_figure(str(REPO_ROOT / "saved_models"),
                                         str(tmp_path / f"{budget}.png"),
                                         budget=budget)
        assert os.path.getsize(path) > 10000


def test_backup_settings_resume_older_runs_and_refuse_changed_ones(tmp_path):
    from keras_stn.paper import experiment

    backup = tmp_path / ".rts.backup"
    settings = {"distortion": "RTS", "budget": "quick", "dropout": 0.0,
                "weight_decay": 0.0, "initial_scale": 1.0}
    backup.mkdir()
    # A run started before dropout and weight decay were settings.
    (backup / "settings.json").write_text(json.dumps(
        {"distortion": "RTS", "budget": "quick"}))
    experiment._prepare_backup(str(backup), settings, restart=False)
    # ... and one started before the initial scale was: the identity.
    with pytest.raises(ValueError, match=r"other settings \(initial_scale\)"):
        experiment._prepare_backup(str(backup),
                                   dict(settings, initial_scale=0.5),
                                   restart=False)
    # ... and one started before the warm-up was: none.
    experiment._prepare_backup(str(backup), dict(settings, warmup_steps=0),
                               restart=False)
    with pytest.raises(ValueError, match=r"other settings \(warmup_steps\)"):
        experiment._prepare_backup(str(backup),
                                   dict(settings, warmup_steps=500),
                                   restart=False)
    with pytest.raises(ValueError, match=r"other settings \(dropout\)"):
        experiment._prepare_backup(str(backup), dict(settings, dropout=0.5),
                                   restart=False)
    # --restart discards it and starts over with the new settings.
    experiment._prepare_backup(str(backup), dict(settings, dropout=0.5),
                               restart=True)
    assert json.loads((backup / "settings.json").read_text())["dropout"] == 0.5


def test_backup_of_another_transformer_output_is_refused(tmp_path):
    # Backups from before the output size was recorded trained RTS at 28²,
    # TC at 30² and the others at their canvas: they resume with that
    # recipe, and are refused for another one (its classifier's weights
    # would not fit).
    from keras_stn.paper import experiment

    for distortion, then, other in (("RTS", [28, 28], [42, 42]),
                                    ("TC", [30, 30], [40, 40]),
                                    ("R", [28, 28], [20, 20])):
        backup = tmp_path / f".{distortion}.backup"
        backup.mkdir()
        (backup / "settings.json").write_text(json.dumps(
            {"distortion": distortion, "budget": "quick"}))
        settings = {"distortion": distortion, "budget": "quick"}
        experiment._prepare_backup(
            str(backup), dict(settings, st_output_size=then), restart=False)
        with pytest.raises(ValueError,
                           match=r"other settings \(st_output_size\)"):
            experiment._prepare_backup(
                str(backup), dict(settings, st_output_size=other),
                restart=False)


@needs_mnist
def test_plan_records_the_distortions_transformer_output(tmp_path):
    from keras_stn.paper import experiment

    plan = experiment._plan("TC", "quick", None, None, None, "affine", 1e-3,
                            0.0, 0.0, None, None, 100, 0, str(tmp_path / "out"),
                            None, MNIST_DIR, None, smoke=False, restart=True)
    assert plan.st_output_size == [30, 30] and plan.initial_scale == 0.5
    # TC's learning rate warms up (one start in three stalled without).
    assert plan.warmup_steps == 500
