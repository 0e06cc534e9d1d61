"""SavedModels without Keras metadata: layers recovered from the graph, and their gradients.

Each Keras model is saved as `.keras` and exported with `model.export()`; gradinspect's per-layer
output and weight gradients on the export must equal those on the `.keras` file for the same
inputs and loss. Both run the same float32 ops (the export is a trace of the same layers), so
rtol 1e-5 allows only reassociation inside kernels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_error_line, run_cli


@pytest.fixture(scope="module")
def exported(keras, tmp_path_factory):
    """A Sequential MLP, a Functional CNN with BatchNormalization and a residual Add, a two-input model."""
    L = keras.layers
    d = tmp_path_factory.mktemp("exported")
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    models = {
        "mlp": keras.Sequential(
            [keras.Input((4,)), L.Dense(5, activation="tanh", name="d1"), L.Dense(3, name="d2")], name="seq"
        )
    }
    x = keras.Input((8, 8, 3), name="img")
    c = L.Conv2D(4, 3, padding="same", name="conv")(x)
    r = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(c))
    a = L.Add(name="add")([r, L.Conv2D(4, 3, padding="same", name="conv2")(r)])
    models["cnn"] = keras.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling2D(name="pool")(a)))
    a_in, b_in = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = L.Concatenate(name="cat")([L.Dense(4, activation="relu", name="da")(a_in), b_in])
    models["two"] = keras.Model([a_in, b_in], L.Dense(1, name="out")(h))
    bn = models["cnn"].get_layer("bn")  # non-trivial moving statistics, as after training
    bn.moving_mean.assign(rng.normal(size=4).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=4).astype("float32"))
    inputs = {"mlp": rng.normal(size=(6, 4)), "cnn": rng.normal(size=(5, 8, 8, 3))}
    for name, model in models.items():
        model.save(d / f"{name}.keras")
        model.export(d / f"{name}_export", verbose=False)
        if name in inputs:
            np.save(d / f"{name}.npy", inputs[name].astype("float32"))
    np.savez(d / "two.npz", a=rng.normal(size=(6, 3)).astype("float32"), b=rng.normal(size=(6, 2)).astype("float32"))
    return d


def _grads(path, data, *args):
    npz = path.parent / f"{path.name}.{abs(hash(args))}.npz"
    result = run_cli("grad", path, "--input", data, "--save-npz", npz, "--force", "-f", "json", *args)
    assert result.exit_code == 0, result.stderr
    with np.load(npz) as saved:
        return json.loads(result.stdout), {k: saved[k] for k in saved.files}


@pytest.mark.parametrize(
    ("name", "data", "layers"),
    [
        ("mlp", "mlp.npy", ["d1", "d2"]),
        ("cnn", "cnn.npy", ["conv", "bn", "relu", "conv2", "add", "pool", "head"]),
        ("two", "two.npz", ["da", "cat", "out"]),
    ],
)
@pytest.mark.parametrize("loss", ["sumsq", "mean"])
def test_exported_layers_give_the_keras_models_gradients(exported, name, data, layers, loss):
    d = exported
    pairs = [a for pair in zip(layers[:-1], layers[1:]) for a in ("--pair", f"{pair[0]}:{pair[1]}")]
    report, graph = _grads(d / f"{name}_export", d / data, "--loss", loss, *pairs)
    _, keras_arrays = _grads(d / f"{name}.keras", d / data, "--loss", loss, *pairs)
    assert "layers recovered from the graph" in " ".join(report["notes"])
    expected = {f"output/{n}" for n in layers}
    assert expected <= set(graph), sorted(graph)
    weights = {k for k in keras_arrays if k.startswith("weight/")}
    assert weights and {k for k in graph if k.startswith("weight/")} == weights  # trainable ones only
    for key in sorted(expected | weights):
        scale = float(np.abs(keras_arrays[key]).max()) or 1.0
        np.testing.assert_allclose(graph[key], keras_arrays[key], rtol=1e-5, atol=1e-6 * scale, err_msg=key)


def test_layers_lists_the_recovered_layers_without_tensorflow(exported, keras):
    result = run_cli("layers", exported / "cnn_export", "-f", "json")
    assert result.exit_code == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["source"] == "graph" and listing["graph_signature"] == "serving_default"
    model = keras.saving.load_model(exported / "cnn.keras")
    names = [row["name"] for row in listing["layers"]]
    assert names == ["conv", "bn", "relu", "conv2", "add", "pool", "head"]  # topological order
    for row in listing["layers"]:
        layer = model.get_layer(row["name"])
        assert row["params"] == layer.count_params(), row["name"]
        assert tuple(row["output_shape"]) == tuple(layer.output.shape), row["name"]
        assert row["dtype"] == "float32"
    assert listing["layers"][1]["trainable_params"] == 8  # gamma and beta; the moving statistics are not
    assert "Conv2D" in listing["layers"][0]["class"] and listing["layers"][2]["class"] == "Relu"
    table = run_cli("layers", exported / "cnn_export").stdout
    assert "Layers recovered from the graph of signature 'serving_default'" in table


def test_stage2_on_recovered_layers_equals_the_keras_models(exported):
    d = exported
    args = ("--from", "d1", "--to", "d2", "--stage2", "seed", "--through", "--loss", "sumsq")
    graph_report, graph = _grads(d / "mlp_export", d / "mlp.npy", *args)
    keras_report, keras_arrays = _grads(d / "mlp.keras", d / "mlp.npy", *args)
    a, b = graph_report["pairs"][0]["stage2"], keras_report["pairs"][0]["stage2"]
    assert a["value"] == pytest.approx(b["value"], rel=1e-5)
    assert a["stage1"]["value"] == pytest.approx(b["stage1"]["value"], rel=1e-5)
    keys = [k for k in keras_arrays if k.startswith("stage")]
    assert len(keys) == 5  # stage1/grad/d1 and the four stage-2 weight gradients
    for key in keys:
        np.testing.assert_allclose(graph[key], keras_arrays[key], rtol=1e-5, atol=1e-7, err_msg=key)


@pytest.fixture(scope="module")
def module_model(keras, tmp_path_factory):
    """A plain tf.Module saved with tf.saved_model.save, its layers as name scopes."""
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(5)
            with tf.name_scope("enc"):
                self.w1 = tf.Variable(rng.normal(size=(3, 4)).astype("float32"), name="kernel")
            with tf.name_scope("head"):
                self.w2 = tf.Variable(rng.normal(size=(4, 2)).astype("float32"), name="kernel")

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def __call__(self, x):
            with tf.name_scope("enc"):
                h = tf.tanh(x @ self.w1)
            with tf.name_scope("head"):
                return {"y": h @ self.w2}

    net = Net()
    d = tmp_path_factory.mktemp("module")
    tf.saved_model.save(net, str(d / "net"), signatures={"serving_default": net.__call__})
    np.save(d / "x.npy", np.random.default_rng(6).normal(size=(5, 3)).astype("float32"))
    return d, net.w1.numpy().astype(np.float64), net.w2.numpy().astype(np.float64)


def test_a_tf_module_in_closed_form(module_model):
    """loss = Σ y² with y = tanh(x W1) W2: d/dy = 2y, d/dh = 2y W2ᵀ, d/dW2 = hᵀ 2y,
    d/dW1 = xᵀ (2y W2ᵀ ⊙ (1 - h²)), in float64."""
    d, w1, w2 = module_model
    report, arrays = _grads(d / "net", d / "x.npy", "--pair", "enc:head", "--loss", "sumsq")
    x = np.load(d / "x.npy").astype(np.float64)
    h = np.tanh(x @ w1)
    y = h @ w2
    dh = 2 * y @ w2.T
    np.testing.assert_allclose(arrays["output/enc"], dh, rtol=1e-5)
    np.testing.assert_allclose(arrays["output/head"], 2 * y, rtol=1e-5)
    np.testing.assert_allclose(arrays["weight/head/kernel"], h.T @ (2 * y), rtol=1e-5)
    np.testing.assert_allclose(arrays["weight/enc/kernel"], x.T @ (dh * (1 - h**2)), rtol=1e-5)


def test_unknown_or_misordered_recovered_layers_are_one_error_line(exported):
    d = exported
    line = assert_one_error_line(run_cli("grad", d / "cnn_export", "--pair", "conv:hed", "--input", d / "cnn.npy"))
    assert "closest: head" in line
    line = assert_one_error_line(run_cli("grad", d / "cnn_export", "--pair", "head:conv", "--input", d / "cnn.npy"))
    assert "swap them" in line
    line = assert_one_error_line(run_cli("layers", d / "cnn_export", "--signature", "nope"))
    assert "no signature 'nope'" in line


def test_a_python_op_inside_a_layer_scope_is_refused_and_writes_nothing(keras, tmp_path):
    import tensorflow as tf

    marker = tmp_path / "marker"

    class Sneaky(tf.Module):
        def __init__(self):
            super().__init__()
            with tf.name_scope("enc"):
                self.w = tf.Variable(tf.ones((2, 2)), name="kernel")

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
        def __call__(self, x):
            with tf.name_scope("enc"):
                h = tf.py_function(lambda t: (marker.write_text("ran"), t)[1], [x @ self.w], tf.float32)
            with tf.name_scope("head"):
                return {"y": h * 2.0}

    net = Sneaky()
    tf.saved_model.save(net, str(tmp_path / "sneaky"), signatures={"serving_default": net.__call__})
    assert not marker.exists()
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (("layers",), ("grad", "--pair", "enc:head", "--save-npz", tmp_path / "g.npz")):
        line = assert_one_error_line(run_cli(args[0], tmp_path / "sneaky", *args[1:]), "refused to load")
        assert "EagerPyFunc" in line and "enc/" in line
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_exported_lstm_gives_the_keras_models_gradients(keras, tmp_path):
    """Keras exports an LSTM as a While loop that carries the variables into its body as resources;
    the rewritten loop takes their values, so the LSTM's weight gradients (through every step) and
    its output gradient equal the Keras model's."""
    L = keras.layers
    keras.utils.set_random_seed(4)
    x = keras.Input((5, 3), name="seq")
    model = keras.Model(x, L.Dense(2, name="head")(L.LSTM(4, name="lstm")(x)))
    model.save(tmp_path / "lstm.keras")
    model.export(tmp_path / "lstm_export", verbose=False)
    np.save(tmp_path / "x.npy", np.random.default_rng(2).normal(size=(3, 5, 3)).astype("float32"))
    report, graph = _grads(tmp_path / "lstm_export", tmp_path / "x.npy", "--pair", "lstm:head", "--loss", "sumsq")
    _, native = _grads(tmp_path / "lstm.keras", tmp_path / "x.npy", "--pair", "lstm:head", "--loss", "sumsq")
    assert sorted(graph) == sorted(native) and "weight/lstm/lstm_cell/recurrent_kernel" in graph
    for key in graph:
        np.testing.assert_allclose(graph[key], native[key], rtol=1e-5, atol=1e-7, err_msg=key)
    assert not any("While loop" in n for n in report["notes"])


def test_listing_an_export_never_imports_tensorflow(exported):
    import subprocess
    import sys

    code = (
        "import sys; from gradinspect.commands.layers import list_layers; "
        f"r = list_layers({str(exported / 'cnn_export')!r}); "
        "print(r.source, len(r.layers), 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["graph", "7", "False"]


def _looped_module(tf, counted: bool):
    """`enc` → a tf.while_loop of 3 steps h = tanh(h @ step.kernel) → `head`; with ``counted``, the
    body also adds 1 to a `step/count` variable (a write, so that variable stays a resource)."""

    class Looped(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(8)
            with tf.name_scope("enc"):
                self.w1 = tf.Variable(rng.normal(size=(3, 4)).astype("float32"), name="kernel")
            with tf.name_scope("step"):
                self.w2 = tf.Variable(0.3 * rng.normal(size=(4, 4)).astype("float32"), name="kernel")
                self.count = tf.Variable(0.0, name="count")
            with tf.name_scope("head"):
                self.w3 = tf.Variable(rng.normal(size=(4, 2)).astype("float32"), name="kernel")

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def __call__(self, x):
            with tf.name_scope("enc"):
                h = tf.tanh(x @ self.w1)

            def body(i, h):
                with tf.name_scope("step"):
                    if counted:
                        self.count.assign_add(1.0)
                    return i + 1, tf.tanh(h @ self.w2)

            _, h = tf.while_loop(lambda i, h: i < 3, body, [tf.constant(0), h])
            with tf.name_scope("head"):
                return {"y": h @ self.w3}

    return Looped()


def _saved_looped(tf, tmp_path, counted: bool):
    net = _looped_module(tf, counted)
    tf.saved_model.save(net, str(tmp_path / "looped"), signatures={"serving_default": net.__call__})
    x = np.random.default_rng(9).normal(size=(4, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    return net, x


def _assert_live_gradients(tf, net, x, arrays):
    """enc's and head's gradients equal a tape's on the live module (which runs the same loop)."""
    with tf.GradientTape() as tape:
        y = net(tf.constant(x))["y"]
        loss = tf.reduce_sum(y**2)
    w1, w3 = tape.gradient(loss, [net.w1, net.w3])
    np.testing.assert_allclose(arrays["output/head"], 2 * y.numpy(), rtol=1e-5)
    np.testing.assert_allclose(arrays["weight/enc/kernel"], w1.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(arrays["weight/head/kernel"], w3.numpy(), rtol=1e-5, atol=1e-7)


def test_a_scope_inside_a_loop_body_is_listed_as_not_recoverable(keras, tmp_path):
    """`step` exists only inside a tf.while_loop body: listed with the reason, refused by name, while
    `enc` and `head` around the loop get the gradients a tape on the live module gives."""
    import tensorflow as tf

    net, x = _saved_looped(tf, tmp_path, counted=False)
    listing = json.loads(run_cli("layers", tmp_path / "looped", "-f", "json").stdout)
    rows = {row["name"]: row for row in listing["layers"]}
    assert [n for n in rows if "note" not in rows[n]] == ["enc", "head"]
    assert "inside the While loop" in rows["step"]["note"]
    line = assert_one_error_line(
        run_cli("grad", tmp_path / "looped", "--pair", "enc:step", "--input", tmp_path / "x.npy")
    )
    assert "not recoverable" in line and "While" in line
    _, arrays = _grads(tmp_path / "looped", tmp_path / "x.npy", "--pair", "enc:head", "--loss", "sumsq")
    _assert_live_gradients(tf, net, x, arrays)


@pytest.mark.parametrize("kind", ["masked_lstm", "bidirectional_gru"])
def test_exported_rnns_with_masks_and_bidirectional_wrappers(keras, tmp_path, kind):
    """An Embedding with mask_zero feeding an LSTM (the mask's ops sit between the layer scopes),
    and a Bidirectional GRU (two loops; Keras 3 names its variables forward_gru/…, backward_gru/…
    without the wrapper's name): every layer is recovered and every gradient equals the Keras
    model's, under distinct --save-npz keys."""
    L = keras.layers
    keras.utils.set_random_seed(6)
    rng = np.random.default_rng(6)
    if kind == "masked_lstm":
        x = keras.Input((7,), dtype="int32", name="tok")
        out = L.Dense(2, name="out")(L.LSTM(5, name="rnn")(L.Embedding(20, 6, mask_zero=True, name="emb")(x)))
        data, layers = np.concatenate([rng.integers(1, 20, (4, 5)), np.zeros((4, 2))], 1).astype("int32"), 3
    else:
        x = keras.Input((6, 3), name="x")
        h = L.Bidirectional(L.GRU(4, return_sequences=True), name="bi")(x)
        out = L.Dense(1, name="out")(L.GlobalAveragePooling1D(name="gap")(h))
        data, layers = rng.normal(size=(3, 6, 3)).astype("float32"), 3
    model = keras.Model(x, out)
    model.save(tmp_path / "m.keras")
    model.export(tmp_path / "m_export", verbose=False)
    np.save(tmp_path / "x.npy", data)
    listing = json.loads(run_cli("layers", tmp_path / "m_export", "-f", "json").stdout)
    assert len(listing["layers"]) == layers and not any("note" in row for row in listing["layers"])
    _, graph = _grads(tmp_path / "m_export", tmp_path / "x.npy", "--all", "--loss", "sumsq")
    _, native = _grads(tmp_path / "m.keras", tmp_path / "x.npy", "--all", "--loss", "sumsq")
    assert sorted(graph) == sorted(native)
    assert len([k for k in graph if k.startswith("weight/")]) == (6 if kind == "masked_lstm" else 8)
    for key in graph:
        scale = float(np.abs(native[key]).max()) or 1.0
        np.testing.assert_allclose(graph[key], native[key], rtol=1e-5, atol=1e-6 * scale, err_msg=key)


def test_an_exported_shared_layer_is_one_layer_with_two_calls(keras, tmp_path):
    """A Dense called on two inputs is traced as two scopes reading one set of variables: it is
    listed once (its parameters counted once) and reported as Keras reports it: `output/shared`,
    `output/shared#1`, and one weight gradient summed over both calls."""
    L = keras.layers
    keras.utils.set_random_seed(2)
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    shared = L.Dense(2, name="shared")
    model = keras.Model([a, b], L.Dense(1, name="out")(L.Add(name="add")([shared(a), shared(b)])))
    model.save(tmp_path / "m.keras")
    model.export(tmp_path / "m_export", verbose=False)
    rng = np.random.default_rng(2)
    np.savez(
        tmp_path / "x.npz", a=rng.normal(size=(4, 3)).astype("float32"), b=rng.normal(size=(4, 3)).astype("float32")
    )
    listing = json.loads(run_cli("layers", tmp_path / "m_export", "-f", "json").stdout)
    assert [row["name"] for row in listing["layers"]] == ["shared", "add", "out"]
    assert listing["total_params"] == model.count_params() == 11
    _, graph = _grads(tmp_path / "m_export", tmp_path / "x.npz", "--all", "--loss", "sumsq")
    _, native = _grads(tmp_path / "m.keras", tmp_path / "x.npz", "--all", "--loss", "sumsq")
    assert {"output/shared", "output/shared#1", "weight/shared/kernel"} <= set(graph) and sorted(graph) == sorted(
        native
    )
    for key in graph:
        np.testing.assert_allclose(graph[key], native[key], rtol=1e-5, atol=1e-7, err_msg=key)


def test_a_nested_models_layers_are_recovered_one_by_one(keras, tmp_path):
    """A Sequential inside a Functional model: its scope only holds sub-scopes, so its layers are
    recovered one by one as `inner/i1`, `inner/i2` (Keras's paths), with the Keras model's gradients."""
    L = keras.layers
    keras.utils.set_random_seed(3)
    inner = keras.Sequential([L.Dense(4, activation="relu", name="i1"), L.Dense(3, name="i2")], name="inner")
    x = keras.Input((5,), name="x")
    model = keras.Model(x, L.Dense(2, name="head")(inner(L.Dense(5, name="pre")(x))))
    model.save(tmp_path / "m.keras")
    model.export(tmp_path / "m_export", verbose=False)
    np.save(tmp_path / "x.npy", np.random.default_rng(3).normal(size=(4, 5)).astype("float32"))
    listing = json.loads(run_cli("layers", tmp_path / "m_export", "-f", "json").stdout)
    assert [row["name"] for row in listing["layers"]] == ["pre", "inner/i1", "inner/i2", "head"]
    _, graph = _grads(tmp_path / "m_export", tmp_path / "x.npy", "--all", "--loss", "sumsq")
    _, native = _grads(tmp_path / "m.keras", tmp_path / "x.npy", "--all", "--loss", "sumsq")
    assert "weight/inner/i1/kernel" in graph and sorted(graph) == sorted(native)
    for key in graph:
        np.testing.assert_allclose(graph[key], native[key], rtol=1e-5, atol=1e-7, err_msg=key)


def test_a_variable_a_loop_writes_stays_a_resource_and_the_rest_is_exact(keras, tmp_path):
    """A loop body that writes a variable (a step counter) cannot take its value: that variable is
    passed as its handle, and the layers around the loop still get the live module's gradients."""
    import tensorflow as tf

    net, x = _saved_looped(tf, tmp_path, counted=True)
    _, arrays = _grads(tmp_path / "looped", tmp_path / "x.npy", "--pair", "enc:head", "--loss", "sumsq")
    _assert_live_gradients(tf, net, x, arrays)


def test_signature_chooses_the_function_layers_and_gradients_come_from(exported):
    """Keras exports `serve` and `serving_default` (the same function): --signature picks one, and
    both give the same gradients; `layers` says which signature its layers came from."""
    d = exported
    a_report, a = _grads(d / "mlp_export", d / "mlp.npy", "--pair", "d1:d2", "--signature", "serve")
    _, b = _grads(d / "mlp_export", d / "mlp.npy", "--pair", "d1:d2")
    assert "signature 'serve'" in " ".join(a_report["notes"])
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    listing = json.loads(run_cli("layers", d / "mlp_export", "--signature", "serve", "-f", "json").stdout)
    assert listing["graph_signature"] == "serve"


def test_a_chosen_layers_variable_that_a_loop_writes_is_named_in_a_note(keras, tmp_path):
    """`enc` reads its kernel, and a loop later writes it: the kernel stays a resource, so enc's
    weight gradient is left out with a note naming the op; its output gradient is still reported."""
    import tensorflow as tf

    class Rewritten(tf.Module):
        def __init__(self):
            super().__init__()
            with tf.name_scope("enc"):
                self.w = tf.Variable(np.eye(3, dtype="float32"), name="kernel")
            with tf.name_scope("head"):
                self.w2 = tf.Variable(np.ones((3, 1), "float32"), name="kernel")

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def __call__(self, x):
            with tf.name_scope("enc"):
                h = tf.tanh(x @ self.w)

            def body(i, h):
                with tf.name_scope("step"):
                    self.w.assign_add(tf.zeros((3, 3)))
                    return i + 1, h

            _, h = tf.while_loop(lambda i, h: i < 1, body, [tf.constant(0), h])
            with tf.name_scope("head"):
                return {"y": h @ self.w2}

    net = Rewritten()
    tf.saved_model.save(net, str(tmp_path / "rewritten"), signatures={"serving_default": net.__call__})
    np.save(tmp_path / "x.npy", np.ones((2, 3), "float32"))
    report, arrays = _grads(tmp_path / "rewritten", tmp_path / "x.npy", "--pair", "enc:head", "--loss", "sum")
    assert "output/enc" in arrays and "weight/enc/kernel" not in arrays and "weight/head/kernel" in arrays
    assert any("variables of enc (by 'while')" in n for n in report["notes"]), report["notes"]
    np.testing.assert_allclose(arrays["output/enc"], np.ones((2, 3)))  # d sum(h @ ones) / d h
