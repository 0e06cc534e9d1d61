"""Every bad model path gives one `Error:` line naming the file, exit status 2, no traceback."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from conftest import SAMPLES, assert_one_error_line, edited_keras_copy, run_cli


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.keras"
    line = assert_one_error_line(run_cli("layers", missing), str(missing), "no such file")
    assert ".keras" in line and "SavedModel" in line  # says what was expected


def test_directory_that_is_no_savedmodel(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_error_line(run_cli("layers", tmp_path), str(tmp_path), "no saved_model.pb")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.keras"
    p.touch()
    assert_one_error_line(run_cli("layers", p), str(p), "empty")


def test_unknown_extension(tmp_path):
    p = tmp_path / "model.pt"
    shutil.copy(SAMPLES / "mlp.keras", p)
    assert_one_error_line(run_cli("layers", p), str(p), "'.pt'", "expected")


def test_truncated_keras_zip(tmp_path):
    data = (SAMPLES / "mlp.keras").read_bytes()
    p = tmp_path / "truncated.keras"
    p.write_bytes(data[: len(data) // 2])
    assert_one_error_line(run_cli("layers", p), str(p), "truncated or corrupt")


def test_keras_file_that_is_not_a_zip(tmp_path):
    p = tmp_path / "fake.keras"
    p.write_bytes(b"this is not a zip archive at all")
    assert_one_error_line(run_cli("layers", p), str(p), "zip")


def test_zip_without_config_json(tmp_path):
    import zipfile

    p = tmp_path / "noconfig.keras"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("metadata.json", "{}")
    assert_one_error_line(run_cli("layers", p), str(p), "config.json")


def test_corrupt_hdf5(tmp_path):
    data = (SAMPLES / "mlp.h5").read_bytes()
    p = tmp_path / "corrupt.h5"
    p.write_bytes(data[:1000])
    assert_one_error_line(run_cli("layers", p), str(p), "truncated or corrupt")


def test_h5_that_is_not_hdf5(tmp_path):
    p = tmp_path / "text.h5"
    p.write_text("model = 1\n")
    assert_one_error_line(run_cli("layers", p), str(p), "not an HDF5 file")


def test_plain_dataset_h5(tmp_path):
    p = tmp_path / "data.h5"
    with h5py.File(p, "w") as h5:
        h5["x"] = np.zeros((3, 2))
    assert_one_error_line(run_cli("layers", p), str(p), "no 'model_config'")


@pytest.mark.parametrize("writer", ["keras3", "tf_keras"])
def test_weights_only_h5(tmp_path, keras, tf_keras, writer):
    lib = keras if writer == "keras3" else tf_keras
    model = lib.Sequential([lib.Input((2,)), lib.layers.Dense(1)])
    p = tmp_path / ("w.weights.h5" if writer == "keras3" else "w.h5")
    model.save_weights(p)
    assert_one_error_line(run_cli("layers", p), str(p), "only weights", "model.save()")


def test_savedmodel_with_corrupt_metadata(tmp_path):
    dst = tmp_path / "sm"
    shutil.copytree(SAMPLES / "mlp_savedmodel", dst)
    (dst / "keras_metadata.pb").write_bytes(b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert_one_error_line(run_cli("layers", dst), str(dst), "keras_metadata.pb")


def test_bad_flag_is_a_usage_error():
    result = run_cli("layers", SAMPLES / "mlp.keras", "--format", "yaml")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Invalid value for '-f' / '--format'" in result.stderr


@pytest.mark.slow
def test_unexpected_keras_failure_is_one_line(tmp_path):
    """A config Keras cannot rebuild (a layer whose units are a string) is a load error, not a crash."""
    p = edited_keras_copy(
        tmp_path / "broken.keras", lambda cfg: cfg["config"]["layers"][1]["config"].update(units="many")
    )
    # `layers` reads the file statically, so it lists the layer; loading fails cleanly.
    listed = run_cli("layers", p, "--format", "csv")
    assert listed.exit_code == 0
    assert "dense_1,Dense" in listed.stdout
    from gradinspect.artifacts.loading import load_model
    from gradinspect.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="Keras could not load"):
        load_model(p)


def test_savedmodel_directory_without_saved_model_pb(tmp_path):
    dst = tmp_path / "sm"
    shutil.copytree(SAMPLES / "mlp_savedmodel", dst)
    (dst / "saved_model.pb").unlink()
    assert_one_error_line(run_cli("grad", dst, "--all"), str(dst), "no saved_model.pb")
