"""`gradinspect grad`: numbers checked in closed form and against gradients computed independently."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SAMPLES, run_cli


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


@pytest.mark.slow
def test_unknown_layer_lists_closest():
    result = run_cli("grad", SAMPLES / "mlp.keras", "--from", "dense1", "--to", "dense_2")
    assert result.exit_code == 2
    assert "no layer named 'dense1'" in result.stderr and "dense_1" in result.stderr


@pytest.mark.slow
def test_from_after_to_is_refused():
    result = run_cli("grad", SAMPLES / "mlp.keras", "--from", "dense_3", "--to", "dense_1")
    assert result.exit_code == 2 and "swap" in result.stderr


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_softmax_with_sum_loss_has_zero_weight_gradients(real_models):
    name = "keras231_hls4ml_jettagger_conv2d.h5"
    result = run_cli(
        "grad",
        real_models / name,
        "--from",
        "dense_1_relu",
        "--to",
        "output_softmax",
        "--random",
        "3",
        "--loss",
        "sum",
        "-f",
        "json",
    )
    data = json.loads(result.stdout)
    assert data["loss"]["value"] == pytest.approx(3.0, rel=1e-6)  # each of 3 samples' softmax sums to 1
    for w in data["pairs"][0]["weights"]:
        assert w["stats"]["abs_max"] < 1e-6, w
    assert any("rounding noise" in n and "logprob:pred" in n for n in data["notes"])


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


@pytest.mark.slow
def test_half_plus_two_gradients_in_closed_form(real_models, tmp_path):
    """y = a*x + b with a=0.5, b=2 (c unused): dy/dx = a, dy/da = x, dy/db = 1, c gets none."""
    x = np.array([3.0], dtype="float32")
    np.save(tmp_path / "x.npy", x)
    npz = tmp_path / "g.npz"
    result = run_cli(
        "grad",
        real_models / "savedmodel_tf2_half_plus_two",
        "--all",
        "--input",
        tmp_path / "x.npy",
        "-f",
        "json",
        "--save-npz",
        npz,
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["loss"]["value"] == pytest.approx(0.5 * 3.0 + 2.0)
    with np.load(npz) as g:
        assert g["output/x"].tolist() == [0.5]
        assert float(g["weight/(root)/a"]) == 3.0 and float(g["weight/(root)/b"]) == 1.0
        assert "weight/(root)/c" not in g.files
    c = next(w for w in data["pairs"][0]["weights"] if w["variable"] == "c")
    assert c["stats"] is None and c["missing"] == "no gradient: the signature does not use this variable"


def test_keras_export_gradients_match_the_keras_model(keras, tmp_path):
    """The same model through its Keras 3 export (no Keras metadata) and through the .keras file."""
    from gradinspect import inspect_gradients

    x = np.random.default_rng(5).normal(size=(3, 2)).astype("float32")
    exported = inspect_gradients(SAMPLES / "mlp_export", x, all_layers=True)
    native = inspect_gradients(SAMPLES / "mlp.keras", x, pairs=[("x", "dense_1"), ("dense_2", "dense_3")])
    assert exported.loss_value == pytest.approx(native.loss_value, rel=1e-6)
    np.testing.assert_allclose(exported.arrays["output/x"], native.arrays["output/x"], rtol=1e-5)
    for layer in ("dense_1", "dense_3"):
        for var in ("kernel", "bias"):
            key = f"weight/{layer}/{var}"
            np.testing.assert_allclose(exported.arrays[key], native.arrays[key], rtol=1e-5, atol=1e-7)


def test_compiled_loss_from_a_tf_keras_file(real_models, tmp_path, tf_keras):
    """tfkeras230_nnvis_mlp.h5 was compiled with sparse_categorical_crossentropy."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 784)).astype("float32")
    y = rng.integers(0, 10, size=(5,))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    result = run_cli(
        "grad",
        real_models / "tfkeras230_nnvis_mlp.h5",
        "--from",
        "dense_4",
        "--to",
        "dense_5",
        "--input",
        tmp_path / "x.npy",
        "--loss",
        "compiled",
        "--target",
        tmp_path / "y.npy",
        "-f",
        "json",
        "--save-npz",
        tmp_path / "g.npz",
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert any("sparse_categorical_crossentropy" in n for n in data["notes"])
    model = tf_keras.models.load_model(real_models / "tfkeras230_nnvis_mlp.h5", compile=False)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(y, model(x)))
    g = tape.gradient(loss, model.get_layer("dense_5").kernel)
    assert data["loss"]["value"] == pytest.approx(float(loss), rel=1e-6)
    with np.load(tmp_path / "g.npz") as saved:
        np.testing.assert_allclose(saved["weight/dense_5/kernel"], g.numpy(), rtol=1e-5, atol=1e-7)


def test_compiled_loss_missing_is_explained(article):
    d, *_ = article
    result = run_cli("grad", d / "article.keras", "--from", "dense_1", "--to", "dense_2", "--loss", "compiled")
    assert result.exit_code == 2 and "saved without a compiled loss" in result.stderr


def test_nested_layer_and_multi_tensor_outputs(keras, tmp_path):
    """`outer/inner` names reach inside a nested model; an LSTM with return_state gives `.1`, `.2` keys."""
    import tensorflow as tf

    from gradinspect import inspect_gradients

    L = keras.layers
    keras.utils.set_random_seed(11)
    inner = keras.Sequential(
        [keras.Input((4,)), L.Dense(3, activation="tanh", name="i1"), L.Dense(2, name="i2")], name="inner"
    )
    x = keras.Input((5, 4), name="seq")
    seq, h, c = L.LSTM(4, return_sequences=True, return_state=True, name="lstm")(x)
    out = inner(L.Add(name="add")([h, c]))
    model = keras.Model(x, [out, seq])
    model.save(tmp_path / "m.keras")
    data = np.random.default_rng(2).normal(size=(3, 5, 4)).astype("float32")
    report = inspect_gradients(tmp_path / "m.keras", data, pairs=[("lstm", "inner/i1")])
    keys = set(report.arrays)
    # every tensor of a call that returns several carries its index, the first one too
    assert {"output/lstm.0", "output/lstm.1", "output/lstm.2", "output/inner/i1", "weight/inner/i1/kernel"} <= keys
    assert "output/lstm" not in keys
    assert "weight/lstm/lstm_cell/kernel" in keys or "weight/lstm/cell/kernel" in keys
    i1 = model.get_layer("inner").get_layer("i1")
    with tf.GradientTape() as tape:
        o, s = model(data)
        loss = tf.reduce_sum(o) + tf.reduce_sum(s)
    np.testing.assert_allclose(
        report.arrays["weight/inner/i1/kernel"], tape.gradient(loss, i1.kernel).numpy(), rtol=1e-5, atol=1e-6
    )


def test_subclassed_model_with_custom_objects(keras, tmp_path):
    import textwrap

    import tensorflow as tf

    from gradinspect import inspect_gradients

    source = textwrap.dedent(
        """
        import keras

        @keras.saving.register_keras_serializable(package="gi_sub")
        class TwoLayer(keras.Model):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.first = keras.layers.Dense(3, activation="relu", name="first")
                self.second = keras.layers.Dense(1, name="second")

            def call(self, x):
                return self.second(self.first(x))
        """
    )
    path = tmp_path / "sub.py"
    path.write_text(source)
    ns: dict = {}
    exec(compile(source, str(path), "exec"), ns)  # noqa: S102
    model = ns["TwoLayer"]()
    x = np.random.default_rng(4).normal(size=(4, 2)).astype("float32")
    model(x)
    model.save(tmp_path / "sub.keras")
    refused = run_cli("grad", tmp_path / "sub.keras", "--from", "first", "--to", "second")
    assert refused.exit_code == 2 and "gi_sub>TwoLayer" in refused.stderr
    report = inspect_gradients(tmp_path / "sub.keras", x, pairs=[("first", "second")], custom_objects=path)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x))
    g = tape.gradient(loss, model.first.kernel)
    np.testing.assert_allclose(report.arrays["weight/first/kernel"], g.numpy(), rtol=1e-5, atol=1e-7)


def test_missing_gradient_reasons(keras, tmp_path):
    """Not between the inputs and the loss, vs. behind a non-differentiable op."""
    import textwrap

    from gradinspect import inspect_gradients

    source = textwrap.dedent(
        """
        import keras

        @keras.saving.register_keras_serializable(package="gi_round")
        class Round(keras.layers.Layer):
            def call(self, x):
                return keras.ops.round(x)
        """
    )
    path = tmp_path / "round.py"
    path.write_text(source)
    ns: dict = {}
    exec(compile(source, str(path), "exec"), ns)  # noqa: S102
    L = keras.layers
    x = keras.Input((3,), name="x")
    a = L.Dense(2, name="a")(x)
    side = L.Dense(2, name="side")(x)
    rounded = ns["Round"](name="round")(L.Dense(2, name="before_round")(x))
    model = keras.Model(x, [L.Add(name="y0")([a, rounded]), side])
    model.save(tmp_path / "m.keras")
    data = np.ones((2, 3), dtype="float32")
    report = inspect_gradients(
        tmp_path / "m.keras",
        data,
        pairs=[("before_round", "side")],
        loss="unit:0",
        outputs=("y0",),
        custom_objects=path,
    )
    by_layer = {w.layer: w for w in report.pairs[0].weights}
    assert "non-differentiable" in by_layer["before_round"].missing
    assert "not between the inputs and the loss" in by_layer["side"].missing


def test_functional_cnn_agrees_with_independent_tape(keras, tmp_path):
    """A Functional CNN with two branches, BatchNormalization and a Concatenate."""
    import tensorflow as tf

    from gradinspect import inspect_gradients

    L = keras.layers
    keras.utils.set_random_seed(21)
    x = keras.Input((10, 10, 3), name="image")
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(x)
    a = L.BatchNormalization(name="bn_a")(a)
    b = L.Conv2D(2, 5, strides=2, padding="same", name="conv_b")(x)
    b = L.UpSampling2D(2, name="up")(b)
    h = L.Concatenate(name="cat")([a, b])
    h = L.MaxPooling2D(2, name="pool")(h)
    y = L.Dense(3, activation="softmax", name="head")(L.Flatten(name="flat")(h))
    model = keras.Model(x, y)
    model.save(tmp_path / "fcnn.keras")
    data = np.random.default_rng(8).normal(size=(4, 10, 10, 3)).astype("float32")
    np.save(tmp_path / "x.npy", data)
    targets = np.eye(3, dtype="float32")[[0, 2, 1, 0]]
    np.save(tmp_path / "t.npy", targets)
    report = inspect_gradients(
        tmp_path / "fcnn.keras",
        str(tmp_path / "x.npy"),
        pairs=[("conv_a", "bn_a"), ("conv_b", "head")],
        loss="categorical_crossentropy",
        target=str(tmp_path / "t.npy"),
    )
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(targets, model(data)))
    variables = {
        f"weight/{layer.name}/{v.path.split('/')[-1]}": v for layer in model.layers for v in layer.trainable_weights
    }
    expected = dict(zip(variables, tape.gradient(loss, list(variables.values()))))
    checked = 0
    for key, g in expected.items():
        if key in report.arrays:
            np.testing.assert_allclose(report.arrays[key], g.numpy(), rtol=1e-4, atol=1e-6, err_msg=key)
            checked += 1
    assert checked == 8  # conv_a, bn_a (gamma, beta), conv_b, head: kernels and biases
    assert report.loss_value == pytest.approx(float(loss), rel=1e-6)


def test_table_shows_the_saved_numbers(article, tmp_path):
    d, *_ = article
    npz = tmp_path / "g.npz"
    result = run_cli(
        "grad", d / "article.keras", "--from", "dense_1", "--to", "dense_2", "--input", d / "x.npy", "--save-npz", npz
    )
    assert result.exit_code == 0
    with np.load(npz) as saved:
        for key in saved.files:
            arr = saved[key].astype(np.float64)
            for value in (np.linalg.norm(arr), arr.mean(), np.abs(arr).max()):
                assert f"{value:.4g}" in result.stdout, (key, value)


@pytest.mark.slow
def test_one_forward_and_one_backward_for_all_pairs(monkeypatch):
    """Three pairs, one model call and one tape.gradient call."""
    import tensorflow as tf

    from gradinspect import inspect_gradients

    counts = {"gradient": 0}
    original = tf.GradientTape.gradient

    def counting(self, *args, **kwargs):
        counts["gradient"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tf.GradientTape, "gradient", counting)
    report = inspect_gradients(
        SAMPLES / "mlp.keras", None, pairs=[("x", "dense_1"), ("dense_1", "dense_2"), ("dense_2", "dense_3")]
    )
    assert counts["gradient"] == 1
    # every layer was called once: one forward pass
    assert [o.call for p in report.pairs for o in p.outputs] == [0] * 6
    assert len(report.pairs) == 3 and all(p.weights or p.from_layer == "x" for p in report.pairs)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,needle",
    [
        (["--from", "dense_1"], "--from and --to go together"),
        (["--pair", "dense_1"], "--pair dense_1: expected FROM:TO"),
        (["--from", "dense_1", "--to", "dense_2", "--loss", "nope"], "--loss nope: unknown loss"),
        (["--from", "dense_1", "--to", "dense_2", "--loss", "mse"], "give --target FILE"),
        (["--from", "dense_1", "--to", "dense_2", "--loss", "unit:7"], "the output has 1 units"),
        (["--from", "dense_1", "--to", "dense_2", "--random", "0"], "'--random': 0 is not in the range x>=1"),
        (["--from", "dense_1", "--to", "dense_2", "--samples", "5:9"], "selects no samples"),
        (["--from", "dense_1", "--to", "dense_2", "--input-shape", "a,b"], "--input-shape a,b"),
        (["--from", "dense_1", "--to", "dense_2", "--random", "100000000000"], "GiB"),
    ],
)
def test_bad_grad_options_are_one_line(args, needle):
    from conftest import assert_one_error_line

    assert_one_error_line(run_cli("grad", SAMPLES / "mlp.keras", *args), needle)


@pytest.mark.slow
def test_bad_input_data_is_one_line(tmp_path):
    from conftest import assert_one_error_line

    cases = {
        "strings.npy": (np.array([["a", "b"]]), "holds strings"),
        "empty.npy": (np.zeros((0, 2), dtype="float32"), "empty (batch of 0 samples)"),
        "wrongshape.npy": (np.zeros((3, 4), dtype="float32"), "expects shape (None, 2), received (3, 4)"),
    }
    for name, (array, needle) in cases.items():
        np.save(tmp_path / name, array)
        assert_one_error_line(run_cli("grad", SAMPLES / "mlp.keras", "--all", "--input", tmp_path / name), needle)
    np.savez(tmp_path / "keys.npz", features=np.zeros((2, 4)), extra=np.zeros((2, 3)))
    assert_one_error_line(
        run_cli("grad", SAMPLES / "multi_input.keras", "--all", "--input", tmp_path / "keys.npz"),
        "missing context",
        "unexpected extra",
    )
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 1.0], [2.0, 3.0]], dtype="float32"))
    nan = run_cli("grad", SAMPLES / "mlp.keras", "--all", "--input", tmp_path / "nan.npy", "-f", "json")
    assert nan.exit_code == 0  # allowed, but reported
    assert "holds 1 NaN/Inf value(s)" in json.loads(nan.stdout)["notes"][0]
    np.save(tmp_path / "ints.npy", np.array([[1, 2], [3, 4]], dtype="int64"))
    ints = run_cli("grad", SAMPLES / "mlp.keras", "--all", "--input", tmp_path / "ints.npy", "-f", "json")
    assert ints.exit_code == 0 and "int64 values cast to float32" in json.loads(ints.stdout)["notes"][0]


def test_none_dimension_needs_input_shape(keras, tmp_path):
    from conftest import assert_one_error_line

    x = keras.Input((None, 3), name="seq")
    keras.Model(x, keras.layers.GlobalAveragePooling1D(name="gap")(keras.layers.Dense(2, name="d")(x))).save(
        tmp_path / "v.keras"
    )
    assert_one_error_line(run_cli("grad", tmp_path / "v.keras", "--all"), "input 'seq'", "--input-shape")
    ok = run_cli("grad", tmp_path / "v.keras", "--all", "--input-shape", "7,3", "-f", "json")
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["pairs"][0]["outputs"][0]["shape"] == [4, 7, 3]


def test_input_shape_per_input_name(keras, tmp_path):
    """A multi-input model whose inputs have different unknown dimensions: ``NAME=SHAPE`` per input,
    a plain shape for the others; an unknown name or a second shape for one input is one error line."""
    from conftest import assert_one_error_line

    L = keras.layers
    a, b, c = keras.Input((None, 4), name="a"), keras.Input((None, 2), name="b"), keras.Input((None, 2), name="c")
    pooled = [L.GlobalAveragePooling1D(name=f"gap_{t.name}")(t) for t in (a, b, c)]
    keras.Model([a, b, c], L.Dense(1, name="out")(L.Concatenate(name="cat")(pooled))).save(tmp_path / "m.keras")
    args = ("grad", tmp_path / "m.keras", "--pair", "a:out", "--pair", "b:out", "--pair", "c:out", "-f", "json")

    def input_shapes(*given):
        result = run_cli(*args, *given)
        assert result.exit_code == 0, result.stderr
        return [p["outputs"][0]["shape"] for p in json.loads(result.stdout)["pairs"]]

    assert input_shapes("--input-shape", "a=3,4", "--input-shape", "b=7,2", "--input-shape", "c=5,2") == [
        [4, 3, 4],
        [4, 7, 2],
        [4, 5, 2],
    ]
    assert input_shapes("--input-shape", "a=3,4", "--input-shape", "6,2") == [[4, 3, 4], [4, 6, 2], [4, 6, 2]]
    line = assert_one_error_line(run_cli(*args, "--input-shape", "a=3,4", "--input-shape", "d=2"))
    assert "no input 'd'" in line and "a, b, c" in line
    assert_one_error_line(run_cli(*args, "--input-shape", "a=3,4", "--input-shape", "a=5,4"), "a second shape")
    assert_one_error_line(run_cli(*args, "--input-shape", "b=q"), "--input-shape b=q", "integers")
