"""engine.losses and engine.objective: each loss against its formula in numpy, aimed at named outputs,
and its checks before anything is loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

Y = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=np.float32)
P = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=np.float32)  # probability rows


@pytest.mark.parametrize(
    "spec,y,expected",
    [
        ("sum", Y, Y.sum()),
        ("mean", Y, Y.mean()),
        ("sumsq", Y, np.square(Y).sum()),
        ("unit:2", Y, Y[:, 2].sum()),
        ("unit:-1", Y, Y[:, -1].sum()),
        ("logprob:pred", P, np.log(0.7) + np.log(0.6)),
        ("logprob:1", P, np.log(0.2) + np.log(0.3)),
    ],
)
def test_losses_match_their_formulas(keras, spec, y, expected):
    import tensorflow as tf

    from gradinspect.engine.losses import term_function

    value = term_function(spec)(tf.constant(y), None)
    assert float(value.numpy()) == pytest.approx(float(expected), rel=1e-6)


def test_auto_is_logprob_on_probability_rows_and_sum_elsewhere(keras):
    import tensorflow as tf

    from gradinspect.engine.entries import loss_name
    from gradinspect.engine.objective import OutputChoice, build_objective

    objective = build_objective("auto", ["probs", "raw"], OutputChoice(), {})
    value = objective([tf.constant(P), tf.constant(Y)])
    assert float(value.numpy()) == pytest.approx(np.log(0.7) + np.log(0.6) + float(Y.sum()), rel=1e-6)
    assert loss_name(objective.terms, objective.ran) == "logprob:pred(probs) + sum(raw)"
    assert any("'probs' holds probability rows" in n for n in objective.notes)


def test_keras_loss_differentiates_through_the_softmax_output_itself(keras):
    """Keras keeps the logits on a softmax output; the loss must still flow through the output tensor."""
    import tensorflow as tf

    from gradinspect.engine.objective import OutputChoice, build_objective

    labels = np.array([0, 2])
    layer = keras.layers.Dense(3, activation="softmax")
    x = tf.constant(Y)
    objective = build_objective("sparse_categorical_crossentropy", ["cls"], OutputChoice(), {"cls": labels})
    with tf.GradientTape() as tape:
        p = layer(x)
        tape.watch(p)
        loss = objective([p])
    grad = tape.gradient(loss, p)
    assert grad is not None
    # d mean(-log(p_y / Σp)) / dp = (1/N)(1/Σp - [j = y]/p_y): the independent formula.
    probs = p.numpy().astype(np.float64)
    expected = np.tile(1 / probs.sum(axis=1, keepdims=True), (1, 3))
    expected[np.arange(2), labels] -= 1 / probs[np.arange(2), labels]
    np.testing.assert_allclose(grad.numpy(), expected / 2, rtol=1e-5)


def test_a_loss_aimed_at_named_outputs_with_their_own_targets(keras):
    import tensorflow as tf

    from gradinspect.engine.objective import OutputChoice, build_objective

    ya, yb = np.zeros_like(Y), np.ones_like(P)
    objective = build_objective("mse", ["out_a", "out_b"], OutputChoice(("out_a", "out_b")), {"out_a": ya, "out_b": yb})
    value = objective([tf.constant(Y), tf.constant(P)])
    expected = np.mean(np.square(Y - ya)) + np.mean(np.square(P - yb))
    assert float(value.numpy()) == pytest.approx(float(expected), rel=1e-6)
    unit = build_objective("unit:1", ["out_a", "out_b"], OutputChoice(("out_b",)), {})
    assert float(unit([tf.constant(Y), tf.constant(P)]).numpy()) == pytest.approx(0.5, rel=1e-6)


def test_a_loss_of_one_output_on_a_two_output_model_must_be_aimed():
    from gradinspect.engine.objective import OutputChoice, build_objective
    from gradinspect.errors import GradientError

    with pytest.raises(GradientError, match=r"2 outputs \(out_a, out_b\); aim the loss with --model-output NAME"):
        build_objective("unit:0", ["out_a", "out_b"], OutputChoice(), {})
    with pytest.raises(GradientError, match="no output 'out_c'"):
        build_objective("sum", ["out_a", "out_b"], OutputChoice(("out_c",)), {})
    with pytest.raises(GradientError, match="on output 'out_b' compares it with a target"):
        build_objective("mse", ["out_a", "out_b"], OutputChoice(("out_a", "out_b")), {"out_a": Y})


@pytest.mark.parametrize(
    "spec,target,message",
    [
        ("nope", False, "unknown loss"),
        ("unit:x", False, "expected unit:K"),
        ("logprob:x", False, "expected logprob:K"),
        ("mse", False, "give --target FILE"),
    ],
)
def test_bad_loss_specs_are_refused_without_tensorflow(spec, target, message):
    code = (
        "import sys\n"
        "from gradinspect.engine.losses import check_loss_spec\n"
        "from gradinspect.errors import GradientError\n"
        f"try:\n    check_loss_spec({spec!r}, {target})\nexcept GradientError as e:\n    print(e)\n"
        "print(any(m.split('.')[0] == 'tensorflow' for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    lines = out.stdout.strip().splitlines()
    assert message in lines[0] and lines[-1] == "False"


def test_unit_out_of_range_names_the_units(keras):
    import tensorflow as tf

    from gradinspect.engine.losses import term_function
    from gradinspect.errors import GradientError

    with pytest.raises(GradientError, match=r"the output has 3 units \(0..2\)"):
        term_function("unit:3")(tf.constant(Y), None)


def _loaded(config: dict, training: dict | None = None):
    from gradinspect.artifacts.formats import Artifact, ModelFormat
    from gradinspect.artifacts.loading import LoadedModel

    return LoadedModel(None, Artifact(Path("m.h5"), ModelFormat.H5, config, training_config=training), "tf_keras")


@pytest.mark.parametrize(
    "saved,expected",
    [
        ("mean_squared_error", "mse"),
        (
            {"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": False}},
            "sparse_categorical_crossentropy",
        ),
        ({"class_name": "function", "config": "binary_crossentropy"}, "binary_crossentropy"),
    ],
)
def test_compiled_loss_reads_the_saved_loss(saved, expected):
    from gradinspect.engine.losses import compiled_losses

    losses, weights = compiled_losses(_loaded({"class_name": "Sequential"}, {"loss": saved}), ["out"])
    assert losses == {"out": expected} and weights == {}


def test_compiled_losses_per_output_with_weights():
    from gradinspect.engine.losses import compiled_losses

    config = {"class_name": "Functional", "compile_config": {"loss": ["mse", "mae"], "loss_weights": [1.0, 0.5]}}
    assert compiled_losses(_loaded(config), ["a", "b"]) == ({"a": "mse", "b": "mae"}, {"a": 1.0, "b": 0.5})
    by_name = {"loss": {"b": "mae", "a": "mse"}, "loss_weights": {"b": 2.0}}
    assert compiled_losses(_loaded({"class_name": "Functional"}, by_name), ["a", "b"]) == (
        {"b": "mae", "a": "mse"},
        {"b": 2.0},
    )


def test_compiled_loss_from_logits_asks_for_an_explicit_loss():
    from gradinspect.engine.losses import compiled_losses
    from gradinspect.errors import GradientError

    saved = {"class_name": "CategoricalCrossentropy", "config": {"from_logits": True}}
    with pytest.raises(GradientError, match="from_logits=True"):
        compiled_losses(_loaded({"class_name": "Sequential"}, {"loss": saved}), ["out"])
