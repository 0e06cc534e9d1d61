"""Answers users can trust: meaningful default losses, losses through the recorded outputs, losses aimed at outputs.

Each test builds the kind of model users have, runs the real CLI and compares with a computation
done here, independently.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli


@pytest.fixture(scope="module")
def classifier(keras, tmp_path_factory):
    """A small softmax classifier: x (6) -> hidden (5, relu) -> cls (4, softmax)."""
    d = tmp_path_factory.mktemp("cls")
    keras.utils.set_random_seed(3)
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(5, activation="relu", name="hidden")(x)
    model = keras.Model(x, keras.layers.Dense(4, activation="softmax", name="cls")(h))
    model.save(d / "cls.keras")
    rng = np.random.default_rng(0)
    np.save(d / "x.npy", rng.standard_normal((8, 6)).astype("float32"))
    np.save(d / "labels.npy", rng.integers(0, 4, size=8))
    return d, model


def test_default_loss_on_a_softmax_classifier_is_meaningful(classifier):
    import tensorflow as tf

    d, model = classifier
    result = run_cli("grad", d / "cls.keras", "--from", "hidden", "--to", "cls", "--input", d / "x.npy", "-f", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["loss"]["spec"] == "logprob:pred"
    x = np.load(d / "x.npy")
    with tf.GradientTape() as tape:
        p = model(x)
        loss = tf.reduce_sum(tf.math.log(tf.reduce_max(p, axis=-1)))  # log p of the predicted class
    kernel = model.get_layer("cls").kernel
    expected = tape.gradient(loss, kernel).numpy()
    assert data["loss"]["value"] == pytest.approx(float(loss), rel=1e-6)
    weights = {w["variable"]: w for w in data["pairs"][0]["weights"] if w["layer"] == "cls"}
    assert weights["kernel"]["stats"]["norm"] == pytest.approx(float(np.linalg.norm(expected)), rel=1e-5)
    assert weights["kernel"]["stats"]["norm"] > 1e-3  # far above float32 rounding
    table = run_cli("grad", d / "cls.keras", "--from", "hidden", "--to", "cls", "--input", d / "x.npy")
    assert "loss logprob:pred" in table.stdout.splitlines()[0]
    assert "--loss auto" in table.stdout


def test_check_names_the_loss_and_sum_on_softmax_is_flagged(classifier):
    d, _ = classifier
    result = run_cli("check", d / "cls.keras", "--input", d / "x.npy", "-f", "json")
    assert json.loads(result.stdout)["loss"]["spec"] == "logprob:pred"
    flagged = run_cli("grad", d / "cls.keras", "--all", "--input", d / "x.npy", "--loss", "sum", "-f", "json")
    assert any("rounding noise" in n for n in json.loads(flagged.stdout)["notes"])


def test_crossentropy_flows_through_the_softmax_output(classifier):
    """Keras computes crossentropy from the logits it keeps on the output; the recorded output still gets
    d loss / d p, equal to the formula (1/N)(1/Σp - [j = y]/p_y)."""
    d, model = classifier
    args = ["--from", "hidden", "--to", "cls", "--input", d / "x.npy", "--target", d / "labels.npy"]
    result = run_cli(
        "grad", d / "cls.keras", *args, "--loss", "sparse_categorical_crossentropy", "--save-npz", d / "g.npz"
    )
    assert result.exit_code == 0, result.stderr
    p = model(np.load(d / "x.npy")).numpy().astype(np.float64)
    labels = np.load(d / "labels.npy")
    expected = np.tile(1 / p.sum(axis=1, keepdims=True), (1, 4))
    expected[np.arange(8), labels] -= 1 / p[np.arange(8), labels]
    with np.load(d / "g.npz") as saved:
        np.testing.assert_allclose(saved["output/cls"], expected / 8, rtol=1e-4)


@pytest.fixture(scope="module")
def two_heads(keras, tmp_path_factory):
    """x -> out_a (2, linear) and x -> hidden -> out_b (3, softmax), compiled with per-output losses and weights."""
    d = tmp_path_factory.mktemp("heads")
    keras.utils.set_random_seed(5)
    x = keras.Input((4,), name="x")
    a = keras.layers.Dense(2, name="out_a")(x)
    b = keras.layers.Dense(3, activation="softmax", name="out_b")(keras.layers.Dense(3, name="hidden")(x))
    model = keras.Model(x, [a, b])
    model.compile(
        loss={"out_a": "mse", "out_b": "sparse_categorical_crossentropy"}, loss_weights={"out_a": 1.0, "out_b": 0.5}
    )
    model.save(d / "heads.keras")
    rng = np.random.default_rng(1)
    x_np = rng.standard_normal((5, 4)).astype("float32")
    ya = rng.standard_normal((5, 2)).astype("float32")
    yb = rng.integers(0, 3, size=5)
    np.save(d / "x.npy", x_np)
    np.save(d / "ya.npy", ya)
    np.savez(d / "targets.npz", out_a=ya, out_b=yb)
    return d, model, x_np, ya, yb


def _mse(y, t):
    return float(np.mean(np.square(y - t)))


def _scce(p, labels):
    p = p / p.sum(axis=1, keepdims=True)
    return float(np.mean(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-7, 1 - 1e-7))))


def test_a_loss_per_output_by_name(two_heads):
    d, model, x, ya, _ = two_heads
    ya_out, yb_out = (t.numpy() for t in model(x))
    base = ["grad", d / "heads.keras", "--all", "--input", d / "x.npy", "-f", "json"]
    aimed = run_cli(*base, "--loss", "mse", "--model-output", f"out_a={d / 'ya.npy'}")
    assert aimed.exit_code == 0, aimed.stderr
    assert json.loads(aimed.stdout)["loss"]["value"] == pytest.approx(_mse(ya_out, ya), rel=1e-5)
    unit = run_cli(*base, "--loss", "unit:2", "--model-output", "out_b")
    assert json.loads(unit.stdout)["loss"]["value"] == pytest.approx(float(yb_out[:, 2].sum()), rel=1e-5)
    refused = run_cli(*base, "--loss", "unit:2")
    assert refused.exit_code == 2 and "aim the loss with --model-output NAME" in refused.stderr


def test_compiled_multi_output_loss_with_weights(two_heads):
    d, model, x, ya, yb = two_heads
    ya_out, yb_out = (t.numpy() for t in model(x))
    result = run_cli(
        "grad", d / "heads.keras", "--all", "--input", d / "x.npy", "--loss", "compiled",
        "--target", d / "targets.npz", "-f", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    expected = _mse(ya_out, ya) + 0.5 * _scce(yb_out.astype(np.float64), yb)
    assert data["loss"]["value"] == pytest.approx(expected, rel=1e-5)
    assert data["loss"]["spec"] == "mse(out_a) + 0.5·sparse_categorical_crossentropy(out_b)"
