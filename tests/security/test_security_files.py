"""User files are never written, outputs are all or nothing, names from a file are inert data, one line per error."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import SAMPLES, assert_one_error_line, edited_keras_copy, run_cli, sha256


@pytest.fixture
def workdir(tmp_path):
    shutil.copyfile(SAMPLES / "mlp.keras", tmp_path / "m.keras")
    shutil.copytree(SAMPLES / "mlp_savedmodel", tmp_path / "sm")
    np.save(tmp_path / "x.npy", np.ones((2, 2), dtype=np.float32))
    return tmp_path


@pytest.mark.parametrize(
    "args,victim",
    [
        (["layers", "{m}", "-o", "{m}"], "m.keras"),
        (["grad", "{m}", "--all", "--input", "{x}", "-o", "{x}"], "x.npy"),
        (["grad", "{m}", "--all", "--input", "{x}", "--save-npz", "{x}", "--force"], "x.npy"),
        (["check", "{m}", "--write-baseline", "{m}"], "m.keras"),
        (["layers", "{sm}", "-o", "{sm}/saved_model.pb"], "sm"),
        (["grad", "{sm}", "--all", "-o", "{sm}/variables/variables.index"], "sm"),
    ],
)
def test_outputs_never_overwrite_an_input(workdir, args, victim):
    before = sha256(workdir / victim)
    names = {"m": workdir / "m.keras", "x": workdir / "x.npy", "sm": workdir / "sm"}
    result = run_cli(*(a.format(**names) for a in args))
    assert_one_error_line(result, "a file this run reads")
    assert sha256(workdir / victim) == before


def test_output_through_a_link_to_an_input_is_refused(workdir):
    (workdir / "link.txt").symlink_to(workdir / "m.keras")
    before = sha256(workdir / "m.keras")
    assert_one_error_line(run_cli("layers", workdir / "m.keras", "-o", workdir / "link.txt"), "a file this run reads")
    assert sha256(workdir / "m.keras") == before


@pytest.mark.parametrize(
    "args",
    [
        ["grad", "{m}", "--all", "--save-npz", "{d}/p.npz", "-o", "{d}/missing/dir/r.txt"],
        ["check", "{m}", "--write-baseline", "{d}/b.json", "-o", "{d}/missing/x.xml"],
    ],
)
def test_every_destination_is_checked_before_any_work(workdir, args):
    result = run_cli(*(a.format(m=workdir / "m.keras", d=workdir) for a in args))
    assert_one_error_line(result, "does not exist")
    assert not (workdir / "p.npz").exists() and not (workdir / "b.json").exists()
    assert [p.name for p in workdir.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_grad_writes_npz_and_output_together(workdir):
    result = run_cli("grad", workdir / "m.keras", "--all", "--save-npz", workdir / "g.npz", "-o", workdir / "r.json")
    assert result.exit_code == 0, result.stderr
    assert (workdir / "g.npz").is_file() and (workdir / "r.json").is_file()


def test_existing_file_keeps_its_mode(workdir):
    out = workdir / "private.txt"
    out.write_text("old")
    os.chmod(out, 0o600)
    assert run_cli("layers", workdir / "m.keras", "-o", out, "--force").exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "dense_1" in out.read_text()


def test_new_file_gets_the_umask_mode(workdir):
    old = os.umask(0o027)
    try:
        assert run_cli("layers", workdir / "m.keras", "-o", workdir / "new.txt").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((workdir / "new.txt").stat().st_mode) == 0o640


@pytest.mark.slow
@pytest.mark.parametrize("option", ["-o", "--save-npz"])
def test_a_symlinked_output_is_followed_and_the_link_kept(workdir, option):
    target = workdir / "real.out"
    target.write_text("old")
    link = workdir / "link.out"
    link.symlink_to(target)
    result = run_cli("grad", workdir / "m.keras", "--all", option, link, "--force")
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() != b"old"


# --- names are data -------------------------------------------------------------------------

EVIL = "\x1b]0;pwned\x07\x1b[32mOK\x1b[0m=cmd|<img src=x>\n[red]x"


def _named_model(keras, path, name):
    """A real Keras model whose hidden layer is called ``name``."""
    x = keras.Input((2,), name="x")
    keras.Model(x, keras.layers.Dense(1, name="out")(keras.layers.Dense(3, name=name)(x))).save(path)
    return path


@pytest.fixture
def evil_model(keras, tmp_path):
    return _named_model(keras, tmp_path / "evil.keras", EVIL)


@pytest.mark.parametrize("fmt", ["table", "csv", "markdown", "json"])
def test_hostile_layer_names_are_inert_in_every_format(evil_model, fmt):
    result = run_cli("layers", evil_model, "--format", fmt)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "\x1b" not in out and "\x07" not in out
    if fmt == "table":
        assert "\\x1b]0;pwned\\x07" in out and "[red]x" in out
    if fmt == "csv":
        assert "\n=" not in out and ",=" not in out
    if fmt == "markdown":
        assert re.search(r"(?<!\\)<img", out) is None and "\\<img src=x\\>" in out
    if fmt == "json":
        assert "\\u001b]0;pwned\\u0007" in out


def test_grad_tables_keep_hostile_names_inert(evil_model):
    result = run_cli("grad", evil_model, "--all")
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stdout and "[red]x" in result.stdout


def test_error_lines_escape_names(tmp_path):
    path = edited_keras_copy(
        tmp_path / "lam.keras",
        lambda c: (
            c["config"]["layers"][1].update(class_name="Lambda") or c["config"]["layers"][1]["config"].update(name=EVIL)
        ),
    )
    line = assert_one_error_line(run_cli("grad", path, "--all"), "refused to load")
    assert "\x1b" not in line and "\\x1b[32mOK" in line


def test_csv_formula_cells_are_neutralised_but_numbers_are_not(keras, tmp_path):
    path = _named_model(keras, tmp_path / "f.keras", "=HYPERLINK(1)")
    result = run_cli("grad", path, "--all", "--format", "csv")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "'=HYPERLINK(1)" in out
    assert any(cell.startswith("-") for line in out.splitlines() for cell in line.split(","))


# --- one line, the right exit status -----------------------------------------------------------


@pytest.mark.slow
def test_corrupt_fingerprint_is_silent(workdir):
    """TensorFlow logs from C++ straight to file descriptor 2, so this runs in a subprocess."""
    (workdir / "sm" / "fingerprint.pb").write_bytes(b"\xff\x00garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "gradinspect", "grad", str(workdir / "sm"), "--all"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


@pytest.mark.slow
def test_hdf5_input_with_several_datasets_must_name_one(workdir):
    with h5py.File(workdir / "two.h5", "w") as h5:
        h5["a"] = np.ones((2, 2), dtype=np.float32)
        h5["b"] = np.zeros((2, 2), dtype=np.float32)
    assert_one_error_line(run_cli("grad", workdir / "m.keras", "--all", "--input", workdir / "two.h5"), ":DATASET")
    ok = run_cli("grad", workdir / "m.keras", "--all", "--input", f"{workdir / 'two.h5'}:b")
    assert ok.exit_code == 0, ok.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["grad", "{m}", "--frm", "x"], "No such option '--frm'"),
        (["grad", "{m}", "--all", "--seed", "-1"], "'--seed'"),
        (["grad", "{m}", "--all", "--input-shape", "-1,2"], "positive"),
        (["check", "{m}", "--rtol"], "requires an argument"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_usage_errors_are_one_line(workdir, args, needle):
    assert_one_error_line(run_cli(*(a.format(m=workdir / "m.keras") for a in args)), needle)


def test_empty_keras_metadata_is_bad_input(workdir):
    (workdir / "sm" / "keras_metadata.pb").write_bytes(b"")
    assert_one_error_line(run_cli("layers", workdir / "sm"), "no root node")


def test_an_internal_bug_has_its_own_exit_status(monkeypatch, workdir):
    import gradinspect.commands.layers

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(gradinspect.commands.layers, "list_layers", broken)
    monkeypatch.setattr(gradinspect.commands.layers, "static_listing", broken)
    result = run_cli("layers", workdir / "m.keras")
    assert result.exit_code == 70
    assert result.stderr.startswith("Error: internal error (ZeroDivisionError: boom)") and "report" in result.stderr


@pytest.mark.parametrize("name", ["mlp.h5", "mlp.keras"])
def test_corrupted_model_files_are_bad_input_never_a_bug(tmp_path, name):
    """Seeded byte flips and truncations: HDF5's internal errors (RuntimeError, ValueError) are bad input too."""
    import random

    rng = random.Random(0)
    original = (SAMPLES / name).read_bytes()
    statuses = set()
    for i in range(40):
        data = bytearray(original)
        if i % 3 == 0:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / f"m{i}{SAMPLES.joinpath(name).suffix}"
        path.write_bytes(bytes(data))
        result = run_cli("layers", path)
        statuses.add(result.exit_code)
        assert result.exit_code in (0, 2), result.stderr
        assert "internal error" not in result.stderr and result.stderr.count("\n") <= 1, result.stderr
    assert 2 in statuses


@pytest.mark.slow
def test_a_savedmodel_reached_through_a_link_loads_but_links_inside_are_refused(workdir):
    (workdir / "link_to_sm").symlink_to(workdir / "sm")
    assert run_cli("layers", workdir / "link_to_sm").exit_code == 0
    (workdir / "sm" / "assets").mkdir(exist_ok=True)
    (workdir / "sm" / "assets" / "passwd").symlink_to("/etc/passwd")
    assert_one_error_line(run_cli("layers", workdir / "sm"), "symbolic link")
