"""Every model's inputs are pair ends, ``input:<name>``: a Sequential's too, whose layers list no
InputLayer (issue 25 item 10). Closed forms: the models are Dense chains without activations and
the loss is ``sum``, so d sum(y) / d x = 1 · W2^T · W1^T for every sample (float64 from the saved
weights; float32 run: rtol 1e-5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from gradinspect.cli.options import parse_pairs


@pytest.fixture(scope="module")
def chains(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    L = keras.layers
    seq = keras.Sequential([keras.Input((3,)), L.Dense(4, name="d1"), L.Dense(2, name="d2")])
    seq.save(d / "seq.keras")
    seq.save(d / "seq.h5")
    x = keras.Input((3,), name="x")
    keras.Model(x, L.Dense(2, name="d2")(L.Dense(4, name="d1")(x))).save(d / "fn.keras")
    np.save(d / "x.npy", np.random.default_rng(1).normal(size=(5, 3)).astype("float32"))
    return d, seq


def _expected(model):
    w1, w2 = (np.asarray(model.get_layer(n).get_weights()[0], np.float64) for n in ("d1", "d2"))
    return np.broadcast_to(np.ones((1, 2)) @ w2.T @ w1.T, (5, 3))


@pytest.mark.parametrize("name", ["seq.keras", "seq.h5"])
def test_a_sequential_models_input_gradient_comes_with_all(chains, name):
    d, seq = chains
    out = d / f"{name}.npz"
    result = run_cli("grad", d / name, "--all", "--input", d / "x.npy", "--save-npz", out, "-f", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    first = report["pairs"][0]
    input_name = report["model"]["inputs"][0]["name"]
    assert (first["from"], first["to"]) == (f"input:{input_name}", "d1")
    np.testing.assert_allclose(np.load(out)[f"output/input:{input_name}"], _expected(seq), rtol=1e-5, atol=1e-7)


def test_an_input_is_a_pair_end_of_any_model(chains):
    d, seq = chains
    result = run_cli("grad", d / "fn.keras", "--pair", "input:x:d2", "--input", d / "x.npy", "-f", "json")
    assert result.exit_code == 0, result.stderr
    outputs = json.loads(result.stdout)["pairs"][0]["outputs"]
    assert [(o["layer"], o["shape"]) for o in outputs] == [("input:x", [5, 3]), ("d2", [5, 2])]
    backwards = run_cli("grad", d / "fn.keras", "--pair", "d1:input:x", "--input", d / "x.npy")
    assert backwards.exit_code == 2 and "comes after" in backwards.stderr


def test_pair_ends_split_around_input_names():
    assert parse_pairs(None, None, ("input:x:d1", "d1:d2", "input:d1")) == [
        ("input:x", "d1"),
        ("d1", "d2"),
        ("input", "d1"),  # a layer named "input" (one colon: a plain pair)
    ]
