"""Smoke runs of the benchmark scripts on tiny workloads (not timings)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.conftest import mnist_dir


def test_tflite_latency_smoke():
    result = subprocess.run(
        [sys.executable, "benchmarks/tflite_latency.py", "--repeats", "2",
         "--warmup", "1", "--batches", "1", "3"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_STN_MNIST_DIR=""))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines()
            if line.startswith("| ST-CNN") or line.startswith("| CNN")]
    # 2 models × 2 weight types × 2 batch sizes.
    assert len(rows) == 8, result.stdout
    for row in rows:
        ms_per_batch = float(row.split("|")[4])
        assert ms_per_batch > 0


def test_tflite_parity_smoke():
    if mnist_dir() is None:
        pytest.skip("MNIST IDX folder absent; tests never download")
    result = subprocess.run(
        [sys.executable, "benchmarks/tflite_parity.py", "--count", "64"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                 KERAS_STN_MNIST_DIR=mnist_dir()))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines()
            if line.startswith("| float") or line.startswith("| int8")
            or line.startswith("| dynamic")]
    assert len(rows) == 5, result.stdout
    float32_agreement = float(rows[0].split("|")[3].strip(" %"))
    assert float32_agreement == 100.0
