"""Disk and memory are bounded before a byte is written or read: zip bombs, unneeded assets, HDF5 bombs."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
from conftest import SAMPLES, assert_one_error_line, run_cli


def _keras_with(dst, extra: dict[str, tuple[bytes, int]], src=SAMPLES / "mlp.keras"):
    """A copy of a .keras archive with extra members: name -> (data, compression)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
        for name, (data, compression) in extra.items():
            zout.writestr(name, data, compress_type=compression)
    return dst


def test_a_zip_bomb_member_is_refused_before_it_is_written(tmp_path):
    with zipfile.ZipFile(SAMPLES / "mlp.keras") as zin, zipfile.ZipFile(tmp_path / "bomb.keras", "w") as zout:
        for name in zin.namelist():
            if name != "model.weights.h5":
                zout.writestr(name, zin.read(name))
        zout.writestr("model.weights.h5", bytes(64 * 1024**2), compress_type=zipfile.ZIP_DEFLATED)
    assert (tmp_path / "bomb.keras").stat().st_size < 1024**2
    with zipfile.ZipFile(tmp_path / "bomb.keras") as plain:  # plain zipfile inflates it all
        assert len(plain.read("model.weights.h5")) == 64 * 1024**2
    assert_one_error_line(run_cli("layers", tmp_path / "bomb.keras"), "'model.weights.h5'", "zip bomb")


def test_assets_no_layer_reads_are_not_copied(tmp_path):
    from gradinspect.artifacts.formats import read_artifact

    big = np.random.default_rng(0).bytes(8 * 1024**2)  # incompressible: not a zip bomb
    path = _keras_with(tmp_path / "assets.keras", {"assets/big.bin": (big, zipfile.ZIP_STORED)})
    artifact = read_artifact(path)
    with zipfile.ZipFile(artifact.source) as copy:
        assert "assets/big.bin" not in copy.namelist()
        assert "model.weights.h5" in copy.namelist()
    assert run_cli("layers", path).exit_code == 0


@pytest.mark.slow
def test_a_lookup_layers_assets_are_copied(keras, tmp_path):
    from gradinspect.artifacts.formats import read_artifact

    L = keras.layers
    x = keras.Input((1,), dtype="string", name="w")
    lookup = L.StringLookup(name="lookup")
    lookup.adapt(np.array([["red"], ["green"], ["red"]]))  # an adapted vocabulary is saved as an asset
    keras.Model(x, L.Dense(1, name="d")(L.CategoryEncoding(3, output_mode="one_hot")(lookup(x)))).save(
        tmp_path / "lookup.keras"
    )
    with zipfile.ZipFile(tmp_path / "lookup.keras") as original:
        assets = [n for n in original.namelist() if n.startswith("assets/")]
    assert assets
    artifact = read_artifact(tmp_path / "lookup.keras")  # holds the private copy
    with zipfile.ZipFile(artifact.source) as copy:
        assert set(assets) <= set(copy.namelist())


@pytest.mark.slow
def test_savedmodel_assets_are_not_copied_and_the_model_still_runs(tmp_path):
    from gradinspect.artifacts.formats import read_artifact

    dst = tmp_path / "sm"
    shutil.copytree(SAMPLES / "mlp_export", dst)
    (dst / "assets").mkdir(exist_ok=True)
    (dst / "assets" / "big.bin").write_bytes(bytes(8 * 1024**2))
    artifact = read_artifact(dst)  # holds the private copy
    assert not (artifact.source / "assets").exists()
    result = run_cli("grad", dst, "--all", "--random", "2")
    assert result.exit_code == 0, result.stderr


def _h5_input(path, shape, chunks, write):
    import h5py

    with h5py.File(path, "w") as h5:
        d = h5.create_dataset("x", shape=shape, dtype="float32", chunks=chunks)
        if write:
            d[:] = np.ones(shape, dtype=np.float32)
    return path


@pytest.mark.slow
def test_a_fill_value_dataset_declaring_400m_rows_is_refused(tmp_path):
    path = _h5_input(tmp_path / "fill.h5", (400_000_000, 2), (65536, 2), write=False)
    assert path.stat().st_size < 1024**2
    line = assert_one_error_line(run_cli("grad", SAMPLES / "mlp.keras", "--all", "--input", path), "--input")
    assert "fill-value dataset" in line


@pytest.mark.slow
def test_a_chunk_larger_than_a_batch_could_use_is_refused(tmp_path):
    path = _h5_input(tmp_path / "chunk.h5", (9_000_000, 2), (9_000_000, 2), write=True)
    line = assert_one_error_line(
        run_cli("grad", SAMPLES / "mlp.keras", "--all", "--input", path, "--batch-size", "4"), "--input"
    )
    assert "chunks of 68.7 MiB" in line
