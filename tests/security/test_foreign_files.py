"""A model or data file never makes gradinspect open another file: vocabularies, HDF5 links and storage.

Each fixture points at a file of the test's temp dir (or a FIFO, which would hang a reader).
Each test shows the plain library really opens that file, then that gradinspect refuses with one
line naming the layer or dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from conftest import SAMPLES, assert_one_error_line, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lookup_model(keras, tmp_path_factory):
    """A string model (StringLookup -> Embedding -> Dense) saved as .keras, and a vocabulary file."""
    d = tmp_path_factory.mktemp("lookup")
    L = keras.layers
    x = keras.Input((1,), dtype="string", name="words")
    ids = L.StringLookup(vocabulary=["a", "b"], name="lookup")(x)
    y = L.Dense(1, name="out")(L.Flatten()(L.Embedding(8, 2, name="emb")(ids)))
    keras.Model(x, y).save(d / "lookup.keras")
    (d / "vocab.txt").write_text("red\ngreen\nblue\n")
    return d


def _with_vocabulary(src, dst, vocabulary):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "config.json":
                cfg = json.loads(data)
                layer = next(item for item in cfg["config"]["layers"] if item["config"]["name"] == "lookup")
                layer["config"]["vocabulary"] = vocabulary
                data = json.dumps(cfg).encode()
            if not name.startswith("assets/"):
                zout.writestr(name, data)
    return dst


def test_keras_opens_a_vocabulary_path_from_the_config(keras, lookup_model):
    """Keras 3.15 refuses it in safe mode; with the guard off (tf_keras has none) it opens the path."""
    d = lookup_model
    path = _with_vocabulary(d / "lookup.keras", d / "plain.keras", str(d / "vocab.txt"))
    model = keras.saving.load_model(path, safe_mode=False)
    assert model.get_layer("lookup").get_vocabulary()[1:] == ["red", "green", "blue"]


@pytest.mark.parametrize("command", [("layers",), ("grad", "--all", "--random", "2")])
def test_a_vocabulary_path_is_refused_without_opening_it(lookup_model, tmp_path, command):
    fifo = tmp_path / "vocab.fifo"
    os.mkfifo(fifo)  # opening it for reading would block forever
    path = _with_vocabulary(lookup_model / "lookup.keras", tmp_path / "fifo.keras", str(fifo))
    line = assert_one_error_line(run_cli(command[0], path, *command[1:]), "refused to load", "layer 'lookup'")
    assert "vocabulary from the file" in line and str(fifo) in line


def test_an_inline_vocabulary_is_fine(lookup_model, tmp_path):
    path = _with_vocabulary(lookup_model / "lookup.keras", tmp_path / "inline.keras", ["x", "y", "z"])
    result = run_cli("layers", path)
    assert result.exit_code == 0, result.stderr
    assert "lookup" in result.stdout


@pytest.mark.parametrize("layer", ["TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"])
def test_layers_that_load_or_call_outside_code_are_off_the_allow_list(layer):
    from gradinspect.artifacts.allowlists import keras_classes

    assert layer not in keras_classes()


def test_abort_and_mutex_ops_are_off_the_allow_list():
    from gradinspect.artifacts.allowlists import tf_ops

    assert not {"Abort", "MutexV2", "MutexLock", "ConsumeMutexLock"} & tf_ops()


# --- HDF5 -------------------------------------------------------------------------------------


def _h5_weights_edit(tmp_path, edit):
    import h5py

    dst = tmp_path / "model.h5"
    shutil.copyfile(SAMPLES / "mlp.h5", dst)
    with h5py.File(dst, "r+") as h5:
        edit(h5, tmp_path)
    return dst


def _external_link(h5, d):
    import h5py

    with h5py.File(d / "other.h5", "w") as other:
        other["secret"] = np.arange(3.0)
    h5["model_weights/elsewhere"] = h5py.ExternalLink(str(d / "other.h5"), "/secret")


def _external_storage(h5, d):
    group = h5["model_weights/dense_1/dense_1"]
    kernel = group["kernel"]
    values = kernel[()]
    values.tofile(d / "raw.bin")
    del group["kernel"]
    group.create_dataset(
        "kernel", shape=values.shape, dtype=values.dtype, external=[(str(d / "raw.bin"), 0, values.nbytes)]
    )


@pytest.mark.parametrize(
    "edit,needle",
    [(_external_link, "external link"), (_external_storage, "stored in external raw files")],
    ids=["external-link", "external-storage"],
)
@pytest.mark.parametrize("command", [("layers",), ("grad", "--all", "--random", "2")])
def test_hdf5_weights_that_name_another_file_are_refused(tmp_path, edit, needle, command):
    path = _h5_weights_edit(tmp_path, edit)
    line = assert_one_error_line(run_cli(command[0], path, *command[1:]), "refused to load")
    assert needle in line


def test_h5py_follows_those_links_and_storage(tmp_path):
    import h5py

    path = _h5_weights_edit(tmp_path, lambda h5, d: (_external_link(h5, d), _external_storage(h5, d)))
    with h5py.File(path, "r") as h5:
        np.testing.assert_array_equal(h5["model_weights/elsewhere"][()], np.arange(3.0))
        raw = np.fromfile(tmp_path / "raw.bin", dtype=h5["model_weights/dense_1/dense_1/kernel"].dtype)
        np.testing.assert_array_equal(h5["model_weights/dense_1/dense_1/kernel"][()].ravel(), raw)


def _input_file(d, kind):
    import h5py

    x = np.load(SAMPLES / "mlp_input.npy")
    path = d / f"{kind}.h5"
    with h5py.File(path, "w") as h5:
        if kind == "external":
            x.tofile(d / "rows.bin")
            h5.create_dataset("x", shape=x.shape, dtype=x.dtype, external=[(str(d / "rows.bin"), 0, x.nbytes)])
        else:
            with h5py.File(d / "source.h5", "w") as src:
                src["x"] = x
            layout = h5py.VirtualLayout(shape=x.shape, dtype=x.dtype)
            layout[:] = h5py.VirtualSource(str(d / "source.h5"), "x", shape=x.shape)
            h5.create_virtual_dataset("x", layout)
    return path, x


@pytest.mark.parametrize("kind,needle", [("external", "external raw files"), ("virtual", "virtual dataset")])
@pytest.mark.parametrize("extra", [(), ("--batch-size", "4")], ids=["whole", "streamed"])
def test_hdf5_inputs_stored_in_other_files_are_refused(tmp_path, kind, needle, extra):
    import h5py

    path, x = _input_file(tmp_path, kind)
    with h5py.File(path, "r") as h5:  # plain h5py reads the other file
        np.testing.assert_array_equal(h5["x"][()], x)
    result = run_cli("grad", SAMPLES / "mlp.keras", "--all", "--input", path, *extra)
    line = assert_one_error_line(result, f"--input {path}")
    assert needle in line and "dataset 'x'" in line
