"""One read of the model file for gradinspect's own facts: the private copy is opened once, its
config parsed once, and saved_model.pb decoded once, before any loader sees it."""

from __future__ import annotations

import contextlib
import json
import sys
import zipfile
from collections import Counter

import pytest
from conftest import SAMPLES


@pytest.fixture
def reads(monkeypatch):
    """Counts of opens (Python's, and h5py's by path) of files inside gradinspect's private copies,
    and of JSON and protobuf parses, while the test runs."""
    import h5py

    from gradinspect.artifacts import protos

    counts: Counter[str] = Counter()
    active = [True]

    def hook(event, args):
        if active[0] and event == "open" and "gradinspect-" in str(args[0]) and args[1] in (None, "r", "rb"):
            counts[f"open {str(args[0]).rsplit('/', 1)[-1]}"] += 1

    sys.addaudithook(hook)
    real_file, real_loads, real_decode = h5py.File, json.loads, protos.decode

    def counted_file(name, *args, **kwargs):
        if isinstance(name, str) and "gradinspect-" in name:
            counts[f"h5py {name.rsplit('/', 1)[-1]}"] += 1
        return real_file(name, *args, **kwargs)

    def counted_loads(text, *args, **kwargs):
        counts["json"] += 1
        return real_loads(text, *args, **kwargs)

    def counted_decode(name, data):
        counts[f"decode {name}"] += 1
        return real_decode(name, data)

    monkeypatch.setattr(h5py, "File", counted_file)
    monkeypatch.setattr(json, "loads", counted_loads)
    monkeypatch.setattr(protos, "decode", counted_decode)
    yield counts
    active[0] = False  # audit hooks cannot be removed


@pytest.mark.parametrize("name", ["mlp.keras", "mlp.h5"])
def test_a_keras_or_h5_file_is_opened_once_and_its_config_parsed_once(reads, name):
    from gradinspect.artifacts.loading import open_artifact

    artifact, _ = open_artifact(SAMPLES / name)
    assert artifact.weight_bytes > 0
    copy = artifact.source.name
    assert reads[f"open {copy}"] == 1, dict(reads)
    assert reads[f"h5py {copy}"] == 0, dict(reads)  # h5py reads through the one open file
    # .keras: config.json and metadata.json; .h5: model_config (training_config is absent here).
    assert reads["json"] == (2 if name.endswith(".keras") else 1), dict(reads)


def test_a_savedmodel_is_decoded_once(reads):
    from gradinspect.artifacts.loading import open_artifact

    open_artifact(SAMPLES / "mlp_savedmodel")
    assert reads["open saved_model.pb"] == 1 and reads["decode tensorflow.SavedModel"] == 1, dict(reads)
    assert reads["open keras_metadata.pb"] == 1, dict(reads)
    assert reads["decode third_party.py.tf_keras.protobuf.SavedMetadata"] == 1, dict(reads)


@pytest.mark.parametrize("name", ["mlp.keras", "mlp.h5"])
def test_layers_lists_a_keras_or_h5_file_from_that_one_open(reads, name):
    """The static listing is the config graph walked while the file was open for its config: the
    weights are not opened again, and the parameter counts are the stored arrays' sizes."""
    import h5py

    from gradinspect.commands.layers import static_listing

    report = static_listing(SAMPLES / name)
    assert report is not None
    # The private copy keeps the file's name; the other open is of its directory.
    assert reads[f"open {name}"] == 1 and not any(k.startswith("h5py ") for k in reads), dict(reads)
    # An independent count: the size of every array in the weights file (the MLP has no optimizer state).
    with contextlib.ExitStack() as stack:
        if name.endswith(".keras"):
            zf = stack.enter_context(zipfile.ZipFile(SAMPLES / name))
            f = stack.enter_context(h5py.File(stack.enter_context(zf.open("model.weights.h5")), "r"))
        else:
            f = stack.enter_context(h5py.File(SAMPLES / name, "r"))["model_weights"]
        sizes: list[int] = []
        f.visititems(lambda n, o: sizes.append(o.size) if isinstance(o, h5py.Dataset) else None)
    assert report.total_params == sum(sizes) == sum(r.params for r in report.layers if not r.is_container) > 0


@pytest.mark.parametrize("remove", ["variables.data-00000-of-00001", "variables.index"])
def test_a_savedmodel_without_its_variables_is_refused_by_name(tmp_path, remove):
    """``layers`` listed a SavedModel whose weights shard was missing as if it were whole (exit 0)."""
    import shutil

    from conftest import assert_one_error_line, run_cli

    copy = tmp_path / "export"
    shutil.copytree(SAMPLES / "mlp_export", copy)
    (copy / "variables" / remove).chmod(0o600)
    (copy / "variables" / remove).unlink()
    for command in ("layers", "grad"):
        args = (command, copy) if command == "layers" else (command, copy, "--all")
        assert_one_error_line(run_cli(*args), f"variables/{remove} is missing", "copy the whole SavedModel")
