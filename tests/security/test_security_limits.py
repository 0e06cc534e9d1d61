"""Bounded resources: bombs in archives, configs and inputs are refused before anything is allocated.

Each hostile file declares far more than it holds (sizes in headers, fill-value datasets,
compressed zeros); gradinspect must refuse it from the declaration, quickly, with one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import REPO, SAMPLES, assert_one_error_line, edited_h5_copy, edited_keras_copy, run_cli


def _rezip(src, dst, extra):
    """A copy of the .keras archive ``src`` with the members of ``extra`` added or replaced."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.namelist():
            if item not in extra:
                zout.writestr(item, zin.read(item))
        for name, data in extra.items():
            zout.writestr(name, data)
    return dst


def test_metadata_json_bomb_is_refused(tmp_path):
    bomb = b"{" + b" " * (50 * 1024**2) + b"}"  # 50 MiB that compresses to ~50 KiB
    path = _rezip(SAMPLES / "mlp.keras", tmp_path / "bomb.keras", {"metadata.json": bomb})
    assert path.stat().st_size < 1024**2
    assert_one_error_line(run_cli("layers", path), "metadata.json: 50.0 MiB needed")


def test_archive_with_many_members_is_refused(tmp_path):
    members = {f"assets/{i}": b"" for i in range(12_000)}
    path = _rezip(SAMPLES / "mlp.keras", tmp_path / "many.keras", members)
    assert_one_error_line(run_cli("layers", path), "12,00")


@pytest.mark.slow
@pytest.mark.slow
def test_unpacked_size_is_bounded_by_max_memory(tmp_path):
    import numpy as np

    # A member Keras reads that unpacks past the limit from a smaller file: 4 bits of entropy per
    # byte compress about 2:1, far from a zip bomb's ratio.
    blob = np.random.default_rng(0).integers(0, 16, 80 * 1024**2, dtype=np.uint8).tobytes()
    path = _rezip(SAMPLES / "mlp.keras", tmp_path / "big.keras", {"model.weights.h5": blob})
    assert_one_error_line(run_cli("layers", path, "--max-memory", "64M"), "the unpacked archive", "--max-memory")
    # An 80 MiB asset no layer reads is not copied, so it does not count.
    path = _rezip(SAMPLES / "mlp.keras", tmp_path / "assets.keras", {"assets/blob": blob})
    assert run_cli("layers", path, "--max-memory", "64M").exit_code == 0


def test_huge_dense_layer_in_config_is_refused_before_building(tmp_path):
    path = edited_keras_copy(
        tmp_path / "huge.keras", lambda c: c["config"]["layers"][1]["config"].update(units=800_000_000)
    )
    for command in (("layers",), ("grad", "--all")):
        assert_one_error_line(run_cli(command[0], path, *command[1:]), "the layers its config declares")


def test_weight_dataset_declaring_terabytes_is_refused(tmp_path):
    import h5py

    path = tmp_path / "fill.h5"
    path.write_bytes((SAMPLES / "mlp.h5").read_bytes())
    with h5py.File(path, "r+") as h5:
        group = h5["model_weights"]
        name = next(iter(group))
        group[name].create_dataset("ghost", shape=(10**6, 10**6), dtype="float32")  # fill value, no storage
    assert path.stat().st_size < 1024**2
    assert_one_error_line(run_cli("grad", path, "--all"), "the weight arrays it stores")


def _npy_header_only(shape):
    """An .npy file whose header declares ``shape`` float32 but that holds no data."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.mark.slow
def test_npy_and_npz_bombs_are_refused_from_their_headers(tmp_path):
    (tmp_path / "bomb.npy").write_bytes(_npy_header_only((10**6, 10**6)))
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as zf:
        zf.writestr("x.npy", _npy_header_only((10**6, 10**6)))
    for name in ("bomb.npy", "bomb.npz"):
        line = assert_one_error_line(run_cli("grad", SAMPLES / "mlp.keras", "--all", "--input", tmp_path / name))
        assert "3.6 TiB needed" in line, line


@pytest.mark.slow
def test_hdf5_input_with_a_fill_value_dataset_is_refused(tmp_path):
    import h5py

    with h5py.File(tmp_path / "fill.h5", "w") as h5:
        h5.create_dataset("x", shape=(10**7, 10**6), dtype="float32")
    assert (tmp_path / "fill.h5").stat().st_size < 1024**2
    line = assert_one_error_line(run_cli("grad", SAMPLES / "mlp.keras", "--all", "--input", tmp_path / "fill.h5"))
    assert "the datasets it declares" in line


@pytest.mark.slow
def test_pickled_npy_is_never_unpickled(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_one_error_line(
        run_cli("grad", SAMPLES / "mlp.keras", "--all", "--input", tmp_path / "obj.npy"), "Python objects"
    )


def test_baseline_from_a_device_is_refused():
    assert_one_error_line(
        run_cli("check", SAMPLES / "mlp.keras", "--baseline", "/dev/zero"), "--baseline /dev/zero", "regular file"
    )


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_are_refused_without_hanging(tmp_path):
    """Run as a subprocess with a timeout: a hang here would otherwise hang the suite."""
    fifo = tmp_path / "pipe.keras"
    os.mkfifo(fifo)
    data_fifo = tmp_path / "data.npy"
    os.mkfifo(data_fifo)
    base_fifo = tmp_path / "base.json"
    os.mkfifo(base_fifo)
    runs = [
        ["layers", str(fifo)],
        ["grad", str(SAMPLES / "mlp.keras"), "--all", "--input", str(data_fifo)],
        ["check", str(SAMPLES / "mlp.keras"), "--baseline", str(base_fifo)],
    ]
    for args in runs:
        proc = subprocess.run(
            [sys.executable, "-m", "gradinspect", *args], capture_output=True, text=True, timeout=120, cwd=REPO
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert "FIFO" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_max_memory_value_is_validated():
    assert_one_error_line(run_cli("layers", SAMPLES / "mlp.keras", "--max-memory", "lots"), "--max-memory")


def test_deep_json_config_is_bad_input_not_a_crash(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    path = _rezip(SAMPLES / "mlp.keras", tmp_path / "deep.keras", {"config.json": deep.encode()})
    assert_one_error_line(run_cli("layers", path), "nested too deeply")


def test_unknown_compression_method_is_bad_input(tmp_path):
    path = tmp_path / "m99.keras"
    raw = bytearray((SAMPLES / "mlp.keras").read_bytes())
    # Patch the compression method of every local and central header to 99.
    for sig, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = 0
        while (i := raw.find(sig, start)) != -1:
            raw[i + offset : i + offset + 2] = (99).to_bytes(2, "little")
            start = i + 4
    path.write_bytes(bytes(raw))
    line = assert_one_error_line(run_cli("layers", path))
    assert "internal error" not in line and str(path) in line


def test_legacy_h5_with_huge_model_config_string_is_refused(tmp_path):
    path = edited_h5_copy(
        tmp_path / "pad.h5", lambda c: c["config"].update(padding="x" * (65 * 1024**2)), SAMPLES / "mlp.h5"
    )
    assert_one_error_line(run_cli("layers", path), "model_config")


def test_json_baseline_nested_too_deeply_is_bad_input(tmp_path):
    base = tmp_path / "base.json"
    base.write_text("[" * 100_000 + "]" * 100_000)
    line = assert_one_error_line(run_cli("check", SAMPLES / "mlp.keras", "--baseline", base), "--baseline")
    assert "internal error" not in line
