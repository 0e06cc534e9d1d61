"""Every artifact in ../shared/real_models (saved by other people, Keras 2.2.4 -> 3.4) lists correctly."""

from __future__ import annotations

import json
import math

import pytest
from conftest import run_cli

KERAS_FILES = [
    "keras224_keras2c_lstm.h5",
    "keras231_hls4ml_jettagger_conv2d.h5",
    "tfkeras230_nnvis_mlp.h5",
    "keras341_digit_cnn.keras",
    "savedmodel_keras_tf2_stock_lstm",
]
# Parameter totals from ../shared/real_models/README.md.
README_TOTALS = {
    "keras224_keras2c_lstm.h5": 4990,
    "keras231_hls4ml_jettagger_conv2d.h5": 891,
    "tfkeras230_nnvis_mlp.h5": 26506,
    "keras341_digit_cnn.keras": 34826,
    "savedmodel_keras_tf2_stock_lstm": 178761,
}


def _reference(name, path, keras, tf_keras):
    # The .keras file and the Keras-2 SavedModel each have one loader that reads them;
    # the .h5 files are checked against tf_keras, the loader of their own era.
    if name.endswith(".keras"):
        return keras.saving.load_model(path, compile=False)
    return tf_keras.models.load_model(path, compile=False)


@pytest.mark.parametrize("name", KERAS_FILES)
def test_real_model_listing(real_models, keras, tf_keras, name):
    path = real_models / name
    result = run_cli("layers", path, "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    model = _reference(name, path, keras, tf_keras)
    assert data["total_params"] == README_TOTALS[name] == model.count_params()
    assert data["trainable_params"] == sum(math.prod(w.shape) for w in model.trainable_weights)
    listed = {r["name"]: r for r in data["layers"]}
    for layer in model.layers:
        row = listed[layer.name]
        assert row["class"] == type(layer).__name__
        assert row["params"] == layer.count_params()
        shape = layer.output_shape if hasattr(layer, "output_shape") else tuple(layer.output.shape)
        if isinstance(shape, list):
            shape = shape[0]
        assert tuple(row["output_shape"]) == tuple(shape), layer.name
    assert [r["name"] for r in data["layers"] if r["class"] != "InputLayer"] == [
        layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"
    ]


@pytest.mark.slow
def test_nnvis_keeps_its_saved_input_shape(real_models):
    """Keras 3 reads this tf.keras 2.3 file with input (None, None, 784); gradinspect keeps (None, 784)."""
    from gradinspect.artifacts.loading import load_model

    loaded = load_model(real_models / "tfkeras230_nnvis_mlp.h5")
    assert loaded.loader == "tf_keras"
    assert tuple(loaded.model.inputs[0].shape) == (None, 784)
    assert "input shape" in loaded.note
    data = json.loads(run_cli("layers", real_models / "tfkeras230_nnvis_mlp.h5", "-f", "json").stdout)
    assert data["model"]["inputs"] == [{"name": "dense_3_input", "shape": [None, 784], "dtype": "float32"}]


@pytest.mark.slow
def test_keras2_hard_sigmoid_lstm_loads_with_its_own_formula(real_models):
    """Keras 3 redefined hard_sigmoid; this Keras 2.2.4 LSTM uses it, so tf_keras loads it."""
    from gradinspect.artifacts.loading import load_model

    loaded = load_model(real_models / "keras224_keras2c_lstm.h5")
    assert loaded.loader == "tf_keras"
    assert "hard_sigmoid" in loaded.note


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("tfkeras210_charlm_bilstm_two_inputs.h5", "Keras 3 cannot read Keras 2.10.0 LSTM configs"),
        ("keras224_keras2c_lstm.h5", "Keras 3 would compute other numbers: the file uses hard_sigmoid"),
        ("tfkeras230_nnvis_mlp.h5", "Keras 3 reads this Keras 2.3.0-tf file with another input shape"),
    ],
)
def test_a_tf_keras_fallback_says_what_happened_not_keras_3s_error(real_models, name, says):
    """The note reads as what happened ("loaded with tf_keras (...)"), not as Keras 3's failure with
    its advice about registering custom classes."""
    result = run_cli("grad", real_models / name, "--all", "--random", "2", "--format", "json")
    assert result.exit_code == 0, result.stderr
    notes = [n for n in json.loads(result.stdout)["notes"] if "tf_keras" in n]
    assert len(notes) == 1 and notes[0].startswith(f"loaded with tf_keras ({says}"), notes
    assert not any(word in notes[0] for word in ("Unrecognized", "register_keras_serializable", "Could not locate"))


def test_half_plus_two_savedmodel(real_models):
    result = run_cli("layers", real_models / "savedmodel_tf2_half_plus_two", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"]["format"] == "savedmodel"
    assert data["model"]["inputs"] == [{"name": "x", "shape": [1], "dtype": "float32"}]
    sigs = {s["key"]: s for s in data["signatures"]}
    assert set(sigs) >= {"serving_default", "regress_x_to_y"}
    assert sigs["serving_default"]["outputs"] == [{"name": "y", "shape": [1], "dtype": "float32"}]
    (root,) = data["layers"]
    assert [(v["name"], v["shape"]) for v in root["variables"]] == [("a", []), ("b", []), ("c", [])]
    assert data["total_params"] == 3


def test_real_models_loaded_predict_like_their_reference(real_models, keras, tf_keras):
    """The loader gives back the saved weights: predictions equal an independent load's."""
    import numpy as np

    from gradinspect.artifacts.loading import load_model

    rng = np.random.default_rng(0)
    for name in KERAS_FILES:
        path = real_models / name
        loaded = load_model(path).model
        ref = _reference(name, path, keras, tf_keras)
        shape = (2,) + tuple(ref.inputs[0].shape[1:])
        x = rng.normal(size=shape).astype("float32")
        np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(ref(x)), rtol=1e-5, atol=1e-6, err_msg=name)
