"""Models inside models: every recorded name holds d loss / d that tensor, and a variable reached
through two pair ends is one gradient (issue 25, items 1 and 16).

The models are chains of Dense layers without activations and the loss is ``sum`` (what ``auto``
picks for outputs that are not probabilities), so every gradient has a closed form computed here
in float64 from the saved weights: d sum(y) / d (a layer's output) = 1 · W_last^T ⋯ W_next^T, the
same for every sample, and d sum(y) / d W = (its input)^T · (d sum(y) / d its output).
Tolerance: float32 sums of a few terms of size ~1, so rtol 1e-5 with atol 1e-6.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

TOL = {"rtol": 1e-5, "atol": 1e-6}


def _weights(model, name):
    kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer(name).get_weights())
    return kernel, bias


def _upstream(*kernels):
    """d sum(y) / d the tensor entering the first of ``kernels`` (a chain ending at the output)."""
    g = np.ones((1, kernels[-1].shape[1]))
    for kernel in reversed(kernels):
        g = g @ kernel.T
    return g


@pytest.fixture(scope="module")
def nested(keras, tmp_path_factory):
    """x(6) -> pre(5) -> block -> [mid(5) -> block] -> post(2), block a Functional model iin(5) -> bd(5),
    called once (``once``) and twice (``twice``); and a Sequential inner model (``seq``)."""
    d = tmp_path_factory.mktemp("nested")
    L = keras.layers
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 6)).astype("float32")
    np.save(d / "x.npy", x)
    models = {}
    for name, twice in (("once", False), ("twice", True)):
        iin = keras.Input((5,), name="iin")
        block = keras.Model(iin, L.Dense(5, name="bd")(iin), name="block")
        inp = keras.Input((6,), name="x")
        h = block(L.Dense(5, name="pre")(inp))
        if twice:
            h = block(L.Dense(5, name="mid")(h))
        models[name] = keras.Model(inp, L.Dense(2, name="post")(h))
    inner = keras.Sequential(
        [keras.Input((5,)), L.Dense(4, name="inner_d"), L.Dense(3, name="inner_out")], name="inner"
    )
    inp = keras.Input((6,), name="x")
    models["seq"] = keras.Model(inp, L.Dense(2, name="post")(inner(L.Dense(5, name="pre")(inp))))
    for name, model in models.items():
        model.save(d / f"{name}.keras")
    return d, models, x.astype(np.float64)


def _npz(d, name, *args):
    out = d / f"{name}-{abs(hash(args))}.npz"
    result = run_cli("grad", d / f"{name}.keras", "--input", d / "x.npy", "--save-npz", out, *args)
    assert result.exit_code == 0, result.stderr
    return np.load(out)


def test_a_nested_functional_models_input_holds_the_gradient_of_the_tensor_entering_it(nested):
    d, models, x = nested
    g = _npz(d, "once", "--all")
    wpost, _ = _weights(models["once"], "post")
    wbd, _ = _weights(models["once"].get_layer("block"), "bd")
    entering = np.broadcast_to(_upstream(wbd, wpost), (len(x), 5))
    assert g["output/block/iin"].shape == (4, 5)  # the tensor entering block, not the outer input x (4, 6)
    np.testing.assert_allclose(g["output/block/iin"], entering, **TOL)
    np.testing.assert_array_equal(g["output/block/iin"], g["output/pre"])  # the same tensor
    np.testing.assert_allclose(g["output/block/bd"], np.broadcast_to(_upstream(wpost), (4, 5)), **TOL)


def test_a_nested_model_called_twice_records_each_call_separately(nested):
    d, models, x = nested
    model = models["twice"]
    g = _npz(d, "twice", "--all")
    wpost, _ = _weights(model, "post")
    wmid, _ = _weights(model, "mid")
    wbd, _ = _weights(model.get_layer("block"), "bd")
    second = _upstream(wbd, wpost)  # entering block's second call (mid's output)
    first = _upstream(wbd, wmid, wbd, wpost)  # entering its first call (pre's output)
    np.testing.assert_allclose(g["output/block/iin#1"], np.broadcast_to(second, (4, 5)), **TOL)
    np.testing.assert_allclose(g["output/block/iin"], np.broadcast_to(first, (4, 5)), **TOL)
    np.testing.assert_array_equal(g["output/block/iin"], g["output/pre"])
    np.testing.assert_array_equal(g["output/block/iin#1"], g["output/mid"])


def test_a_sequential_inner_models_layers_hold_their_own_gradients(nested):
    d, models, x = nested
    model = models["seq"]
    inner = model.get_layer("inner")
    g = _npz(d, "seq", "--all")
    wpost, _ = _weights(model, "post")
    wout, _ = _weights(inner, "inner_out")
    np.testing.assert_allclose(g["output/inner/inner_d"], np.broadcast_to(_upstream(wout, wpost), (4, 4)), **TOL)
    np.testing.assert_allclose(g["output/inner/inner_out"], np.broadcast_to(_upstream(wpost), (4, 3)), **TOL)


def test_one_variable_reached_through_two_pair_ends_is_one_gradient(nested):
    """``pre:inner/inner_d`` and ``inner:post`` both reach inner_d's kernel: one npz key, listed under
    both pairs, equal to the closed form (it used to exit 70 on a duplicate key)."""
    d, models, x = nested
    model = models["seq"]
    inner = model.get_layer("inner")
    out = d / "pairs.npz"
    args = ("--pair", "pre:inner/inner_d", "--pair", "inner:post", "--input", d / "x.npy")
    result = run_cli("grad", d / "seq.keras", *args, "--save-npz", out, "--format", "json")
    assert result.exit_code == 0, result.stderr
    pairs = json.loads(result.stdout)["pairs"]
    listed = [{(w["layer"], w["variable"]) for w in p["weights"]} for p in pairs]
    assert ("inner/inner_d", "kernel") in listed[0] and ("inner", "inner_d/kernel") in listed[1]
    wpre, bpre = _weights(model, "pre")
    wpost, _ = _weights(model, "post")
    wout, _ = _weights(inner, "inner_out")
    expected = (x @ wpre + bpre).T @ np.broadcast_to(_upstream(wout, wpost), (4, 4))
    np.testing.assert_allclose(np.load(out)["weight/inner/inner_d/kernel"], expected, **TOL)
