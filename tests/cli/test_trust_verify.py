"""verify without false alarms or blind spots: shared layers per call, kinks, input gradients, resolution."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from conftest import run_cli


def _verify(path, layer, *args):
    result = run_cli("verify", path, "--layer", layer, "-f", "json", *args)
    return result, json.loads(result.stdout) if result.stdout else None


def test_a_shared_layer_is_checked_call_by_call(keras, tmp_path):
    keras.utils.set_random_seed(2)
    x = keras.Input((4,), name="x")
    shared = keras.layers.Dense(4, name="shared")
    keras.Model(x, keras.layers.Dense(1, name="head")(shared(shared(x)))).save(tmp_path / "shared.keras")
    result, data = _verify(tmp_path / "shared.keras", "shared")
    assert result.exit_code == 0, result.stdout + result.stderr
    targets = [e["target"] for e in data["entries"]]
    assert targets[:4] == ["output/shared", "output/shared#1", "input/shared", "input/shared#1"]
    assert all(e["status"] == "ok" for e in data["entries"])


def test_relu_and_max_pool_kinks_are_reported_as_kinks(keras, tmp_path):
    """A zero input and zero biases put every ReLU at its kink; equal values tie in max-pooling."""
    x = keras.Input((4, 2), name="x")
    conv = keras.layers.Conv1D(2, 1, kernel_initializer="ones", bias_initializer="zeros", name="conv")(x)
    pooled = keras.layers.MaxPooling1D(2, name="pool")(keras.layers.ReLU(name="relu")(conv))
    keras.Model(x, keras.layers.Flatten(name="flat")(pooled)).save(tmp_path / "kinks.keras")
    np.save(tmp_path / "x.npy", np.zeros((1, 4, 2), dtype=np.float32))
    result, data = _verify(tmp_path / "kinks.keras", "conv", "--input", tmp_path / "x.npy", "--entries", "8")
    assert result.exit_code == 0, result.stdout
    output = data["entries"][0]
    assert output["target"] == "output/conv" and output["status"] == "kink"
    detail = output["details"][0]
    assert detail["kind"] == "kink" and detail["forward"] != pytest.approx(detail["backward"], abs=1e-3)
    assert set(detail) == {"index", "kind", "tape", "central", "forward", "backward"}
    table = run_cli("verify", tmp_path / "kinks.keras", "--layer", "conv", "--input", tmp_path / "x.npy")
    assert "kink" in table.stdout and "off only at kinks" in table.stderr


@pytest.mark.slow
def test_the_real_digit_cnn_passes_with_kinks_not_failures(real_models):
    result, data = _verify(real_models / "keras341_digit_cnn.keras", "conv2d_9", "--loss", "unit:3", "--random", "2")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert all(e["status"] in ("ok", "kink", "unresolved") for e in data["entries"])


BAD_INPUT = textwrap.dedent(
    """
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="trust_verify")
    class HalfInputGrad(keras.layers.Layer):
        \"\"\"y = w * x, whose custom gradient halves d loss / d x (and is right for w).\"\"\"

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

        def call(self, x):
            @tf.custom_gradient
            def scale(t, w):
                def grad(dy):
                    return 0.5 * dy * w, tf.reduce_sum(dy * t, axis=0)
                return t * w, grad
            return scale(x, tf.convert_to_tensor(self.w))
    """
)


@pytest.fixture(scope="module")
def half_input_grad(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("halfinput")
    (d / "layers.py").write_text(BAD_INPUT)
    ns: dict = {}
    exec(compile(BAD_INPUT, str(d / "layers.py"), "exec"), ns)  # noqa: S102 - the test's own layer
    keras.utils.set_random_seed(4)
    x = keras.Input((3,), name="x")
    h = ns["HalfInputGrad"](name="bad")(keras.layers.Dense(3, activation="tanh", name="up")(x))
    keras.Model(x, keras.layers.Dense(2, name="down")(h)).save(d / "m.keras")
    return d


def test_a_wrong_input_gradient_names_its_own_layer(half_input_grad):
    d = half_input_grad
    result, data = _verify(d / "m.keras", "bad", "--custom-objects", d / "layers.py")
    assert result.exit_code == 1
    status = {e["target"]: e["status"] for e in data["entries"]}
    assert status == {"output/bad": "ok", "input/bad": "FAIL", "weight/bad/w": "ok"}
    assert data["verdict"].startswith("layer 'bad''s own backward function is wrong: d loss / d its input")
    upstream, up = _verify(d / "m.keras", "up", "--custom-objects", d / "layers.py")
    assert upstream.exit_code == 1
    assert "already disagrees" in up["verdict"] and "a layer after it" in up["verdict"]


def test_gradients_below_float64_resolution_are_unresolved_not_ok(keras, tmp_path):
    """With --loss sum, a softmax layer's weights get exactly-zero gradients: nothing to resolve."""
    keras.utils.set_random_seed(6)
    x = keras.Input((3,), name="x")
    keras.Model(x, keras.layers.Dense(4, activation="softmax", name="cls")(x)).save(tmp_path / "s.keras")
    result, data = _verify(tmp_path / "s.keras", "cls", "--loss", "sum")
    status = {e["target"]: e["status"] for e in data["entries"]}
    assert status["weight/cls/kernel"] == "unresolved" and status["weight/cls/bias"] == "unresolved"
    assert "too small to resolve" in result.stderr


def test_a_nested_model_reports_each_inner_variable_once(tf_keras, tmp_path):
    block = tf_keras.Sequential(
        [tf_keras.layers.Dense(3, name="i1", input_shape=(3,)), tf_keras.layers.Dense(3, name="i2")], name="block"
    )
    x = tf_keras.Input((3,), name="x")
    tf_keras.Model(x, tf_keras.layers.Dense(1, name="head")(block(x))).save(tmp_path / "nested.h5")
    result, data = _verify(tmp_path / "nested.h5", "block")
    assert result.exit_code == 0, result.stdout + result.stderr
    weights = [e["target"] for e in data["entries"] if e["target"].startswith("weight/")]
    assert weights == [
        "weight/block/i1/kernel",
        "weight/block/i1/bias",
        "weight/block/i2/kernel",
        "weight/block/i2/bias",
    ]
