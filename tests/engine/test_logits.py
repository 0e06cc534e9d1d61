"""``--loss logit:K``: unit K of the logits, the input of the output's final softmax, read by running
that softmax as linear (tf-keras-vis's ``ReplaceToLinear``), for a Dense with ``activation='softmax'``,
a ``Softmax`` layer and an ``Activation('softmax')`` (issue 25 item 12). Reference: an independent
tape on the logits computed in the test from the same layers; float32, rtol 1e-5."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_error_line, run_cli


@pytest.fixture(scope="module")
def heads(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("logits")
    L = keras.layers
    keras.utils.set_random_seed(7)
    x = keras.Input((5,), name="x")
    h = L.Dense(6, activation="tanh", name="h")(x)
    models = {
        "dense": keras.Model(x, L.Dense(4, activation="softmax", name="probs")(h)),
        "layer": keras.Model(x, L.Softmax(name="sm")(L.Dense(4, name="logits")(h))),
        "activation": keras.Model(x, L.Activation("softmax", name="act")(L.Dense(4, name="logits2")(h))),
        "none": keras.Model(x, L.Dense(4, name="lin")(h)),
    }
    for name, model in models.items():
        model.save(d / f"{name}.keras")
    np.save(d / "x.npy", np.random.default_rng(7).normal(size=(3, 5)).astype("float32"))
    return d, models


@pytest.mark.parametrize(("name", "dense"), [("dense", "probs"), ("layer", "logits"), ("activation", "logits2")])
def test_logit_k_differentiates_the_logits(heads, name, dense):
    import tensorflow as tf

    d, models = heads
    model = models[name]
    out = d / f"{name}.npz"
    args = ("grad", d / f"{name}.keras", "--pair", f"h:{dense}", "--loss", "logit:2", "--input", d / "x.npy")
    result = run_cli(*args, "--save-npz", out, "--force", "-f", "json")
    assert result.exit_code == 0, result.stderr
    x = np.load(d / "x.npy")
    layer = model.get_layer(dense)
    with tf.GradientTape() as tape:
        logits = tf.matmul(model.get_layer("h")(x), layer.kernel) + layer.bias  # before any softmax
        loss = tf.reduce_sum(logits[:, 2])
    expected = tape.gradient(loss, [model.get_layer("h").kernel, layer.kernel])
    saved = np.load(out)
    assert json.loads(result.stdout)["loss"]["value"] == pytest.approx(float(loss), rel=1e-5)
    np.testing.assert_allclose(saved["weight/h/kernel"], expected[0].numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(saved[f"weight/{dense}/kernel"], expected[1].numpy(), rtol=1e-5, atol=1e-7)


def test_logit_k_without_a_softmax_is_one_error_line(heads):
    d, _ = heads
    line = assert_one_error_line(run_cli("grad", d / "none.keras", "--all", "--loss", "logit:0"))
    assert "does not end in a softmax" in line and "unit:K" in line


def test_the_softmax_is_restored_after_the_pass(heads):
    """A live model handed to the API keeps its softmax: its rows sum to 1 after a logit:K run."""
    import gradinspect

    d, models = heads
    x = np.load(d / "x.npy")
    gradinspect.inspect_gradients(models["dense"], x, [("h", "probs")], loss="logit:1")
    np.testing.assert_allclose(np.asarray(models["dense"](x)).sum(axis=1), 1.0, rtol=1e-6)
