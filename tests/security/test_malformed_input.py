"""Malformed input is exit 2 with one line naming the file and the problem, never exit 70."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import SAMPLES, assert_one_error_line, run_cli

MODEL = SAMPLES / "mlp.keras"


def _h5_with(tmp_path, attr, value):
    import h5py

    dst = tmp_path / "m.h5"
    shutil.copyfile(SAMPLES / "mlp.h5", dst)
    with h5py.File(dst, "r+") as h5:
        h5.attrs[attr] = value
    return dst


@pytest.mark.parametrize(
    "value,needle",
    [
        ("3", "no 'class_name'"),
        ("[1, 2]", "no 'class_name'"),
        ("", "not valid JSON"),
        (json.dumps({"class_name": {"a": 1}, "config": {}}), "'class_name' must be a string"),
        (json.dumps({"class_name": "Sequential", "config": 7}), "'config' must be an object or a list"),
    ],
    ids=["number", "array", "empty", "dict-class-name", "numeric-config"],
)
def test_a_malformed_model_config_is_bad_input(tmp_path, value, needle):
    assert_one_error_line(run_cli("layers", _h5_with(tmp_path, "model_config", value)), "m.h5", needle)


@pytest.mark.slow
def test_a_numeric_training_config_is_ignored_like_any_compile_setting(tmp_path):
    path = _h5_with(tmp_path, "training_config", "3")
    result = run_cli("grad", path, "--all", "--random", "2")
    assert result.exit_code == 0, result.stderr
    # A run that needs it says it is not there.
    assert_one_error_line(run_cli("grad", path, "--all", "--loss", "compiled"), "without a compiled loss")


@pytest.mark.slow
def test_a_string_typed_hdf5_input_is_bad_input(tmp_path):
    import h5py

    with h5py.File(tmp_path / "s.h5", "w") as h5:
        h5["x"] = np.array([b"a", b"b"])
    assert_one_error_line(run_cli("grad", MODEL, "--all", "--input", tmp_path / "s.h5"), "holds strings")


@pytest.mark.slow
def test_a_zero_dimensional_npy_input_is_bad_input(tmp_path):
    np.save(tmp_path / "x.npy", np.array(1.0))
    line = assert_one_error_line(run_cli("grad", MODEL, "--all", "--input", tmp_path / "x.npy"), "--input")
    assert "0-d array" in line


@pytest.mark.parametrize(
    "expression,needle",
    [("(" * 300 + "out" + ")" * 300, "syntax error"), ("+".join(["sum(out)"] * 300), "more than 64 levels deep"),
     ("-" * 3000 + "sum(out)", "more than 64 levels deep"), ("sum(out)+" * 1000 + "sum(out)", "characters; at most")],
    ids=["nested", "chained", "unary-chain", "too-long"],
)  # fmt: skip
def test_deep_stage2_expressions_are_bad_input(expression, needle):
    result = run_cli("grad", MODEL, "--from", "dense_1", "--to", "dense_2", "--stage2", expression)
    assert_one_error_line(result, "--stage2", needle)


@pytest.mark.parametrize(
    "content,needle",
    [("max_norm = 1" + "0" * 5000 + "\n", "cannot read it as TOML"), ("x = " + "[" * 5000 + "]" * 5000, "nested")],
    ids=["huge-integer", "deep-arrays"],
)
def test_hostile_rules_files_are_bad_input(tmp_path, content, needle):
    (tmp_path / "r.toml").write_text(content)
    assert_one_error_line(run_cli("check", MODEL, "--rules", tmp_path / "r.toml"), "--rules", needle)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_rules_that_name_a_fifo_or_a_device_are_refused_without_reading(tmp_path, kind):
    path = tmp_path / "r.toml"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = "/dev/zero"
    assert_one_error_line(run_cli("check", MODEL, "--rules", path), "--rules", "give a regular file")


@pytest.fixture(scope="module")
def odd_names(keras, tmp_path_factory):
    """A model whose layer names hold a colon and matplotlib mathtext."""
    d = tmp_path_factory.mktemp("names")
    L = keras.layers
    x = keras.Input((2,), name="x")
    h = L.Dense(3, name="a:b")(x)
    h = L.Dense(2, name="$\\bad{$")(h)
    keras.Model(x, L.Dense(1, name="out")(h)).save(d / "odd.keras")
    return d / "odd.keras"


@pytest.mark.slow
def test_a_layer_name_with_a_colon_keeps_its_variables_apart(odd_names, tmp_path):
    result = run_cli(
        "grad", odd_names, "--from", "a:b", "--to", "out", "--random", "3", "--save-npz", tmp_path / "g.npz"
    )
    assert result.exit_code == 0, result.stderr
    saved = np.load(tmp_path / "g.npz")
    assert saved["weight/a:b/kernel"].shape == (2, 3) and saved["weight/a:b/bias"].shape == (3,)


@pytest.mark.slow
def test_mathtext_in_a_layer_name_is_drawn_as_text(odd_names, tmp_path):
    result = run_cli("flow", odd_names, "--random", "3", "--plot", tmp_path / "f.svg")
    assert result.exit_code == 0, result.stderr
    assert "$\\bad{$" in (tmp_path / "f.svg").read_text()
