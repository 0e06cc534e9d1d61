"""The pre-load scan refuses code in model files unless --unsafe; the code never runs."""

from __future__ import annotations

import textwrap

import pytest
from conftest import assert_one_error_line, marker_lambda, run_cli


@pytest.fixture(scope="module")
def lambda_models(keras, tf_keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("lambda")
    marker = d / "MARKER"
    L = keras.layers
    x = keras.Input((2,), name="x")
    h = L.Dense(2, name="d1")(x)
    h = L.Lambda(marker_lambda(marker), name="evil")(h)
    model = keras.Model(x, L.Dense(1, name="d2")(h))
    model.save(d / "lambda.keras")
    model.save(d / "lambda.h5")

    nested_inner = keras.Sequential([L.Dense(2, name="n1"), L.Lambda(marker_lambda(marker), name="deep")], name="inner")
    x2 = keras.Input((2,), name="x")
    keras.Model(x2, nested_inner(x2)).save(d / "nested_lambda.keras")

    tk = tf_keras.layers
    x3 = tf_keras.Input((2,), name="x")
    h3 = tk.Lambda(marker_lambda(marker), name="evil_sm")(tk.Dense(2)(x3))
    tf_keras.Model(x3, h3).save(d / "lambda_savedmodel", save_format="tf")
    tf_keras.Model(x3, h3).save(d / "lambda_tf_keras.h5")
    marker.unlink()  # building the models ran the lambdas once
    return d, marker


@pytest.mark.parametrize(
    "name,layer",
    [
        ("lambda.keras", "evil"),
        ("lambda.h5", "evil"),
        ("nested_lambda.keras", "inner/deep"),
        ("lambda_savedmodel", "evil_sm"),
        ("lambda_tf_keras.h5", "evil_sm"),
    ],
)
def test_lambda_refused_and_never_run(lambda_models, name, layer):
    d, marker = lambda_models
    line = assert_one_error_line(run_cli("layers", d / name), str(d / name), f"layer '{layer}'", "Lambda", "--unsafe")
    assert "refused" in line
    assert not marker.exists()


@pytest.mark.parametrize("name", ["lambda.keras", "lambda.h5", "lambda_tf_keras.h5", "lambda_savedmodel"])
def test_load_model_api_refuses_lambda(lambda_models, name):
    from gradinspect.artifacts.loading import load_model
    from gradinspect.errors import UnsafeModelError

    d, marker = lambda_models
    with pytest.raises(UnsafeModelError, match="'evil"):
        load_model(d / name)
    assert not marker.exists()


def test_control_tf_keras_really_runs_the_h5_lambda(lambda_models, tf_keras):
    """Why the scan exists: tf_keras runs the Lambda's code while loading, even in safe mode."""
    d, marker = lambda_models
    try:
        tf_keras.models.load_model(d / "lambda_tf_keras.h5", compile=False, safe_mode=True)
    except Exception:  # whether or not loading succeeds, the code has run by then
        pass
    assert marker.exists()
    marker.unlink()


def test_unsafe_says_so_and_lists(lambda_models):
    d, marker = lambda_models
    result = run_cli("layers", d / "lambda.keras", "--unsafe", "--format", "csv")
    assert result.exit_code == 0
    assert "--unsafe" in result.stderr and "code in the model file may run" in result.stderr
    assert "evil,Lambda" in result.stdout
    assert not marker.exists()  # the .keras listing is static: nothing was loaded


CUSTOM_LAYER = textwrap.dedent(
    """
    import keras

    @keras.saving.register_keras_serializable(package="gi_test")
    class Scale(keras.layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}
    """
)


@pytest.fixture(scope="module")
def custom_model(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("custom")
    src = d / "scale_layer.py"
    src.write_text(CUSTOM_LAYER)
    namespace: dict = {}
    exec(compile(CUSTOM_LAYER, str(src), "exec"), namespace)  # noqa: S102 - test-local definition
    x = keras.Input((2,), name="x")
    model = keras.Model(x, namespace["Scale"](3.0, name="scale")(keras.layers.Dense(2, name="d")(x)))
    model.save(d / "custom.keras")
    return d, model


def test_custom_class_refused_without_registration(custom_model):
    d, _ = custom_model
    assert_one_error_line(run_cli("layers", d / "custom.keras"), "layer 'scale'", "gi_test>Scale", "--custom-objects")


def test_custom_class_loads_with_custom_objects(custom_model):
    import numpy as np

    from gradinspect.artifacts.loading import load_model

    d, original = custom_model
    result = run_cli("layers", d / "custom.keras", "--custom-objects", d / "scale_layer.py", "--format", "csv")
    assert result.exit_code == 0, result.stderr
    assert "scale,Scale" in result.stdout
    loaded = load_model(d / "custom.keras", custom_objects=d / "scale_layer.py")
    x = np.array([[1.0, -2.0]], dtype="float32")
    np.testing.assert_array_equal(np.asarray(loaded.model(x)), np.asarray(original(x)))


def test_custom_objects_file_that_fails_to_import(tmp_path, custom_model):
    d, _ = custom_model
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    assert_one_error_line(run_cli("layers", d / "custom.keras", "--custom-objects", bad), "--custom-objects", "boom")


def test_scan_flags_module_outside_keras_without_tensorflow():
    from pathlib import Path

    from gradinspect.artifacts.formats import Artifact, ModelFormat
    from gradinspect.artifacts.scan import scan_config

    config = {
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "Dense",
                    "config": {
                        "name": "ok",
                        "activation": {
                            "module": "builtins",
                            "class_name": "function",
                            "config": "relu",
                            "registered_name": None,
                        },
                    },
                },
                {"module": "os", "class_name": "system", "config": {"name": "bad"}, "registered_name": None},
                {
                    "module": "keras.layers",
                    "class_name": "Dense",
                    "config": {
                        "name": "act",
                        "activation": {
                            "module": "mypkg.acts",
                            "class_name": "function",
                            "config": "swishy",
                            "registered_name": "swishy",
                        },
                    },
                },
            ],
        },
    }
    findings = scan_config(Artifact(Path("m.keras"), ModelFormat.KERAS, config))
    assert [(f.layer, "os" in f.reason or "mypkg" in f.reason) for f in findings] == [("bad", True), ("act", True)]
    assert scan_config(Artifact(Path("m.keras"), ModelFormat.KERAS, config), frozenset({"system", "swishy"})) == []
