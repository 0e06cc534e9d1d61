"""Nothing from a model file runs or touches a file: op layers, unknown classes, SavedModel graphs, TOCTOU.

Every hostile fixture's payload only creates a marker file in the test's temp dir; each test
asserts the marker is absent after gradinspect refused the file, and (where the payload is
reachable) that it appears under --unsafe, which proves the fixture really is hostile.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from conftest import SAMPLES, assert_one_error_line, edited_h5_copy, edited_keras_copy, marker_lambda, run_cli

COMMANDS = [
    ("layers",),
    ("grad", "--all"),
    ("check",),
    ("verify", "--layer", "d"),
]


@pytest.fixture(scope="module")
def op_models(tf_keras, tmp_path_factory):
    """A tf.keras functional model with op layers (x + 1, reshape), and hostile edits of it."""
    import tensorflow as tf

    d = tmp_path_factory.mktemp("oplayers")
    marker = d / "MARKER"
    x = tf_keras.Input((2,), name="x")
    y = tf.reshape(x + 1.0, (-1, 2))
    tf_keras.Model(x, tf_keras.layers.Dense(1, name="d")(y)).save(d / "ops.h5")

    def retarget(function, inbound=None):
        def edit(cfg):
            layer = next(item for item in cfg["config"]["layers"] if item["class_name"] == "TFOpLambda")
            layer["config"]["function"] = function
            if inbound is not None:
                layer["inbound_nodes"] = inbound

        return edit

    write = [["_CONSTANT_VALUE", -1, str(marker), {"contents": "pwned"}]]
    edited_h5_copy(d / "write_file.h5", retarget("io.write_file", write), d / "ops.h5")
    edited_h5_copy(d / "from_json.h5", retarget("keras.models.model_from_json"), d / "ops.h5")
    edited_h5_copy(d / "path_constant.h5", retarget("math.add", [[["x", 0, 0, {"y": "/etc/passwd"}]]]), d / "ops.h5")
    return d, marker


def test_allowlisted_op_layers_load_and_give_exact_gradients(op_models, tmp_path):
    d, _ = op_models
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.25]], dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run_cli(
        "grad",
        d / "ops.h5",
        "--from",
        "d",
        "--to",
        "d",
        "--input",
        tmp_path / "x.npy",
        "--save-npz",
        tmp_path / "g.npz",
    )
    assert result.exit_code == 0, result.stderr
    saved = np.load(tmp_path / "g.npz")
    # loss = sum(Dense(x + 1)): d/dkernel = sum over samples of (x + 1), d/dbias = batch size.
    np.testing.assert_allclose(saved["weight/d/kernel"][:, 0], (x + 1).sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(saved["weight/d/bias"], [3.0])


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_op_layer_writing_a_file_is_refused_by_every_command(op_models, command):
    d, marker = op_models
    line = assert_one_error_line(run_cli(command[0], d / "write_file.h5", *command[1:]), "refused to load")
    assert "tf.io.write_file" in line and "allow-list" in line
    assert not marker.exists()


def test_the_write_file_fixture_really_writes_under_unsafe(op_models):
    d, marker = op_models
    result = run_cli("grad", d / "write_file.h5", "--all", "--unsafe")
    assert result.exit_code == 2  # the model is broken after its payload ran
    assert marker.exists()
    marker.unlink()


def test_op_layer_calling_model_from_json_is_refused(op_models):
    d, _ = op_models
    assert_one_error_line(run_cli("layers", d / "from_json.h5"), "tf.keras.models.model_from_json")


def test_op_layer_with_a_path_as_constant_is_refused(op_models):
    d, _ = op_models
    assert_one_error_line(run_cli("grad", d / "path_constant.h5", "--all"), "constant argument '/etc/passwd'")


@pytest.mark.parametrize(
    "layer,allowed",
    [
        ({"class_name": "ClassMethod", "config": {"cls_symbol": "RaggedTensor", "method_name": "from_row_splits"}}, 1),
        ({"class_name": "ClassMethod", "config": {"cls_symbol": "io.gfile.GFile", "method_name": "write"}}, 0),
        ({"class_name": "InstanceProperty", "config": {"attr_name": "flat_values"}}, 1),
        ({"class_name": "InstanceMethod", "config": {"attr_name": "__reduce__"}}, 0),
        ({"class_name": "SlicingOpLambda", "config": {"function": "__operators__.getitem"}}, 1),
        ({"class_name": "TFOpLambda", "config": {"function": "compat.v1.squeeze"}}, 1),
        ({"class_name": "TFOpLambda", "config": {"function": "print"}}, 0),
        ({"class_name": "TFOpLambda", "config": {"function": "load_op_library"}}, 0),
        ({"class_name": "TFOpLambda", "config": {"function": "io.gfile.remove"}}, 0),
    ],
)
def test_op_layer_allow_lists(layer, allowed):
    from pathlib import Path

    from gradinspect.artifacts.formats import Artifact, ModelFormat
    from gradinspect.artifacts.scan import scan_config

    layer = {**layer, "name": "op", "inbound_nodes": [[["x", 0, 0, {"axis": -1, "name": None}]]]}
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [layer]}}
    findings = scan_config(Artifact(Path("m.h5"), ModelFormat.H5, config))
    assert (findings == []) == bool(allowed), findings


@pytest.mark.slow
def test_unknown_class_without_module_is_custom_code(tmp_path):
    """A Keras 2 config names classes without a module; an unknown one is refused unless registered."""
    path = edited_h5_copy(
        tmp_path / "custom.h5",
        lambda c: c["config"]["layers"][1].update(class_name="TotallyCustom"),
        SAMPLES / "mlp.h5",
    )
    assert_one_error_line(run_cli("layers", path), "class 'TotallyCustom'", "--custom-objects")
    objects = tmp_path / "objects.py"
    objects.write_text("import keras\n\nclass TotallyCustom(keras.layers.Dense):\n    pass\n")
    assert run_cli("layers", path, "--custom-objects", objects).exit_code == 0


def test_keras3_function_outside_the_allow_list_is_refused(tmp_path):
    """keras.config.enable_unsafe_deserialization lives under keras.*, but is no activation."""
    evil = {"module": "keras.config", "class_name": "function", "config": "enable_unsafe_deserialization"}
    path = edited_keras_copy(
        tmp_path / "fn.keras", lambda c: c["config"]["layers"][1]["config"].update(activation=evil)
    )
    assert_one_error_line(run_cli("grad", path, "--all"), "'enable_unsafe_deserialization'")


# --- SavedModel graphs ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["serve_writes", "resource_writes"])
@pytest.mark.parametrize("command", [("layers",), ("grad", "--all"), ("check",)], ids=lambda c: c[0])
def test_savedmodel_graph_with_file_io_is_refused(hostile_savedmodels, model, command):
    d, marker = hostile_savedmodels
    line = assert_one_error_line(run_cli(command[0], d / model, *command[1:]), "refused to load")
    assert "op 'WriteFile'" in line
    assert not marker.exists()


def test_the_savedmodel_fixtures_really_write_under_unsafe(hostile_savedmodels):
    d, marker = hostile_savedmodels
    for model in ("resource_writes", "serve_writes"):
        assert run_cli("grad", d / model, "--all", "--unsafe").exit_code == 0
        assert marker.exists(), model
        marker.unlink()


def test_tf_keras_savedmodel_with_an_unregistered_custom_layer_is_refused(tf_keras, tmp_path):
    class Doubler(tf_keras.layers.Layer):
        def call(self, x):
            return 2 * x

    x = tf_keras.Input((2,), name="x")
    tf_keras.Model(x, Doubler(name="dbl")(tf_keras.layers.Dense(2)(x))).save(tmp_path / "sm", save_format="tf")
    assert_one_error_line(run_cli("layers", tmp_path / "sm"), "layer 'dbl'", "class 'Doubler'")


def test_checkpoint_machinery_is_no_hiding_place(keras, tmp_path):
    """A serving function that calls the traced save function is refused for the SaveV2 inside."""
    import shutil

    from tensorflow.core.protobuf import saved_model_pb2

    dst = tmp_path / "sm"
    shutil.copytree(SAMPLES / "mlp_export", dst)
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((dst / "saved_model.pb").read_bytes())
    library = sm.meta_graphs[0].graph_def.library
    save_fn = next(f.signature.name for f in library.function if "traced_save" in f.signature.name)
    serving = next(f for f in library.function if f.signature.name.startswith("__inference___call__"))
    node = serving.node_def.add(name="sneaky", op="StatefulPartitionedCall")
    node.attr["f"].func.name = save_fn
    (dst / "saved_model.pb").write_bytes(sm.SerializeToString())
    line = assert_one_error_line(run_cli("layers", dst), "refused to load")
    assert "SaveV2" in line or "MergeV2Checkpoints" in line or "ShardedFilename" in line or "StringJoin" in line


# --- time of check, time of use -------------------------------------------------------------


def test_the_loader_reads_the_bytes_that_were_scanned(keras, tmp_path):
    """A file swapped after the scan (while TensorFlow imports) is not what gets loaded."""
    import shutil

    from gradinspect.artifacts.loading import load_artifact, open_artifact

    marker = tmp_path / "MARKER"
    L = keras.layers
    x = keras.Input((2,), name="x")
    evil = keras.Model(x, L.Lambda(marker_lambda(marker), name="evil")(L.Dense(2, name="d")(x)))
    evil.save(tmp_path / "evil.keras")
    marker.unlink()
    target = tmp_path / "model.keras"
    shutil.copyfile(SAMPLES / "mlp.keras", target)
    artifact, objects = open_artifact(target)
    shutil.copyfile(tmp_path / "evil.keras", target)  # the swap
    loaded = load_artifact(artifact, objects, unsafe=True)  # even with the loader's own guard off
    assert [layer.name for layer in loaded.model.layers] == ["x", "dense_1", "dense_2", "dense_3"]
    assert not marker.exists()


@pytest.mark.slow
def test_the_private_copy_is_removed(monkeypatch, tmp_path):
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert run_cli("layers", SAMPLES / "mlp_savedmodel").exit_code == 0
    assert run_cli("grad", SAMPLES / "mlp.keras", "--from", "dense_1", "--to", "dense_2").exit_code == 0
    import gc

    gc.collect()
    assert [p.name for p in scratch.iterdir() if p.name.startswith("gradinspect-")] == []


def test_custom_layer_registered_by_decorator_is_still_accepted(keras, tmp_path):
    """The allow-list does not break --custom-objects: a registered Keras 3 class loads and runs."""
    code = textwrap.dedent(
        """
        import keras

        @keras.saving.register_keras_serializable(package="sec")
        class Twice(keras.layers.Layer):
            def call(self, x):
                return 2 * x
        """
    )
    objects = tmp_path / "objects.py"
    objects.write_text(code)
    namespace: dict = {}
    exec(compile(code, "objects", "exec"), namespace)  # noqa: S102 (the test's own code)
    x = keras.Input((2,), name="x")
    keras.Model(x, namespace["Twice"](name="tw")(keras.layers.Dense(2, name="d")(x))).save(tmp_path / "c.keras")
    refused = run_cli("layers", tmp_path / "c.keras")
    assert refused.exit_code == 2 and "sec>Twice" in refused.stderr
    result = run_cli("grad", tmp_path / "c.keras", "--from", "d", "--to", "tw", "--custom-objects", objects)
    assert result.exit_code == 0, result.stderr
    assert json.loads(run_cli("layers", tmp_path / "c.keras", "--custom-objects", objects, "-f", "json").stdout)
