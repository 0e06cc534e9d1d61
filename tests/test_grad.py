"""`gradinspect grad`: numbers checked in closed form and against gradients computed independently."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SAMPLES, run_cli


@pytest.fixture(scope="module")
def article(keras, tmp_path_factory):
    """The article's model: x = [[1,2],[3,4]], Dense(3, no bias) -> Dense(2, no bias), sum loss."""
    d = tmp_path_factory.mktemp("article")
    L = keras.layers
    x_in = keras.Input((2,), name="x")
    h1 = L.Dense(3, use_bias=False, name="dense_1")(x_in)
    h2 = L.Dense(2, use_bias=False, name="dense_2")(h1)
    model = keras.Model(x_in, h2)
    rng = np.random.default_rng(42)
    w1 = rng.normal(size=(2, 3)).astype("float32")
    w2 = rng.normal(size=(3, 2)).astype("float32")
    model.get_layer("dense_1").set_weights([w1])
    model.get_layer("dense_2").set_weights([w2])
    model.save(d / "article.keras")
    model.save(d / "article.h5")
    x = np.array([[1, 2], [3, 4]], dtype="float32")
    np.save(d / "x.npy", x)
    return d, x.astype(np.float64), w1.astype(np.float64), w2.astype(np.float64)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_article_closed_form(article, fmt, tmp_path):
    d, x, w1, w2 = article
    npz = tmp_path / "g.npz"
    result = run_cli(
        "grad",
        d / f"article.{fmt}",
        "--from",
        "dense_1",
        "--to",
        "dense_2",
        "--input",
        d / "x.npy",
        "--format",
        "json",
        "--save-npz",
        npz,
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    ones = np.ones((2, 2))
    expected_dh1 = ones @ w2.T  # d sum(x W1 W2) / d h1
    expected_dw2 = (x @ w1).T @ ones  # d / d W2
    expected_dw1 = x.T @ (ones @ w2.T)
    with np.load(npz) as saved:
        # float32 forward/backward on O(1) numbers: agreement to a few float32 ulps.
        np.testing.assert_allclose(saved["output/dense_1"], expected_dh1, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(saved["weight/dense_2/kernel"], expected_dw2, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(saved["weight/dense_1/kernel"], expected_dw1, rtol=1e-6, atol=1e-5)
        keys = sorted(saved.files)
    assert keys == ["output/dense_1", "output/dense_2", "weight/dense_1/kernel", "weight/dense_2/kernel"]
    assert data["loss"]["spec"] == "sum"
    assert data["loss"]["value"] == pytest.approx(float((x @ w1 @ w2).sum()), rel=1e-6)
    (pair,) = data["pairs"]
    assert (pair["from"], pair["to"]) == ("dense_1", "dense_2")
    w2_entry = next(w for w in pair["weights"] if w["layer"] == "dense_2")
    assert w2_entry["stats"]["norm"] == pytest.approx(np.linalg.norm(expected_dw2), rel=1e-6)
    assert w2_entry["weight_norm"] == pytest.approx(np.linalg.norm(w2), rel=1e-6)
    out1 = next(o for o in pair["outputs"] if o["layer"] == "dense_1")
    assert out1["stats"]["mean"] == pytest.approx(expected_dh1.mean(), rel=1e-6)
    assert out1["stats"]["max"] == pytest.approx(expected_dh1.max(), rel=1e-6)
    assert out1["shape"] == [2, 3]


def test_saved_npz_holds_exactly_what_the_json_shows(article, tmp_path):
    d, *_ = article
    npz = tmp_path / "g.npz"
    result = run_cli(
        "grad",
        d / "article.keras",
        "--from",
        "dense_1",
        "--to",
        "dense_2",
        "--input",
        d / "x.npy",
        "-f",
        "json",
        "--save-npz",
        npz,
    )
    data = json.loads(result.stdout)
    with np.load(npz) as saved:
        for entry in data["pairs"][0]["outputs"] + data["pairs"][0]["weights"]:
            key = f"output/{entry['layer']}" if "call" in entry else f"weight/{entry['layer']}/{entry['variable']}"
            arr = saved[key].astype(np.float64)
            assert list(arr.shape) == entry["shape"]
            assert entry["stats"]["norm"] == pytest.approx(np.linalg.norm(arr), rel=1e-12)
            assert entry["stats"]["min"] == arr.min() and entry["stats"]["max"] == arr.max()


def test_shared_layer_and_cnn_agree_with_independent_tape(zoo, keras):
    import tensorflow as tf

    from gradinspect import inspect_gradients

    models, paths = zoo
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 3)).astype("float32")
    b = rng.normal(size=(4, 3)).astype("float32")
    report = inspect_gradients(paths[("shared", "keras")], {"a": a, "b": b}, pairs=[("shared", "out")])
    # Independent: rebuild the computation by hand from the saved weights.
    model = keras.saving.load_model(paths[("shared", "keras")], compile=False)
    k, bias = (tf.Variable(w) for w in model.get_layer("shared").get_weights())
    ko, bo = (tf.constant(w) for w in model.get_layer("out").get_weights())
    with tf.GradientTape(persistent=True) as tape:
        ha = tf.matmul(a, k) + bias
        hb = tf.matmul(b, k) + bias
        tape.watch([ha, hb])
        loss = tf.reduce_sum(tf.matmul(ha + hb, ko) + bo)
    expected = {
        "output/shared": tape.gradient(loss, ha).numpy(),
        "output/shared#1": tape.gradient(loss, hb).numpy(),
        "weight/shared/kernel": tape.gradient(loss, k).numpy(),
        "weight/shared/bias": tape.gradient(loss, bias).numpy(),
    }
    for key, value in expected.items():
        np.testing.assert_allclose(report.arrays[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    assert [o.call for o in report.pairs[0].outputs if o.layer == "shared"] == [0, 1]

    cnn = models["cnn"]
    x = rng.normal(size=(2, 9, 9, 2)).astype("float32")
    report = inspect_gradients(paths[("cnn", "keras")], x, pairs=[("c1", "d")], loss="sumsq")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(cnn(x)))
    g = tape.gradient(loss, cnn.get_layer("c1").kernel)
    np.testing.assert_allclose(report.arrays["weight/c1/kernel"], g.numpy(), rtol=1e-5, atol=1e-6)
    assert report.loss_value == pytest.approx(float(loss), rel=1e-6)


def test_integer_input_gradient_is_explained(zoo):
    from gradinspect import inspect_gradients

    _, paths = zoo
    report = inspect_gradients(paths[("embed", "keras")], None, pairs=[("tokens", "emb")])
    tokens = next(o for o in report.pairs[0].outputs if o.layer == "tokens")
    assert tokens.stats is None and "integer-typed" in tokens.missing
    emb = next(w for w in report.pairs[0].weights if w.layer == "emb")
    assert emb.stats is not None and emb.stats.norm > 0


def test_unknown_layer_lists_closest():
    result = run_cli("grad", SAMPLES / "mlp.keras", "--from", "dense1", "--to", "dense_2")
    assert result.exit_code == 2
    assert "no layer named 'dense1'" in result.stderr and "dense_1" in result.stderr


def test_from_after_to_is_refused():
    result = run_cli("grad", SAMPLES / "mlp.keras", "--from", "dense_3", "--to", "dense_1")
    assert result.exit_code == 2 and "swap" in result.stderr


def test_quickstart_table():
    result = run_cli("grad", SAMPLES / "mlp.keras", "--from", "dense_1", "--to", "dense_2")
    assert result.exit_code == 0, result.stderr
    assert "Output gradients" in result.stdout and "Weight gradients" in result.stdout
    assert "dense_2" in result.stdout and "kernel" in result.stdout


REAL_PAIRS = {
    "keras224_keras2c_lstm.h5": ("input_1", "dense_3"),
    "keras231_hls4ml_jettagger_conv2d.h5": ("batch_normalization_1", "output_softmax"),
    "tfkeras230_nnvis_mlp.h5": ("dense_3", "dense_5"),
    "keras341_digit_cnn.keras": ("conv2d_8", "dense_4"),
    "savedmodel_keras_tf2_stock_lstm": ("lstm", "dense"),
}


@pytest.mark.parametrize("name", sorted(REAL_PAIRS))
def test_real_models_first_to_last(real_models, name):
    first, last = REAL_PAIRS[name]
    # unit:0 rather than sum: two of these models end in a softmax, whose outputs sum to 1,
    # so the sum loss is constant and every gradient is exactly zero (see the test below).
    result = run_cli(
        "grad", real_models / name, "--from", first, "--to", last, "--random", "2", "--loss", "unit:0", "-f", "json"
    )
    assert result.exit_code == 0, result.stderr
    pair = json.loads(result.stdout)["pairs"][0]
    weights = pair["weights"]
    assert weights and all(w["stats"] is not None and w["stats"]["nonfinite"] == 0 for w in weights)
    assert any(w["stats"]["norm"] > 0 for w in weights)
    assert all(o["stats"] is not None for o in pair["outputs"])


def test_softmax_with_sum_loss_has_zero_weight_gradients(real_models):
    name = "keras231_hls4ml_jettagger_conv2d.h5"
    result = run_cli(
        "grad", real_models / name, "--from", "dense_1_relu", "--to", "output_softmax", "--random", "3", "-f", "json"
    )
    data = json.loads(result.stdout)
    assert data["loss"]["value"] == pytest.approx(3.0, rel=1e-6)  # each of 3 samples' softmax sums to 1
    for w in data["pairs"][0]["weights"]:
        assert w["stats"]["abs_max"] < 1e-6, w


def test_half_plus_two_is_refused_clearly(real_models):
    result = run_cli("grad", real_models / "savedmodel_tf2_half_plus_two", "--all")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and "not supported yet" in result.stderr


@pytest.mark.parametrize("kind", ["npz", "csv", "json", "h5", "h5ds"])
def test_input_formats_give_the_same_gradients(article, tmp_path, kind):
    import h5py

    d, x, *_ = article
    reference = run_cli(
        "grad", d / "article.keras", "--from", "dense_1", "--to", "dense_2", "--input", d / "x.npy", "-f", "json"
    )
    if kind == "npz":
        path = tmp_path / "x.npz"
        np.savez(path, x=x)
    elif kind == "csv":
        path = tmp_path / "x.csv"
        path.write_text("a,b\n1,2\n3,4\n")
    elif kind == "json":
        path = tmp_path / "x.json"
        path.write_text(json.dumps({"x": x.tolist()}))
    else:
        path = tmp_path / "x.h5"
        with h5py.File(path, "w") as h5:
            h5["samples"] = x
        if kind == "h5ds":
            path = f"{path}:samples"
    result = run_cli("grad", d / "article.keras", "--from", "dense_1", "--to", "dense_2", "--input", path, "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["pairs"] == json.loads(reference.stdout)["pairs"]


def test_wrong_input_shape_names_input_and_shapes(article, tmp_path):
    d, *_ = article
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 5), dtype="float32"))
    result = run_cli("grad", d / "article.keras", "--from", "dense_1", "--to", "dense_2", "--input", bad)
    assert result.exit_code == 2 and result.stdout == ""
    assert "input 'x' expects shape (None, 2), received (2, 5)" in result.stderr


def test_save_npz_refuses_to_overwrite(article, tmp_path):
    d, *_ = article
    npz = tmp_path / "g.npz"
    npz.write_bytes(b"keep me")
    result = run_cli("grad", d / "article.keras", "--from", "dense_1", "--to", "dense_2", "--save-npz", npz)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert npz.read_bytes() == b"keep me"
    forced = run_cli("grad", d / "article.keras", "--from", "dense_1", "--to", "dense_2", "--save-npz", npz, "--force")
    assert forced.exit_code == 0
    with np.load(npz) as saved:
        assert "weight/dense_2/kernel" in saved.files
