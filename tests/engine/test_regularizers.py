"""``--loss compiled`` is the loss Keras trains on: the compiled loss (a batch mean) plus the model's
regularization losses (issue 25 item 11), as keract's ``get_gradients_of_trainable_weights`` takes
it. The reference is an independent tape in this test: loss = mean(mse) + sum(model.losses).
``--no-regularizers`` leaves the penalties out: a kernel's gradient then differs by exactly 2λW.

Tolerances: float32 sums over 32 samples, relative 1e-6 against the same float32 tape (one batch)
and 1e-5 when 4 batches are merged in float64 (the per-batch sums round differently).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

LAMBDA = 0.01


@pytest.fixture(scope="module")
def regularized(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("regularized")
    keras.utils.set_random_seed(5)
    L, R = keras.layers, keras.regularizers
    x = keras.Input((6,), name="x")
    h = L.Dense(8, activation="tanh", kernel_regularizer=R.L2(LAMBDA), name="hidden")(x)
    y = L.Dense(3, kernel_regularizer=R.L2(LAMBDA), bias_regularizer=R.L1(LAMBDA), name="out")(h)
    model = keras.Model(x, y)
    model.compile(loss="mse", optimizer="sgd")
    model.save(d / "m.keras")
    rng = np.random.default_rng(5)
    np.save(d / "x.npy", rng.normal(size=(32, 6)).astype("float32"))
    np.save(d / "y.npy", rng.normal(size=(32, 3)).astype("float32"))
    return d, model


def _reference(model, d, regularizers=True):
    import tensorflow as tf

    x, y = np.load(d / "x.npy"), np.load(d / "y.npy")
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.reduce_mean(tf.square(model(x) - y), axis=-1))
        if regularizers:
            loss += tf.add_n(model.losses)
    weights = {f"weight/{v.path.split('/')[0]}/{v.path.split('/')[1]}": v for v in model.trainable_weights}
    grads = tape.gradient(loss, list(weights.values()))
    return float(loss), {k: g.numpy() for k, g in zip(weights, grads)}


def _grad(d, *args):
    out = d / f"g{abs(hash(args))}.npz"
    base = ("grad", d / "m.keras", "--all", "--loss", "compiled", "--input", d / "x.npy", "--target", d / "y.npy")
    result = run_cli(*base, "--save-npz", out, "--force", "-f", "json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), np.load(out)


@pytest.mark.parametrize(("batch", "rtol"), [(None, 1e-6), ("8", 1e-5)])
def test_compiled_loss_includes_the_regularization_losses_keras_trains_on(regularized, batch, rtol):
    d, model = regularized
    loss, expected = _reference(model, d)
    report, arrays = _grad(d, *(("--batch-size", batch) if batch else ("--batch-size", "32")))
    assert report["loss"]["value"] == pytest.approx(loss, rel=rtol)
    assert any("adds the model's 3 regularization loss(es)" in n for n in report["notes"]), report["notes"]
    for key, g in expected.items():
        np.testing.assert_allclose(arrays[key], g, rtol=rtol, atol=1e-7, err_msg=key)


def test_no_regularizers_differs_by_exactly_the_penalty_gradient(regularized):
    d, model = regularized
    _, expected = _reference(model, d, regularizers=False)
    report, without = _grad(d, "--no-regularizers", "--batch-size", "32")
    _, with_ = _grad(d, "--batch-size", "32")
    assert not any("regularization" in n for n in report["notes"])
    for key, g in expected.items():
        np.testing.assert_allclose(without[key], g, rtol=1e-6, atol=1e-7, err_msg=key)
    kernel = np.asarray(model.get_layer("hidden").kernel.numpy(), np.float64)
    np.testing.assert_allclose(
        with_["weight/hidden/kernel"] - without["weight/hidden/kernel"], 2 * LAMBDA * kernel, rtol=1e-4, atol=1e-7
    )


def test_verify_agrees_with_central_differences_of_the_regularized_loss(regularized):
    """verify's finite differences take the same loss (with the penalties), so the tape agrees."""
    d, _ = regularized
    args = ("verify", d / "m.keras", "--layer", "hidden", "--loss", "compiled", "--input", d / "x.npy")
    result = run_cli(*args, "--target", d / "y.npy", "-f", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] and {e["target"] for e in report["entries"]} >= {"weight/hidden/kernel"}
