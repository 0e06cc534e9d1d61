"""The installed `gradinspect` command and `python -m gradinspect`, run as real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, SAMPLES


def _run(*args, cwd=REPO):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.skipif(shutil.which("gradinspect") is None, reason="gradinspect is not installed on PATH")
def test_installed_command_quickstart():
    result = _run("gradinspect", "layers", "sample_models/mlp.keras")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "dense_1" in result.stdout and "Total params: 20" in result.stdout


def test_python_dash_m_json():
    result = _run(sys.executable, "-m", "gradinspect", "layers", SAMPLES / "cnn.keras", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [r["name"] for r in data["layers"]][:3] == ["conv1", "bn1", "relu1"]


@pytest.mark.slow
def test_savedmodel_loads_quietly():
    """TensorFlow's start-up chatter (absl banner, CUDA probes) stays off stderr."""
    result = _run(sys.executable, "-m", "gradinspect", "layers", SAMPLES / "mlp_savedmodel", "-f", "csv")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[2].startswith("dense_1,Dense,")


def test_error_is_one_line_from_a_real_process(tmp_path):
    result = _run(sys.executable, "-m", "gradinspect", "layers", tmp_path / "missing.h5")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")


def test_debug_shows_the_traceback(tmp_path):
    result = _run(sys.executable, "-m", "gradinspect", "--debug", "layers", tmp_path / "missing.h5")
    assert result.returncode == 2
    assert "Traceback" in result.stderr and result.stderr.rstrip().splitlines()[-1].startswith("Error: ")


def test_version():
    from gradinspect import __version__

    result = _run(sys.executable, "-m", "gradinspect", "--version")
    assert result.returncode == 0 and __version__ in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gradinspect") is None, reason="gradinspect is not installed on PATH")
def test_installed_command_grad_quickstart():
    result = _run("gradinspect", "grad", "sample_models/mlp.keras", "--from", "dense_1", "--to", "dense_2")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # TensorFlow's start-up chatter is kept off stderr
    assert "Output gradients" in result.stdout and "Weight gradients" in result.stdout
