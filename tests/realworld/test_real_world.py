"""Real-world artifacts: the classes of third-party files that Keras can read give gradients, the rest their reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import edited_h5_copy, run_cli


def test_keras3_h5_with_two_inputs_loads(keras, tmp_path):
    """Keras 3 orders the loaded inputs differently from the config; the shapes are compared by content."""
    img = keras.Input((4, 4, 1), name="img")
    num = keras.Input((3,), name="num")
    merged = keras.layers.Concatenate(name="cat")([keras.layers.Flatten(name="flat")(img), num])
    keras.Model([img, num], keras.layers.Dense(2, name="head")(merged)).save(tmp_path / "saved.h5")
    # The config lists the inputs in the other order than its layers: Keras 3 orders the loaded
    # model's inputs by input_layers, the listing by layers.
    edited_h5_copy(tmp_path / "two.h5", lambda c: c["config"]["input_layers"].reverse(), tmp_path / "saved.h5")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", img=rng.normal(size=(2, 4, 4, 1)), num=rng.normal(size=(2, 3)))
    result = run_cli("grad", tmp_path / "two.h5", "--all", "--input", tmp_path / "x.npz", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["model"]["loader"] == "keras"


def test_baselines_compare_data_not_input_names(keras, tmp_path):
    """A retrained model whose input Keras named differently compares with the baseline of the same data."""
    for name, scale in (("input_layer", 1.0), ("input_layer_1", 1.5)):
        x = keras.Input((3,), name=name)
        model = keras.Model(x, keras.layers.Dense(2, name="d", kernel_initializer="ones")(x))
        model.get_layer("d").kernel.assign(scale * np.ones((3, 2)))
        model.save(tmp_path / f"{name}.keras")
    np.save(tmp_path / "x.npy", np.ones((2, 3), dtype=np.float32))
    base = tmp_path / "base.json"
    written = run_cli("check", tmp_path / "input_layer.keras", "--input", tmp_path / "x.npy", "--write-baseline", base)
    assert written.exit_code == 0, written.stderr
    compared = run_cli("check", tmp_path / "input_layer_1.keras", "--input", tmp_path / "x.npy", "--baseline", base)
    assert compared.exit_code == 0, compared.stderr  # same data: compared, and the gradients (d loss/d kernel) agree
    assert "other inputs" not in compared.stderr


def test_an_old_baseline_asks_to_be_written_again(tmp_path):
    from conftest import SAMPLES, assert_one_error_line

    old = tmp_path / "old.json"
    old.write_text(json.dumps({"gradinspect_baseline": 1, "norms": {}}))
    assert_one_error_line(run_cli("check", SAMPLES / "mlp.keras", "--baseline", old), "write it again")


def test_a_nested_model_as_a_pair_end_keeps_every_array(keras, tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    block = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(3, name="i1"), keras.layers.Dense(2, name="i2")], name="block"
    )
    x = keras.Input((4,), name="x")
    model = keras.Model(x, block(keras.layers.Dense(3, name="pre")(x)))
    model.save(tmp_path / "nested.keras")
    data = np.random.default_rng(1).normal(size=(2, 4)).astype("float32")
    np.save(tmp_path / "x.npy", data)
    result = run_cli(
        "grad", tmp_path / "nested.keras", "--from", "pre", "--to", "block", "--input", tmp_path / "x.npy",
        "--save-npz", tmp_path / "g.npz",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    with np.load(tmp_path / "g.npz") as saved:
        weights = sorted(k for k in saved.files if k.startswith("weight/"))
        expected = ["weight/pre/kernel", "weight/pre/bias"]
        expected += [f"weight/block/{p}/{v}" for p in ("i1", "i2") for v in ("kernel", "bias")]
        assert weights == sorted(expected)
        inner = model.get_layer("block").get_layer("i2")
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(data))
        np.testing.assert_allclose(
            saved["weight/block/i2/kernel"], tape.gradient(loss, inner.kernel).numpy(), rtol=1e-5
        )


@pytest.mark.parametrize("rows", [1, 2])
def test_duplicate_npz_keys_are_a_bug_not_a_silent_overwrite(rows):
    """Two different gradients under one key would lose one: a bug. The same gradient twice (one
    variable reached through two pair ends) is stored once."""
    from gradinspect.engine.entries import weight_entry
    from gradinspect.engine.passes import VariableGradient

    class Var:
        def numpy(self):
            return np.ones((rows,))

    arrays: dict = {}
    weight_entry(VariableGradient("layer", "kernel", Var(), np.ones((rows,))), "", arrays)
    weight_entry(VariableGradient("layer", "kernel", Var(), np.ones((rows,))), "", arrays)  # equal: one key
    assert list(arrays) == ["weight/layer/kernel"]
    other = VariableGradient("layer", "kernel", Var(), np.full((rows,), 2.0))
    with pytest.raises(RuntimeError, match="two different gradients have the --save-npz key 'weight/layer/kernel'"):
        weight_entry(other, "", arrays)


@pytest.mark.slow
def test_no_tensorflow_log_lines_with_a_custom_objects_file(tmp_path):
    """A --custom-objects file that imports TensorFlow used to let its start-up log lines through."""
    import os
    import subprocess
    import sys

    from conftest import REPO, SAMPLES

    objects = tmp_path / "objects.py"
    objects.write_text("import tensorflow as tf\nimport keras\n\n\ndef swish2(x):\n    return x * tf.sigmoid(x)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    command = [sys.executable, "-m", "gradinspect", "grad", str(SAMPLES / "mlp.keras"), "--all"]
    proc = subprocess.run(
        [*command, "--custom-objects", str(objects)], capture_output=True, text=True, timeout=300, cwd=REPO, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    # The CPU kernel choice is the user's: gradinspect does not switch oneDNN off.
    probe = (
        "import os, gradinspect.artifacts.loading as loading; loading.quiet_tensorflow(); "
        "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    assert out.stdout.strip() == "None"


def test_compile_time_objects_from_add_ons_do_not_block_gradients(keras, tmp_path):
    """A loss from an add-on package in compile_config is data (models load without compiling)."""
    import zipfile

    from conftest import SAMPLES, assert_one_error_line

    src, dst = SAMPLES / "mlp.keras", tmp_path / "addons.keras"
    focal = {
        "module": "tensorflow_addons.losses",
        "class_name": "SigmoidFocalCrossEntropy",
        "config": {"alpha": 0.25},
        "registered_name": "Addons>SigmoidFocalCrossEntropy",
    }
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "config.json":
                cfg = json.loads(data)
                cfg["compile_config"] = {"loss": focal, "metrics": [{"class_name": "Addons>F1Score", "config": {}}]}
                data = json.dumps(cfg).encode()
            zout.writestr(item, data)
    assert run_cli("grad", dst, "--all").exit_code == 0
    assert_one_error_line(run_cli("grad", dst, "--all", "--loss", "compiled"), "--loss compiled", "name the loss")
    # Code stays refused wherever it hides, the compile config included.
    lam = {"class_name": "__lambda__", "config": {"code": "...", "defaults": None, "closure": None}}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp_path / "lam.keras", "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "config.json":
                cfg = json.loads(data)
                cfg["compile_config"] = {"loss": lam}
                data = json.dumps(cfg).encode()
            zout.writestr(item, data)
    assert_one_error_line(run_cli("grad", tmp_path / "lam.keras", "--all"), "serialized Python lambda")


@pytest.fixture(scope="module")
def token_model(keras, tmp_path_factory):
    """Ids -> Masking -> Embedding(50, 4) -> pooling -> Dense, saved with a fixed batch of 3."""
    d = tmp_path_factory.mktemp("tokens")
    x = keras.Input(batch_shape=(3, 6), name="ids")
    emb = keras.layers.Embedding(50, 4, name="emb")(keras.layers.Masking(name="mask")(x))
    out = keras.layers.Dense(1, name="head")(keras.layers.GlobalAveragePooling1D(name="pool")(emb))
    keras.Model(x, out).save(d / "tokens.keras")
    return d


def test_random_draws_token_ids_and_honours_a_fixed_batch(token_model):
    result = run_cli(
        "grad", token_model / "tokens.keras", "--from", "emb", "--to", "head", "--random", "5", "-f", "json"
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["inputs"]["batch_size"] == 3
    source = data["inputs"]["source"]
    assert "token ids in [0, 50) for 'ids'" in source and "batch 3 fixed by 'ids'" in source
    emb = next(w for w in data["pairs"][0]["weights"] if w["layer"] == "emb")
    # Ids drawn over the whole vocabulary touch more than row 0 of the embedding matrix.
    assert emb["stats"]["zero_fraction"] < 1 - 1 / 50


def test_the_random_ids_are_the_documented_draw(token_model):
    from gradinspect.engine.source import RandomDraw, random_arrays
    from gradinspect.report import InputSpec

    arrays, source = random_arrays([InputSpec("ids", (3, 6), "float32")], RandomDraw(5, 7, ids={"ids": 50}))
    expected = np.random.default_rng(7).integers(0, 50, (3, 6)).astype("float32")
    np.testing.assert_array_equal(arrays["ids"], expected)


def test_savedmodel_with_an_unknown_feature_dimension_uses_the_metadata(tf_keras, tmp_path):
    """An adapted Normalization model built by a call, saved as a tf.keras SavedModel: its input is
    (None, None), but the metadata records the layers were built on (None, 9). Its saved adapt_step
    (which reads an iterator) is not refused either: it is never run, and reads no file."""
    norm = tf_keras.layers.Normalization(name="norm")
    norm.adapt(np.random.default_rng(0).random((20, 9)).astype("float32"))
    model = tf_keras.Sequential([norm, tf_keras.layers.Dense(1, name="d")])
    model(np.zeros((1, 9), "float32"))
    model.save(tmp_path / "sm", save_format="tf")
    result = run_cli("grad", tmp_path / "sm", "--from", "norm", "--to", "d", "--random", "2", "-f", "json")
    assert result.exit_code == 0, result.stderr
    outputs = json.loads(result.stdout)["pairs"][0]["outputs"]
    assert [o["shape"] for o in outputs] == [[2, 9], [2, 1]]


@pytest.mark.parametrize(
    "message,expected",
    [
        (
            "A total of 16 objects could not be loaded. Example error message for object <Dense name=dense, "
            "built=False>:\n\nLayer 'dense' was never built and thus it doesn't have any variables.\n\nList of objects",
            "Layer 'dense' was never built and thus it doesn't have any variables.",
        ),
        (
            "Exception encountered when calling layer 'embedding_3' (type Embedding).\n\n{{function_node "
            "__wrapped__ResourceGather}} indices[0,1] = 12 is not in [0, 10) [Op:ResourceGather]\n\nCall arguments "
            "received by layer 'embedding_3' (type Embedding):\n  • inputs=tf.Tensor(shape=(2, 3))",
            "layer 'embedding_3' (Embedding): indices[0,1] = 12 is not in [0, 10) [Op:ResourceGather]",
        ),
        (
            "Could not locate class 'Functional'. Make sure custom classes are decorated. Full object config: "
            "{'module': 'x', 'class_name': 'Functional', 'config': {'layers': []}}",
            "Could not locate class 'Functional'. Make sure custom classes are decorated.",
        ),
        ("Layer 'value' expected 2 variables, but received 0", "Layer 'value' expected 2 variables, but received 0"),
    ],
)
def test_errors_keep_their_reason(message, expected):
    from gradinspect.formatting import first_line

    assert first_line(ValueError(message)) == expected


def test_a_tf_keras_dot_keras_file_loads_with_tf_keras(tf_keras, tmp_path):
    """tf.keras 2.13-2.15 wrote .keras files (keras_version 2.x, modules keras.src.engine.*)."""
    import zipfile

    x = tf_keras.Input((3,), name="x")
    model = tf_keras.Model(x, tf_keras.layers.Dense(2, name="d")(x))
    model.save(tmp_path / "tfk.keras")
    old = tmp_path / "tfk215.keras"
    with zipfile.ZipFile(tmp_path / "tfk.keras") as zin, zipfile.ZipFile(old, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "metadata.json":
                data = json.dumps({"keras_version": "2.15.0"}).encode()
            zout.writestr(item, data.replace(b"tf_keras.src.engine", b"keras.src.engine"))
    np.save(tmp_path / "x.npy", np.ones((2, 3), dtype=np.float32))
    result = run_cli(
        "grad", old, "--all", "--input", tmp_path / "x.npy", "--save-npz", tmp_path / "g.npz", "-f", "json"
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"]["loader"] == "tf_keras"
    assert any("saved by tf.keras 2.15.0" in n for n in data["notes"])
    with np.load(tmp_path / "g.npz") as saved:  # d sum(x W + b) / d W = column sums of x
        np.testing.assert_allclose(saved["weight/d/kernel"], np.full((3, 2), 2.0))


def test_format_is_read_from_the_bytes(keras, tmp_path):
    """An HDF5 model under a .keras name (tf.keras 2.11 saved them so) loads as .h5, with a note."""
    x = keras.Input((3,), name="x")
    keras.Model(x, keras.layers.Dense(2, name="d")(x)).save(tmp_path / "m.h5")
    disguised = tmp_path / "m.keras"
    disguised.write_bytes((tmp_path / "m.h5").read_bytes())
    result = run_cli("grad", disguised, "--all", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert any("is an HDF5 (legacy .h5) model despite its name" in n for n in json.loads(result.stdout)["notes"])
    assert run_cli("layers", disguised).exit_code == 0


NEW_REAL_MODELS = [
    "tfkeras211_sentiment_embedding_really_h5.keras",
    "keras392_emg_lstm_unroll.keras",
    "keras3100_mpg_normalization.keras",
    "tfkeras210_charlm_bilstm_two_inputs.h5",
    "keras380_sentiment_embedding_gap.keras",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NEW_REAL_MODELS))
def test_the_newer_real_models_give_gradients_everywhere(real_models, name):
    args = ["--input-shape", "20"] if "really_h5" in name else []
    result = run_cli("grad", real_models / name, "--all", "--random", "2", *args, "-f", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    weights = [w for p in data["pairs"] for w in p["weights"]]
    assert weights and all(w["stats"] is not None and w["stats"]["nonfinite"] == 0 for w in weights)
    assert any(w["stats"]["norm"] > 0 for w in weights)
    if "embedding" in name:
        assert "token ids in [0, 10000)" in data["inputs"]["source"]
