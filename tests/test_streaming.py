"""Many batches, one answer: every batch runs and merges into the numbers of one giant batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli


@pytest.fixture(scope="module")
def data(keras, tmp_path_factory):
    """A small tanh MLP and 70 samples: batches of 16 leave a short last batch of 6."""
    d = tmp_path_factory.mktemp("stream")
    keras.utils.set_random_seed(8)
    x = keras.Input((5,), name="x")
    h = keras.layers.Dense(4, activation="tanh", name="hidden")(x)
    model = keras.Model(x, keras.layers.Dense(3, name="out")(h))
    model.save(d / "m.keras")
    np.save(d / "x.npy", np.random.default_rng(0).normal(size=(70, 5)).astype("float32"))
    return d, model


def _run(d, *args):
    npz = d / f"g{abs(hash(args))}.npz"
    result = run_cli(
        "grad", d / "m.keras", "--from", "hidden", "--to", "out", "--input", d / "x.npy", "--save-npz", npz,
        "--force", "-f", "json", *args,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    with np.load(npz) as saved:
        return json.loads(result.stdout), {k: saved[k] for k in saved.files}


@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_streamed_batches_equal_one_giant_batch(data, loss):
    d, _ = data
    giant, giant_arrays = _run(d, "--loss", loss, "--batch-size", "70")
    streamed, streamed_arrays = _run(d, "--loss", loss, "--batch-size", "16")
    assert giant["inputs"].get("batches") is None and streamed["inputs"]["batches"] == 5
    assert streamed["loss"]["value"] == pytest.approx(giant["loss"]["value"], rel=1e-5)
    for key in ("weight/hidden/kernel", "weight/hidden/bias", "weight/out/kernel", "weight/out/bias"):
        np.testing.assert_allclose(streamed_arrays[key], giant_arrays[key], rtol=1e-4, atol=1e-7, err_msg=key)
    for a, b in zip(giant["pairs"][0]["outputs"], streamed["pairs"][0]["outputs"]):
        assert a["shape"] == b["shape"] == [70, a["shape"][1]]
        for stat, value in a["stats"].items():
            assert b["stats"][stat] == pytest.approx(value, rel=1e-4, abs=1e-9), (a["layer"], stat)


def test_noise_scale_against_a_direct_computation(data):
    """b_simple = B·S/|G|² and snr = |G|²/S over the full batches (the short last one left out)."""
    import tensorflow as tf

    d, model = data
    report, _ = _run(d, "--loss", "sum", "--batch-size", "16")
    x = np.load(d / "x.npy")
    kernel = model.get_layer("out").kernel
    per_batch = []
    for start in range(0, 64, 16):  # the 4 full batches
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x[start : start + 16]))
        per_batch.append(tape.gradient(loss, kernel).numpy().astype(np.float64) / 16)
    g = np.stack(per_batch)
    mean = g.mean(axis=0)
    spread = np.sum((g - mean) ** 2) / (len(g) - 1)
    signal = np.sum(mean**2) - spread / len(g)
    noise = next(w["noise"] for w in report["pairs"][0]["weights"] if w["layer"] == "out" and w["variable"] == "kernel")
    assert noise["batches"] == 4 and noise["batch_size"] == 16
    assert noise["b_simple"] == pytest.approx(16 * spread / signal, rel=1e-4)
    assert noise["snr"] == pytest.approx(signal / spread, rel=1e-4)
    assert report["noise"]["batches"] == 4


def test_max_batches_and_the_default_batch(data):
    d, _ = data
    stopped, _ = _run(d, "--batch-size", "16", "--max-batches", "2")
    assert stopped["inputs"]["batches"] == 2 and stopped["pairs"][0]["outputs"][0]["shape"][0] == 32
    default, _ = _run(d)  # 70 samples: batches of 32
    assert default["inputs"]["batch_size"] == 32 and default["inputs"]["batches"] == 3
    assert default["noise"]["batches"] == 2  # two full batches of 32; the last 6 samples are left out of it


def test_noise_needs_two_full_batches(data):
    d, _ = data
    report, _ = _run(d, "--batch-size", "40")  # one full batch and a short one
    weight = report["pairs"][0]["weights"][0]
    assert weight["noise"]["b_simple"] is None and "at least 2 full batches" in weight["noise"].get("reason", "")
