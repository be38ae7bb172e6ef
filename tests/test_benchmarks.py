"""Smoke runs of the benchmark scripts on tiny workloads (not timings)."""

import importlib.util
import json
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.conftest import mnist_dir


def _script(name):
    """`benchmarks/<name>.py` as a module (it is a script; its folder is on
    `sys.path` for its sibling imports, as when run)."""
    folder = str(REPO_ROOT / "benchmarks")
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(
        name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _speed_benchmark():
    return _script("grid_sample_speed")


class _Result:
    """What a script run in this process printed (smokes share the test
    process's TensorFlow instead of importing it again per script)."""

    def __init__(self, stdout):
        self.stdout = stdout


def _run_in_process(name, argv, capsys, monkeypatch, **environment):
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    _script(name).main(argv)
    return _Result(capsys.readouterr().out)


@pytest.mark.slow  # its conversions and LiteRT runs: tests/test_export.py
def test_tflite_latency_smoke(capsys, monkeypatch):
    result = _run_in_process(
        "tflite_latency", ["--repeats", "2", "--warmup", "1", "--batches", "1",
                           "3"], capsys, monkeypatch, KERAS_STN_MNIST_DIR="")
    rows = [line for line in result.stdout.splitlines()
            if line.startswith("| ST-CNN") or line.startswith("| CNN")]
    # 2 models × 2 weight types × 2 batch sizes.
    assert len(rows) == 8, result.stdout
    for row in rows:
        ms_per_batch = float(row.split("|")[4])
        assert ms_per_batch > 0


@pytest.mark.slow  # the conversions: tests/test_export.py (every mode)
def test_tflite_parity_smoke(capsys, monkeypatch):
    if mnist_dir() is None:
        pytest.skip("MNIST IDX folder absent; tests never download")
    result = _run_in_process("tflite_parity", ["--count", "64"], capsys,
                             monkeypatch, KERAS_STN_MNIST_DIR=mnist_dir())
    rows = [line for line in result.stdout.splitlines()
            if line.startswith("| float") or line.startswith("| int8")
            or line.startswith("| dynamic")]
    assert len(rows) == 5, result.stdout
    float32_agreement = float(rows[0].split("|")[3].strip(" %"))
    assert float32_agreement == 100.0


def test_grid_sample_speed_smoke_without_compilers(tmp_path, capsys,
                                                   monkeypatch):
    # The script's measuring and reporting on the two runtime rows (the
    # XLA and TFLite rows: the slow smoke below).
    result = _run_in_process(
        "grid_sample_speed",
        ["--tiny", "--repeats", "2", "--warmup", "1", "--allocator", "reuse",
         "--implementations", "keras_stn", "naive_tf", "--in-process",
         "--device", "cpu", "--json", str(tmp_path / "speed.json")],
        capsys, monkeypatch)
    raw = json.loads((tmp_path / "speed.json").read_text())
    for name in ("keras_stn", "naive_tf"):
        rows = raw["results"][name]
        assert len(rows) == len(raw["workloads"])
        assert all(row["fwd"] > 0 and row["fwd+bwd"] > 0 for row in rows)
        assert all(row["peak_mb"] >= 0 for row in rows)
    assert "| B=4, 12×12×1 → 12×12 | keras_stn |" in result.stdout
    assert "device cpu" in result.stdout


@pytest.mark.slow
def test_grid_sample_speed_smoke(tmp_path, capsys, monkeypatch):
    # keras_stn and the naive baseline, with and without XLA, and TFLite;
    # torch joins when installed (never in the test environment's needs).
    result = _run_in_process(
        "grid_sample_speed",
        ["--tiny", "--repeats", "2", "--warmup", "1", "--allocator", "reuse",
         "--in-process", "--json", str(tmp_path / "speed.json")],
        capsys, monkeypatch)
    raw = json.loads((tmp_path / "speed.json").read_text())
    for name in ("keras_stn", "keras_stn_xla", "keras_stn_fused",
                 "keras_stn_fused_xla", "naive_tf", "naive_tf_xla", "tflite"):
        rows = raw["results"][name]
        assert len(rows) == len(raw["workloads"])
        assert all(row["fwd"] > 0 for row in rows)
    assert all(row["fwd+bwd"] > 0 and row["fwd+dθ"] > 0
               for row in raw["results"]["keras_stn"])
    # Step memory from the separate measuring process: a training step
    # holds at least its image gradient.
    for name in ("keras_stn", "keras_stn_fused_xla", "naive_tf"):
        assert all(row["peak_mb"] >= 0 for row in raw["results"][name])
    assert "allocator: reuse" in result.stdout
    assert "| B=4, 12×12×1 → 12×12 | keras_stn |" in result.stdout


@pytest.mark.slow  # the fit: test_linear_fit_recovers_a_line
def test_grid_sample_speed_scaling_smoke(tmp_path, capsys, monkeypatch):
    result = _run_in_process(
        "grid_sample_speed",
        ["--scaling", "--tiny", "--repeats", "2", "--warmup", "1",
         "--implementations", "keras_stn_fused", "tflite", "--in-process",
         "--json", str(tmp_path / "cost.json")], capsys, monkeypatch)
    raw = json.loads((tmp_path / "cost.json").read_text())
    assert set(raw["fits"]) == {"batch", "channels"}
    for by_name in raw["fits"].values():
        assert set(by_name) == {"keras_stn_fused", "tflite"}
        for slope, fixed, r2 in by_name.values():
            assert np.isfinite(slope) and np.isfinite(fixed) and r2 <= 1.0
    assert "| batch | keras_stn_fused |" in result.stdout


@pytest.mark.parametrize("arguments, message", [
    (["--implementations", "keras"], "invalid choice: 'keras'"),
    (["--rounds", "0"], "--rounds must be at least 1, got 0"),
    (["--repeats", "0"], "--repeats must be at least 1, got 0"),
    (["--warmup", "-1"], "--warmup must be at least 0, got -1"),
    (["--device", "tpu"], "--device must be cpu, cuda or cuda:N, got 'tpu'"),
    (["--device", "cuda:x"],
     "--device must be cpu, cuda or cuda:N, got 'cuda:x'"),
])
def test_grid_sample_speed_rejects_bad_arguments(arguments, message, capsys):
    with pytest.raises(SystemExit) as raised:
        _speed_benchmark().main(arguments)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_device_names_for_each_framework():
    module = _speed_benchmark()
    assert [module.is_gpu(d) for d in ("cpu", "cuda", "cuda:1")] == [
        False, True, True]
    assert [module.tf_device_name(d) for d in ("cpu", "cuda", "cuda:1")] == [
        "/CPU:0", "/GPU:0", "/GPU:1"]


def test_backends_speed_places_work_on_the_named_device(capsys):
    module = _script("backends_speed")
    assert [module.keras_device_name(d) for d in ("cpu", "cuda", "cuda:1")] == [
        "cpu:0", "gpu:0", "gpu:1"]
    # The three TF rows on a tiny workload, placed with `tf.device`.
    rows = module.warp_tensorflow((2, 6, 6, 1, 4, 4), 1, "cpu")
    assert len(rows) == 3
    assert all(fwd > 0 and bwd > 0 for fwd, bwd in rows.values())
    for arguments, message in (
            (["--device", "tpu"], "--device must be cpu, cuda or cuda:N"),
            (["--fit-steps", "0"], "--fit-steps must be at least 1")):
        with pytest.raises(SystemExit):
            module.main(arguments)
        assert message in capsys.readouterr().err


def test_backends_speed_plain_torch_step_runs_on_the_cpu():
    pytest.importorskip("torch")
    module = _script("backends_speed")
    assert module.plain_torch_step_ms(1, "cpu") > 0


def test_linear_fit_recovers_a_line():
    module = _speed_benchmark()
    work = [1e5, 2e5, 4e5, 8e5]
    seconds = [0.002 + 5e-9 * n for n in work]
    slope, fixed, r2 = module.linear_fit(work, seconds)
    assert slope == pytest.approx(5e-9, rel=1e-9)
    assert fixed == pytest.approx(0.002, rel=1e-9)
    assert r2 == pytest.approx(1.0, abs=1e-12)
    # A quadratic cost is not a line.
    _, _, r2 = module.linear_fit(work, [(n / 1e5) ** 2 for n in work])
    assert r2 < 0.99


def test_grid_sample_speed_rounds_take_the_median():
    grid_sample_speed = _speed_benchmark()
    runs = [[{"workload": (1,), "fwd": t, "fwd+bwd": 2 * t}]
            for t in (3.0, 1.0, 2.0)]
    assert grid_sample_speed._median_rows(runs) == [
        {"workload": (1,), "fwd": 2.0, "fwd+bwd": 4.0}]


def test_step_peak_memory_sees_a_large_buffer():
    grid_sample_speed = _speed_benchmark()
    # 64 MB written inside the call, freed after it.
    peak = grid_sample_speed.step_peak_mb(
        lambda: np.ones(16 * 2**20, np.float32).sum())
    assert 60 <= peak <= 80, peak


def test_heap_counter_counts_what_a_step_allocates(tmp_path):
    # benchmarks/heap_peak.c preloaded into a fresh process: 64 MB held
    # inside the call and freed after it (NumPy's buffers come from the C
    # heap), 8 MB kept; aligned allocations and realloc counted too.
    import subprocess

    grid_sample_speed = _speed_benchmark()
    library = grid_sample_speed.heap_peak_library()
    if library is None:
        pytest.skip("no C compiler: the benchmark falls back to the RSS")
    script = tmp_path / "probe.py"
    script.write_text(
        "import ctypes, json, sys\n"
        "import numpy as np\n"
        f"sys.path.insert(0, {str(REPO_ROOT / 'benchmarks')!r})\n"
        "import grid_sample_speed as g\n"
        "kept = []\n"
        "def step():\n"
        "    np.ones(16 * 2**20, np.float32).sum()\n"
        "    kept.append(np.ones(2**20, np.float64))\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.aligned_alloc.restype = ctypes.c_void_p\n"
        "libc.realloc.restype = ctypes.c_void_p\n"
        "libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "def native():\n"
        "    block = libc.aligned_alloc(64, 2**24)\n"
        "    block = libc.realloc(block, 2**25)\n"
        "    libc.free(block)\n"
        "print(json.dumps([g.heap_peak_mb(step, repeats=1, warmup=0),\n"
        "                  g.heap_peak_mb(native, repeats=1, warmup=0)]))\n")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True,
        env={"LD_PRELOAD": library, "PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    step, native = json.loads(done.stdout.strip().splitlines()[-1])
    # 64 MB + the 8 MB kept (NumPy allocates the kept array first or last):
    # within a page or two of either order's peak.
    assert 64.0 <= step <= 72.1, step
    # realloc to 32 MB of a 16 MB block: 32 MB (moved: 48 MB at once).
    assert 32.0 <= native <= 48.1, native


def test_tensorflow_steps_are_measured_by_its_allocator():
    # TF pools its CPU memory: a step's 32 MB tensor shows in its
    # allocator's peak, not in the heap or the resident set.
    import tensorflow as tf

    grid_sample_speed = _speed_benchmark()
    data = tf.random.uniform([2**23])
    row = grid_sample_speed.measure(
        "w", {"fwd+bwd": lambda: (data * 2.0).numpy()}, True, (), 0, 1)
    assert row["memory_measure"] == "TF allocator"
    assert 32.0 <= row["peak_mb"] <= 64.1, row


def test_op_costs_smoke(capsys, monkeypatch):
    result = _run_in_process("op_costs", ["--tiny", "--repeats", "2",
                                          "--warmup", "1"], capsys, monkeypatch)
    rows = [line for line in result.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| op ")]
    assert len(rows) == 11, result.stdout
    for row in rows:
        tf_ms, litert_ms = (float(cell) for cell in row.split("|")[2:4])
        assert np.isfinite(tf_ms) and np.isfinite(litert_ms)


def test_naive_baseline_computes_the_same_sampling():
    import tensorflow as tf

    import keras_stn

    module = _speed_benchmark()
    images, theta = module.inputs_for((3, 9, 11, 2, 7, 8))
    naive = module.naive_gather_nd_sampler(tf.constant(images),
                                           tf.constant(theta), 7, 8)
    ours = keras_stn.grid_sample(images, keras_stn.affine_grid(theta, (7, 8)))
    np.testing.assert_allclose(naive.numpy(), ours.numpy(), atol=1e-5)


def test_formulations_ab_smoke(capsys, monkeypatch):
    result = _run_in_process(
        "formulations_ab", ["--tiny", "--repeats", "2", "--warmup", "1",
                            "--only", "materialise", "runtime_scatter"],
        capsys, monkeypatch)
    rows = [line for line in result.stdout.splitlines()
            if line.startswith("| materialise") or line.startswith(
                "| runtime_scatter")]
    assert len(rows) == 2, result.stdout
    for row in rows:
        a, b, ratio = (float(cell) for cell in row.split("|")[5:8])
        assert a > 0 and b > 0 and ratio > 0


def test_formulations_ab_rejects_unknown_experiment(capsys):
    with pytest.raises(SystemExit):
        _script("formulations_ab").main(["--only", "warp_speed"])
    assert "unknown experiment" in capsys.readouterr().err


@pytest.mark.skipif(mnist_dir() is None, reason="needs the MNIST IDX folder")
@pytest.mark.slow  # the pipeline it times: test_main_job_smoke_end_to_end
def test_main_job_throughput_smoke(capsys, monkeypatch):
    result = _run_in_process(
        "main_job_throughput", ["--distortions", "R", "--steps", "3",
                                "--rounds", "1", "--batch-size", "8"],
        capsys, monkeypatch, KERAS_STN_MNIST_DIR=mnist_dir())
    rows = [line.split("|") for line in result.stdout.splitlines()
            if line.startswith("| R |")]
    assert [row[2].strip() for row in rows] == ["cnn", "st_cnn"]
    for row in rows:
        rates = [float(cell) for cell in row[3:7]]
        assert all(rate > 0 for rate in rates)
        assert rates[3] == pytest.approx(rates[2] / rates[0], abs=0.01)


def test_volume_warp_worker_measures_the_tensorflow_paths():
    volume_warp = _script("volume_warp")
    volume, field = volume_warp.inputs((6, 7, 8))
    assert volume.shape == (1, 6, 7, 8, 1) and field.shape == (1, 6, 7, 8, 3)
    _, field = volume_warp.inputs((24, 24, 24))
    assert 0.5 < np.abs(field).max() < 20.0  # a few voxels
    for axis in (1, 2, 3):  # smooth: a few voxels over the whole volume
        assert np.abs(np.diff(field, axis=axis)).max() < 2.5
    for path in ("tf_default", "tf_runtime"):
        row = volume_warp.worker(path, (6, 7, 8), 1, 1, "cpu")
        assert row["fwd"] > 0 and row["fwd+bwd"] > 0 and row["peak_mb"] >= 0


def test_reports_survive_a_zero_or_missing_reference(capsys):
    # A tiny volume's torch allocator peak can read 0 MB: the ratio is
    # then "n/a", never a ZeroDivisionError.
    speed = _speed_benchmark()
    assert speed.ratio_text(3.0, 1.5) == " (2.00×)"
    assert speed.ratio_text(3.0, 0.0) == " (n/a)"
    assert speed.ratio_text(3.0, None) == " (n/a)"
    volume_warp = _script("volume_warp")

    class _Args:
        size, repeats, warmup, device = (6, 7, 8), 1, 1, "cpu"

    volume_warp.report(
        {"torch": {"fwd": 1.0, "fwd+bwd": 2.0, "peak_mb": 0.0},
         "tf_xla": {"fwd": 0.5, "fwd+bwd": 3.0, "peak_mb": 1.0}}, _Args())
    lines = capsys.readouterr().out.splitlines()
    assert "| torch | 1.0 | 2.0 | 0.0 |" in lines
    assert "| tf_xla | 0.5 (0.50×) | 3.0 (1.50×) | 1.0 (n/a) |" in lines


@pytest.mark.slow
def test_volume_warp_smoke_on_every_path(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    volume_warp = _script("volume_warp")
    volume_warp.main(["--size", "6", "7", "8", "--warmup", "1", "--repeats",
                      "1", "--json", str(tmp_path / "volume.json")])
    raw = json.loads((tmp_path / "volume.json").read_text())
    assert set(raw["results"]) == set(volume_warp.PATHS)
    assert "| tf_xla |" in capsys.readouterr().out
