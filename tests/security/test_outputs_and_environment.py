"""Outputs of one run never collide or overwrite an input, and a run writes nothing into $HOME."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import SAMPLES, assert_one_error_line, run_cli, sha256

MODEL = SAMPLES / "mlp.keras"


@pytest.mark.parametrize(
    "args",
    [
        ("check", "--junit", "{x}.xml", "--markdown", "{x}.xml"),
        ("grad", "--all", "-o", "{x}.json", "--json", "{x}.json"),
        ("grad", "--all", "--plot", "{x}.png", "--save-npz", "{x}.png"),
        ("grad", "--all", "--save-h5", "{x}.h5", "--save-npz", "{x}.h5"),
        ("flow", "-o", "{x}.png", "--plot", "{x}.png"),
        ("check", "--write-baseline", "{x}.json", "--json", "{x}.json"),
    ],
    ids=["junit+markdown", "output+json", "plot+npz", "h5+npz", "flow-output+plot", "baseline+json"],
)
def test_two_outputs_to_one_path_are_refused_before_any_work(tmp_path, args):
    x = tmp_path / "same"
    filled = [a.format(x=x) for a in args]
    # A model path that does not exist: the refusal must come first, before the model is read.
    result = run_cli(filled[0], tmp_path / "missing.keras", *filled[1:])
    assert_one_error_line(result, "is also the file of")
    assert list(tmp_path.iterdir()) == []


def test_a_link_to_another_output_is_the_same_file(tmp_path):
    (tmp_path / "real.json").write_text("{}")
    os.symlink(tmp_path / "real.json", tmp_path / "link.json")
    result = run_cli("grad", MODEL, "--all", "-o", tmp_path / "link.json", "--json", tmp_path / "real.json", "--force")
    assert_one_error_line(result, "is also the file of")
    assert (tmp_path / "real.json").read_text() == "{}"


@pytest.mark.slow
def test_a_model_output_target_is_an_input_no_output_may_overwrite(keras, tmp_path):
    target = tmp_path / "t.npy"
    np.save(target, np.zeros((4, 1), dtype=np.float32))
    before = sha256(target)
    args = ("--all", "--loss", "mse", "--model-output", f"dense_3={target}", "-o", target, "--force")
    assert_one_error_line(run_cli("grad", MODEL, *args), "a file this run reads")
    assert sha256(target) == before


@pytest.mark.slow
@pytest.mark.parametrize("in_process", ["0", "1"], ids=["child", "in-process"])
def test_a_run_writes_nothing_into_home(tmp_path, in_process):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_HOME", "GRADINSPECT_IN_PROCESS")}
    env.update(HOME=str(home), GRADINSPECT_IN_PROCESS=in_process, TMPDIR=str(tmp_path))
    cmd = [sys.executable, "-m", "gradinspect", "grad", str(MODEL), "--from", "dense_1", "--to", "dense_2"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert list(home.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("gradinspect-")]


@pytest.mark.slow
def test_a_users_keras_home_is_respected(tmp_path):
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "kh"), "GRADINSPECT_IN_PROCESS": "0"}
    cmd = [sys.executable, "-m", "gradinspect", "grad", str(MODEL), "--from", "dense_1", "--to", "dense_2"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kh" / "keras.json").is_file()
