"""`gradinspect layers`: the no-TensorFlow listing agrees with Keras's own model, layer by layer."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import REPO, SAMPLES, run_cli


def _keras_rows(model, prefix=""):
    """What Keras itself says: (path, class, output shape, params, trainable params)."""
    rows = []
    for layer in model.layers:
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            shape = None
        rows.append(
            (
                prefix + layer.name,
                type(layer).__name__,
                shape,
                layer.count_params(),
                sum(math.prod(w.shape) for w in layer.trainable_weights),
            )
        )
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):
            rows.extend(_keras_rows(layer, f"{prefix}{layer.name}/"))
    return rows


def _listed_rows(path):
    result = run_cli("layers", path, "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    rows = [
        (
            r["name"],
            r["class"],
            tuple(r["output_shape"]) if r["output_shape"] else None,
            r["params"],
            r["trainable_params"],
        )
        for r in data["layers"]
    ]
    return data, rows


@pytest.mark.parametrize("name", ["nested", "shared", "cnn", "embed"])
@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_listing_matches_keras(zoo, name, ext):
    models, paths = zoo
    model = models[name]
    data, rows = _listed_rows(paths[(name, ext)])
    assert rows == _keras_rows(model)
    assert data["total_params"] == model.count_params()
    assert data["trainable_params"] == sum(math.prod(w.shape) for w in model.trainable_weights)
    assert data["non_trainable_params"] == data["total_params"] - data["trainable_params"]
    # Input names as the saved file knows them (an unnamed Input is named after its InputLayer).
    assert [i["name"] for i in data["model"]["inputs"]] == [t._keras_history[0].name for t in model.inputs]
    assert [tuple(i["shape"]) for i in data["model"]["inputs"]] == [tuple(t.shape) for t in model.inputs]


def test_nested_model_is_a_tree(zoo):
    _, paths = zoo
    data, _ = _listed_rows(paths[("nested", "keras")])
    by_name = {r["name"]: r for r in data["layers"]}
    assert by_name["inner"]["depth"] == 0 and by_name["inner/i1"]["depth"] == 1
    assert by_name["inner"]["params"] == by_name["inner/i1"]["params"] + by_name["inner/i2"]["params"]
    assert by_name["inner/i2"]["trainable"] is False and by_name["inner/i2"]["trainable_params"] == 0
    assert by_name["bn"]["params"] == 12 and by_name["bn"]["trainable_params"] == 4  # gamma only; moving stats are not


def test_tf_keras_h5_matches_keras(tf_keras, tmp_path):
    """A legacy .h5 written by tf.keras (Keras 2), with a nested Sequential and BatchNormalization."""
    L = tf_keras.layers
    inner = tf_keras.Sequential([L.Dense(3, name="a"), L.BatchNormalization(name="bn")], name="inner")
    x = tf_keras.Input((4,), name="x")
    h = inner(x)
    h = L.Conv1D(2, 2, padding="same", name="conv")(L.Reshape((3, 1), name="r")(h))
    model = tf_keras.Model(x, L.Dense(1, name="y")(L.Flatten(name="f")(h)))
    p = tmp_path / "tfk.h5"
    model.save(p)
    data, rows = _listed_rows(p)
    assert data["total_params"] == model.count_params()
    assert data["trainable_params"] == sum(math.prod(w.shape) for w in model.trainable_weights)
    by_name = {r[0]: r for r in rows}
    for layer in model.layers:
        expected = layer.output_shape[0] if isinstance(layer.output_shape, list) else layer.output_shape  # InputLayer
        assert by_name[layer.name][2] == tuple(expected), layer.name
        assert by_name[layer.name][3] == layer.count_params()
    assert by_name["inner/bn"][3:] == (12, 6)


def test_sample_models_list(keras):
    for name in ("mlp.keras", "mlp.h5", "cnn.keras", "multi_input.keras"):
        model = keras.saving.load_model(SAMPLES / name, compile=False)
        data, rows = _listed_rows(SAMPLES / name)
        assert rows == _keras_rows(model), name
        assert data["total_params"] == model.count_params()


def test_mlp_has_the_documented_layers():
    data, rows = _listed_rows(SAMPLES / "mlp.keras")
    assert [r[0] for r in rows] == ["x", "dense_1", "dense_2", "dense_3"]
    assert data["model"] == {
        "path": str(SAMPLES / "mlp.keras"),
        "format": "keras",
        "name": "mlp",
        "keras_version": data["model"]["keras_version"],
        "loader": "static (no TensorFlow)",
        "inputs": [{"name": "x", "shape": [None, 2], "dtype": "float32"}],
    }


def test_layers_never_imports_tensorflow_for_keras_h5_and_plain_savedmodels():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from gradinspect.cli import main\n"
        "for m in sys.argv[1:]:\n"
        "    r = CliRunner().invoke(main, ['layers', m])\n"
        "    assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(main, ['--help'])\n"
        "assert r.exit_code == 0\n"
        "heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print(len(heavy), heavy[:3])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *(str(SAMPLES / m) for m in ("mlp.keras", "mlp.h5", "cnn.keras", "mlp_export"))],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert out.stdout.strip() == "0 []"


@pytest.mark.parametrize("name", ["mlp_export", "half_plus_two"])
def test_static_savedmodel_listing_matches_what_tensorflow_restores(keras, real_models, name):
    """Signatures and variables read from the protobuf equal those of the object tf.saved_model.load restores."""
    import tensorflow as tf

    path = SAMPLES / name if name == "mlp_export" else real_models / "savedmodel_tf2_half_plus_two"
    data, _ = _listed_rows(path)
    assert data["model"]["loader"] == "static (no TensorFlow)"
    restored = tf.saved_model.load(str(path))
    want_sigs = {}
    for key, fn in restored.signatures.items():
        _, kwargs = fn.structured_input_signature
        want_sigs[key] = sorted((k, spec.shape.as_list(), spec.dtype.name) for k, spec in kwargs.items())
    got_sigs = {s["key"]: sorted((i["name"], i["shape"], i["dtype"]) for i in s["inputs"]) for s in data["signatures"]}
    assert got_sigs == want_sigs
    want_vars = {
        (v.name.split(":")[0], tuple(v.shape.as_list()), bool(v.trainable))
        for v in tf.train.TrackableView(restored).descendants()
        if isinstance(v, tf.Variable)
    }
    got_vars = {
        (v["name"] if r["name"] == "(root)" else f"{r['name']}/{v['name']}", tuple(v["shape"]), v["trainable"])
        for r in data["layers"]
        for v in r["variables"]
    }
    assert got_vars == want_vars


def test_savedmodel_with_keras_metadata(keras):
    data, rows = _listed_rows(SAMPLES / "mlp_savedmodel")
    assert data["model"]["format"] == "savedmodel-keras"
    assert data["model"]["loader"] == "tf_keras"
    assert [r[0] for r in rows] == ["x", "dense_1", "dense_2", "dense_3"]
    assert rows[1][2:] == ((None, 3), 9, 9)
    assert data["total_params"] == 20


def test_savedmodel_without_keras_metadata_lists_signatures_and_scopes():
    data, _ = _listed_rows(SAMPLES / "mlp_export")
    assert data["model"]["format"] == "savedmodel"
    sig = {s["key"]: s for s in data["signatures"]}["serving_default"]
    assert sig["inputs"] == [{"name": "x", "shape": [None, 2], "dtype": "float32"}]
    scopes = {r["name"]: r for r in data["layers"]}
    assert set(scopes) == {"dense_1", "dense_2", "dense_3"}
    assert [(v["name"], v["shape"]) for v in scopes["dense_1"]["variables"]] == [("kernel", [2, 3]), ("bias", [3])]
    assert data["total_params"] == 20
