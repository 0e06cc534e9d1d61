"""The loader returns a live model with the saved weights, for every format."""

from __future__ import annotations

import numpy as np
import pytest

from gradinspect.artifacts.loading import load_model
from gradinspect.errors import ModelLoadError


@pytest.mark.parametrize("name", ["nested", "shared", "cnn", "embed"])
@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_keras3_formats_predict_like_the_original(zoo, name, ext):
    models, paths = zoo
    model = models[name]
    loaded = load_model(paths[(name, ext)])
    assert loaded.loader == "keras"
    rng = np.random.default_rng(0)
    xs = []
    for t in model.inputs:
        shape = (3,) + tuple(t.shape[1:])
        xs.append(
            rng.integers(0, 10, shape).astype("int32")
            if "int" in str(t.dtype)
            else rng.normal(size=shape).astype("float32")
        )
    np.testing.assert_allclose(np.asarray(loaded.model(xs)), np.asarray(model(xs)), rtol=1e-6, atol=1e-6)


def test_tf_keras_savedmodel_and_plain_export(keras):
    from conftest import SAMPLES

    x = np.array([[0.5, -1.0], [2.0, 0.25]], dtype="float32")
    sm = load_model(SAMPLES / "mlp_savedmodel")
    assert sm.loader == "tf_keras"
    assert [layer.name for layer in sm.model.layers] == ["x", "dense_1", "dense_2", "dense_3"]

    exported = load_model(SAMPLES / "mlp_export")
    assert exported.loader == "tf.saved_model"
    reference = keras.saving.load_model(SAMPLES / "mlp.keras", compile=False)
    out = exported.model.signatures["serving_default"](x=x)
    np.testing.assert_allclose(np.asarray(next(iter(out.values()))), np.asarray(reference(x)), rtol=1e-6)


def test_keras_file_is_never_handed_to_tf_keras(keras, tmp_path):
    """A .keras that Keras 3 cannot rebuild is an error, never a silent tf_keras load."""
    from conftest import edited_keras_copy

    def fewer_units(cfg):
        cfg["config"]["layers"][1]["config"]["units"] = 7  # the saved weights no longer fit

    p = edited_keras_copy(tmp_path / "bad_units.keras", fewer_units)
    with pytest.raises(ModelLoadError, match="Keras could not load"):
        load_model(p)


def test_a_deserialization_failure_gives_the_layers_own_reason(keras, tmp_path):
    """Keras 3 wraps a layer's error in generic "could not be deserialized properly" errors; the one
    line names the real cause (an argument this Keras does not take), not the wrapper."""
    import json
    import zipfile

    from conftest import assert_one_error_line, run_cli

    x = keras.Input((8, 8, 3))
    y = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.RandomRotation(0.1, name="rot")(x)))
    keras.Model(x, y).save(tmp_path / "ok.keras")
    with zipfile.ZipFile(tmp_path / "ok.keras") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(members["config.json"])
    next(la for la in config["config"]["layers"] if la["class_name"] == "RandomRotation")["config"]["value_range"] = [
        0,
        9,
        3,
    ]
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    line = assert_one_error_line(run_cli("grad", tmp_path / "bad.keras", "--all"))
    assert "Unrecognized keyword arguments passed to RandomRotation: {'value_range': [0, 9, 3]}" in line
    assert "deserialized properly" not in line


def test_the_specific_line_is_the_innermost_that_is_not_a_wrapper():
    from gradinspect.formatting import specific_line

    try:
        try:
            raise ValueError("Unrecognized keyword arguments passed to Foo: {'bar': 1}")
        except ValueError as inner:
            raise TypeError(
                f"Error when deserializing class 'Foo' using config={{'bar': 1}}.\n\nException encountered: {inner}"
            ) from inner
    except TypeError as middle:
        outer = TypeError("<class 'Functional'> could not be deserialized properly. Please ensure ...")
        outer.__context__ = middle
    assert specific_line(outer) == "Unrecognized keyword arguments passed to Foo: {'bar': 1}"
    assert specific_line(KeyError("x")) == "'x'"  # nothing more specific: the exception's own line
