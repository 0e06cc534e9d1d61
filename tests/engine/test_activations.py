"""``--activations`` (issue 25 item 14, keract's main use): each recorded output's own values beside
its gradient: mean, std, share of exact zeros (dead ReLU units) and of saturated sigmoid/tanh units,
``activation/<layer>`` arrays in ``--save-npz``; the same numbers over several batches. Reference:
the layers' values computed in the test with numpy from the saved weights (float64; the run is
float32, so rtol 1e-5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli


@pytest.fixture(scope="module")
def net(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("activations")
    L = keras.layers
    x = keras.Input((4,), name="x")
    relu = L.Dense(6, activation="relu", name="relu")
    gate = L.Dense(3, activation="sigmoid", name="gate")
    model = keras.Model(x, L.Dense(1, name="out")(gate(relu(x))))
    k, b = relu.get_weights()
    relu.set_weights([k, np.where(np.arange(6) < 2, -100.0, b).astype("float32")])  # two dead units
    kg, bg = gate.get_weights()
    gate.set_weights([kg * 8, bg])  # large pre-activations: many saturated sigmoid values
    model.save(d / "m.keras")
    np.save(d / "x.npy", np.random.default_rng(2).normal(size=(32, 4)).astype("float32"))
    return d, model


def _values(model, x):
    k, b = (np.asarray(w, np.float64) for w in model.get_layer("relu").get_weights())
    relu = np.maximum(x @ k + b, 0.0)
    kg, bg = (np.asarray(w, np.float64) for w in model.get_layer("gate").get_weights())
    return relu, 1.0 / (1.0 + np.exp(-(relu @ kg + bg)))


def _run(d, *args):
    out = d / f"a{abs(hash(args))}.npz"
    base = ("grad", d / "m.keras", "--pair", "relu:gate", "--input", d / "x.npy", "--activations")
    result = run_cli(*base, "--save-npz", out, "--force", "-f", "json", *args)
    assert result.exit_code == 0, result.stderr
    outputs = {o["layer"]: o["activation"] for o in json.loads(result.stdout)["pairs"][0]["outputs"]}
    return outputs, np.load(out)


def test_activation_statistics_and_arrays_match_the_layers_values(net):
    d, model = net
    relu, gate = _values(model, np.load(d / "x.npy").astype(np.float64))
    stats, arrays = _run(d, "--batch-size", "32")
    assert stats["relu"]["zero_fraction"] == pytest.approx(np.mean(relu == 0), abs=1e-12)
    assert stats["relu"]["zero_fraction"] >= 2 / 6  # the two dead units at least
    assert "saturated_fraction" not in stats["relu"]  # relu does not saturate
    assert stats["gate"]["saturating"] == "sigmoid"
    assert stats["gate"]["saturated_fraction"] == pytest.approx(np.mean((gate < 0.01) | (gate > 0.99)), abs=1e-12)
    for layer, values in (("relu", relu), ("gate", gate)):
        assert stats[layer]["mean"] == pytest.approx(values.mean(), rel=1e-5, abs=1e-7)
        assert stats[layer]["std"] == pytest.approx(values.std(), rel=1e-5, abs=1e-7)
        np.testing.assert_allclose(arrays[f"activation/{layer}"], values, rtol=1e-5, atol=1e-6)


def test_over_several_batches_the_statistics_are_those_of_every_sample(net):
    d, _ = net
    whole, _ = _run(d, "--batch-size", "32")
    batched, arrays = _run(d, "--batch-size", "8")  # four batches, merged
    assert not any(k.startswith("activation/") for k in arrays)  # per-sample arrays are not kept
    for layer in ("relu", "gate"):
        assert batched[layer].get("saturating") == whole[layer].get("saturating")
        numbers = {k: v for k, v in whole[layer].items() if isinstance(v, float)}
        assert numbers
        assert {k: batched[layer][k] for k in numbers} == pytest.approx(numbers, rel=1e-6, abs=1e-9)


def test_without_the_flag_the_report_is_unchanged(net):
    d, _ = net
    result = run_cli("grad", d / "m.keras", "--pair", "relu:gate", "--input", d / "x.npy", "-f", "json")
    assert all("activation" not in o for o in json.loads(result.stdout)["pairs"][0]["outputs"])
