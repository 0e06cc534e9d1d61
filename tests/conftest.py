"""Shared fixtures: tiny real Keras models saved to temp dirs, the sample models, the real-model corpus."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# In-process CLI runs (CliRunner) call the core directly instead of starting a TensorFlow child
# per run; tests/security/test_process_attacks.py runs the executable with the child on.
os.environ["GRADINSPECT_IN_PROCESS"] = "1"

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"
REAL_MODELS = Path(os.environ.get("GRADINSPECT_REAL_MODELS", REPO.parent / "shared" / "real_models"))


# Fixtures that load TensorFlow: a test that needs any of them (directly or through another
# fixture) is slow.
_TENSORFLOW_FIXTURES = frozenset({"keras", "tf_keras"})


class TensorFlowInFastTest(BaseException):
    """Raised when a test not marked slow imports TensorFlow in a ``-m "not slow"`` run."""


class _NoTensorFlow:
    """A meta path finder that refuses TensorFlow, Keras and tf_keras (the fast loop's guard)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise TensorFlowInFastTest(f"{name} imported by a test not marked slow: mark it @pytest.mark.slow")
        return None


def pytest_configure(config):
    if (config.option.markexpr or "").strip() == "not slow":
        sys.meta_path.insert(0, _NoTensorFlow())


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _TENSORFLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if not REAL_MODELS.is_dir():
        skip = pytest.mark.skip(reason=f"real-model corpus not found at {REAL_MODELS}")
        for item in items:
            if "real_models" in item.fixturenames:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def real_models(tmp_path_factory) -> Path:
    """A read-only copy of ../shared/real_models (the originals are never handed to a loader)."""
    dst = tmp_path_factory.mktemp("real") / "real_models"
    shutil.copytree(REAL_MODELS, dst)
    return dst


@pytest.fixture(scope="session")
def keras():
    from gradinspect.artifacts.loading import quiet_tensorflow

    quiet_tensorflow("keras", "tf_keras")
    warnings.filterwarnings("ignore")
    import keras

    return keras


@pytest.fixture(scope="session")
def tf_keras(keras):
    import tf_keras

    return tf_keras


@pytest.fixture(scope="session")
def hostile_savedmodels(keras, tmp_path_factory):
    """Two tf.Module SavedModels that write MARKER: from the serving function (serve_writes) and
    while creating a resource on load (resource_writes)."""
    import tensorflow as tf

    d = tmp_path_factory.mktemp("hostile_sm")
    marker = d / "MARKER"

    class Serve(tf.Module):
        def __init__(self):
            self.v = tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
        def serve(self, x):
            tf.io.write_file(str(marker), "pwned")
            return {"y": x * self.v}

    class Resource(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self):
            tf.io.write_file(str(marker), "pwned")
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="r")

    class WithResource(tf.Module):
        def __init__(self):
            self.r = Resource()
            self.v = tf.Variable(1.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
        def serve(self, x):
            # Using the resource makes the restored object create it (running _create_resource).
            tf.raw_ops.VarIsInitializedOp(resource=self.r.resource_handle)
            return {"y": x * self.v}

    serve = Serve()
    tf.saved_model.save(serve, str(d / "serve_writes"), signatures={"serving_default": serve.serve})
    res = WithResource()
    tf.saved_model.save(res, str(d / "resource_writes"), signatures={"serving_default": res.serve})
    if marker.exists():
        marker.unlink()
    return d, marker


def marker_lambda(marker: Path):
    """A lambda whose bytecode carries the marker path as a constant, so that it survives
    serialization: running it anywhere (even inside a loader) creates the marker file."""
    return eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")  # noqa: S307


def edited_keras_copy(dst: Path, edit, src: Path = SAMPLES / "mlp.keras") -> Path:
    """A copy of a `.keras` archive whose config.json went through ``edit(config)``."""
    import json
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "config.json":
                cfg = json.loads(data)
                edit(cfg)
                data = json.dumps(cfg).encode()
            zout.writestr(item, data)
    return dst


def edited_h5_copy(dst: Path, edit, src: Path) -> Path:
    """A copy of a legacy `.h5` model whose `model_config` went through ``edit(config)``."""
    import json

    import h5py

    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as h5:
        cfg = json.loads(h5.attrs["model_config"])
        edit(cfg)
        h5.attrs["model_config"] = json.dumps(cfg)
    return dst


def run_cli(*args: str):
    """Run the real Click command in-process; stdout and stderr are kept apart."""
    from gradinspect.cli import main

    runner = CliRunner()
    return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def sha256(path: Path) -> str:
    """Hash of a file, or of every file below a directory (names included)."""
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode())
                h.update(p.read_bytes())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def assert_one_error_line(result, *needles: str) -> str:
    """The bad-input contract: exit 2, nothing on stdout, exactly one `Error:` line, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="session")
def zoo(keras, tmp_path_factory):
    """Models covering nested models, shared layers, BN, RNN wrappers, multi-input; saved as .keras and .h5."""
    L = keras.layers
    out = tmp_path_factory.mktemp("zoo")
    keras.utils.set_random_seed(7)
    models = {}

    inner = keras.Sequential([L.Dense(4, name="i1"), L.Dense(4, name="i2", trainable=False)], name="inner")
    x = keras.Input((6, 5), name="seq")
    h = L.Bidirectional(L.LSTM(3, return_sequences=True), name="bilstm")(x)
    h = L.Dropout(0.2, name="drop")(h)
    h = L.LayerNormalization(name="ln")(h)
    h = L.Flatten(name="flat")(h)
    h = inner(h)
    h = L.BatchNormalization(center=False, name="bn")(h)
    models["nested"] = keras.Model(x, L.Dense(1, name="head")(h), name="nested")

    a = keras.Input((3,), name="a")
    b = keras.Input((3,), name="b")
    shared = L.Dense(2, name="shared")
    merged = L.Add(name="add")([shared(a), shared(b)])
    models["shared"] = keras.Model([a, b], L.Dense(1, name="out")(merged), name="shared_model")

    models["cnn"] = keras.Sequential(
        [
            keras.Input((9, 9, 2)),
            L.Conv2D(3, 3, strides=2, padding="same", name="c1"),
            L.DepthwiseConv2D(2, name="dw"),
            L.AveragePooling2D(2, name="ap"),
            L.GlobalMaxPooling2D(name="gmp"),
            L.Dense(2, name="d"),
        ],
        name="cnn_zoo",
    )

    e = keras.Input((5,), dtype="int32", name="tokens")
    h = L.Embedding(10, 3, name="emb")(e)
    h = L.GRU(4, name="gru")(h)
    models["embed"] = keras.Model(e, L.Dense(1, name="o")(h), name="embed")

    paths = {}
    for name, model in models.items():
        for ext in ("keras", "h5"):
            p = out / f"{name}.{ext}"
            model.save(p)
            paths[(name, ext)] = p
    return models, paths


@pytest.fixture(scope="session")
def article(keras, tmp_path_factory):
    """The article's model: x = [[1,2],[3,4]], Dense(3, no bias) -> Dense(2, no bias), sum loss.

    Seeded random weights, saved as .keras and .h5; returns (folder, x, W1, W2) in float64.
    """
    import numpy as np

    d = tmp_path_factory.mktemp("article")
    L = keras.layers
    x_in = keras.Input((2,), name="x")
    h1 = L.Dense(3, use_bias=False, name="dense_1")(x_in)
    model = keras.Model(x_in, L.Dense(2, use_bias=False, name="dense_2")(h1))
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


@pytest.fixture(scope="session")
def stream_mlp(keras, tmp_path_factory):
    """A small tanh MLP (x → hidden → out) in m.keras, 70 samples in x.npy and 70 targets in t.npy:
    batches of 16 leave a short last batch of 6. Returns the folder and the model."""
    import numpy as np

    d = tmp_path_factory.mktemp("stream")
    keras.utils.set_random_seed(8)
    x = keras.Input((5,), name="x")
    h = keras.layers.Dense(4, activation="tanh", name="hidden")(x)
    model = keras.Model(x, keras.layers.Dense(3, name="out")(h))
    model.save(d / "m.keras")
    np.save(d / "x.npy", np.random.default_rng(0).normal(size=(70, 5)).astype("float32"))
    np.save(d / "t.npy", np.random.default_rng(1).normal(size=(70, 3)).astype("float32"))
    return d, model


def stream_grad(d: Path, *args: str):
    """`grad --from hidden --to out` on :func:`stream_mlp`'s model and inputs, plus ``args``: the
    JSON report and the --save-npz arrays."""
    import json

    import numpy as np

    npz = d / f"g{abs(hash(args))}.npz"
    result = run_cli(
        "grad", d / "m.keras", "--from", "hidden", "--to", "out", "--input", d / "x.npy", "--save-npz", npz,
        "--force", "-f", "json", *args,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    with np.load(npz) as saved:
        return json.loads(result.stdout), {k: saved[k] for k in saved.files}


def tf_reachable(saved_model) -> tuple[set[str], set[str]]:
    """The independent computation of what a SavedModel runs, on TensorFlow's own parse (a
    ``saved_model_pb2.SavedModel``): (library functions, op types) reachable from the object
    graph's functions and from the main-graph nodes a signature names, with their inputs."""
    (meta,) = saved_model.meta_graphs
    library = {f.signature.name: f for f in meta.graph_def.library.function}
    main = {n.name: n for n in meta.graph_def.node}
    stack = list(meta.object_graph_def.concrete_functions)
    for obj in meta.object_graph_def.nodes:
        stack.extend(obj.function.concrete_functions)
        if obj.HasField("bare_concrete_function"):
            stack.append(obj.bare_concrete_function.concrete_function_name)
    stack += [g.gradient_func for g in meta.graph_def.library.gradient]
    stack += [g.gradient_func for g in meta.graph_def.library.registered_gradients]
    named = [t.name for sig in meta.signature_def.values() for t in (*sig.inputs.values(), *sig.outputs.values())]
    todo = [n.lstrip("^").split(":")[0] for n in named]

    def calls(node_or_fn, attrs):
        out = []
        for a in attrs:
            funcs = ([a.func] if a.HasField("func") else []) + list(a.list.func)
            for f in funcs:
                out.append(f.name)
                out += calls(None, f.attr.values())
        if node_or_fn is not None and node_or_fn.op in library:
            out.append(node_or_fn.op)
        return out

    ops, seen_nodes, seen = set(), set(), set()
    while todo:
        name = todo.pop()
        if name in seen_nodes or name not in main:
            continue
        seen_nodes.add(name)
        ops.add(main[name].op)
        stack.extend(calls(main[name], main[name].attr.values()))
        todo.extend(r.lstrip("^").split(":")[0] for r in main[name].input)
    while stack:
        name = stack.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        stack.extend(calls(None, library[name].attr.values()))
        for node in library[name].node_def:
            ops.add(node.op)
            stack.extend(calls(node, node.attr.values()))
    return seen, ops
