"""Untrusted artifacts and bad inputs: refused cleanly, nothing run, nothing changed on disk."""

from __future__ import annotations

import json
import shutil
import textwrap

import numpy as np
import pytest
from conftest import SAMPLES, assert_one_error_line, edited_keras_copy, marker_lambda, run_cli, sha256
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def wrapped_lambdas(keras, tf_keras, tmp_path_factory):
    """Lambdas hidden inside TimeDistributed and Bidirectional-style wrappers."""
    d = tmp_path_factory.mktemp("wrapped")
    marker = d / "MARKER"
    L = keras.layers
    x = keras.Input((4, 3), name="seq")
    h = L.TimeDistributed(L.Lambda(marker_lambda(marker), name="hidden"), name="td")(x)
    keras.Model(x, L.Dense(1, name="out")(h)).save(d / "td.keras")
    tk = tf_keras.layers
    x2 = tf_keras.Input((4, 3), name="seq")
    h2 = tk.TimeDistributed(tk.Lambda(marker_lambda(marker), name="hidden"), name="td")(x2)
    tf_keras.Model(x2, tk.Dense(1, name="out")(h2)).save(d / "td_tf_keras.h5")
    marker.unlink(missing_ok=True)
    return d, marker


@pytest.mark.parametrize("name", ["td.keras", "td_tf_keras.h5"])
@pytest.mark.parametrize("command", ["layers", "grad", "check", "verify"])
def test_lambda_inside_a_wrapper_is_refused_by_every_command(wrapped_lambdas, name, command):
    d, marker = wrapped_lambdas
    extra = {"grad": ["--all"], "verify": ["--layer", "td"]}.get(command, [])
    line = assert_one_error_line(run_cli(command, d / name, *extra), "refused", "Lambda")
    assert "td/hidden" in line
    assert not marker.exists()


def test_unsafe_is_the_one_way_past_and_says_so(wrapped_lambdas):
    d, marker = wrapped_lambdas
    result = run_cli("grad", d / "td.keras", "--all", "--unsafe", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert "--unsafe: the safety scan is off" in result.stderr
    assert marker.exists()  # the Lambda ran: that is what --unsafe allows
    marker.unlink()


NOT_DIFFERENTIABLE = textwrap.dedent(
    """
    import keras

    @keras.saving.register_keras_serializable(package="gi_argmax")
    class ArgMax(keras.layers.Layer):
        def call(self, x):
            return keras.ops.argmax(x, axis=-1)

        def compute_output_spec(self, x):
            return keras.KerasTensor(x.shape[:-1], dtype="int64")
    """
)


@pytest.fixture(scope="module")
def battery(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("battery")
    (d / "argmax.py").write_text(NOT_DIFFERENTIABLE)
    ns: dict = {}
    exec(compile(NOT_DIFFERENTIABLE, str(d / "argmax.py"), "exec"), ns)  # noqa: S102
    x = keras.Input((3,), name="x")
    keras.Model(x, ns["ArgMax"](name="pick")(keras.layers.Dense(4, name="d")(x))).save(d / "argmax.keras")
    # An unknown layer class: the config names a class no Keras has.
    edited_keras_copy(d / "unknown.keras", lambda cfg: cfg["config"]["layers"][2].update(class_name="Dense2000"))
    return d


def test_model_whose_output_is_not_differentiable(battery):
    d = battery
    assert_one_error_line(
        run_cli("grad", d / "argmax.keras", "--all", "--custom-objects", d / "argmax.py"),
        "which has no gradient",
        "is int",
    )


def test_unknown_layer_class(battery):
    line = assert_one_error_line(run_cli("grad", battery / "unknown.keras", "--all"), "Dense2000")
    assert str(battery / "unknown.keras") in line


@pytest.mark.slow
def test_integer_input_into_float_model_is_cast_and_reported(tmp_path):
    np.save(tmp_path / "u8.npy", np.array([[1, 2], [250, 3]], dtype="uint8"))
    result = run_cli("grad", SAMPLES / "mlp.keras", "--all", "--input", tmp_path / "u8.npy", "-f", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["notes"] == ["input 'x': uint8 values cast to float32"]


def test_no_partial_output_when_interrupted(tmp_path, monkeypatch):
    """An interrupted write leaves the old file as it was and no temporary file behind."""
    from gradinspect import destinations

    target = tmp_path / "report.json"
    target.write_text("old contents")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(destinations.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        destinations.atomic_write(target, "new contents" * 1000)
    assert target.read_text() == "old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


@pytest.mark.slow
def test_failing_command_writes_no_output_file(tmp_path):
    out = tmp_path / "out.json"
    npz = tmp_path / "g.npz"
    result = run_cli("grad", SAMPLES / "mlp.keras", "--from", "nope", "--to", "dense_2", "-o", out, "--save-npz", npz)
    assert result.exit_code == 2
    assert list(tmp_path.iterdir()) == []


COMMANDS = [
    ["layers"],
    ["grad", "--all", "--input", "{input}", "-f", "json", "--save-npz", "{out}/g.npz", "-o", "{out}/r.json"],
    ["grad", "--from", "dense_1", "--to", "dense_2", "--input", "{input}", "--stage2", "seed", "--through"],
    ["check", "--input", "{input}", "--write-baseline", "{out}/b.json", "-f", "junit", "-o", "{out}/c.xml"],
    ["verify", "--layer", "dense_1", "--input", "{input}"],
]


@pytest.mark.slow
@pytest.mark.parametrize("args", COMMANDS, ids=[a[0] + str(i) for i, a in enumerate(COMMANDS)])
@pytest.mark.parametrize("name", ["mlp.keras", "mlp.h5", "mlp_savedmodel"])
def test_read_only_model_and_input_are_unchanged(tmp_path, name, args):
    models = tmp_path / "models"
    models.mkdir()
    src = SAMPLES / name
    model = models / name
    (shutil.copytree if src.is_dir() else shutil.copy)(src, model)
    data = models / "input.npy"
    shutil.copy(SAMPLES / ("mlp_savedmodel_input.npy" if "savedmodel" in name else "mlp_input.npy"), data)
    out = tmp_path / "out"
    out.mkdir()
    for p in [model, data, *(model.rglob("*") if model.is_dir() else [])]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    models.chmod(0o555)
    before = {p.name: sha256(p) for p in models.iterdir()}
    try:
        argv = [a.format(input=data, out=out) for a in args]
        result = run_cli(argv[0], model, *argv[1:])
        assert result.exit_code == 0, result.stderr
        assert {p.name: sha256(p) for p in models.iterdir()} == before
        assert sorted(p.name for p in models.iterdir()) == sorted(before)
        assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    finally:
        models.chmod(0o755)


# --- property tests: arbitrary bytes and strings never escape as anything but GradinspectError


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".npy", ".npz", ".csv", ".json", ".h5"]))
def test_input_readers_never_fail_uncleanly(tmp_path, data, suffix):
    from gradinspect.engine.readers import read_arrays
    from gradinspect.engine.source import check_arrays
    from gradinspect.errors import GradinspectError
    from gradinspect.report import InputSpec

    path = tmp_path / f"data{suffix}"
    path.write_bytes(data)
    try:
        arrays = read_arrays(str(path), ["x"])
        check_arrays(arrays, [InputSpec("x", (None, 2), "float32")], f"--input {path}")
    except GradinspectError:
        pass


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_csv_and_json_text_never_fail_uncleanly(tmp_path, text):
    from gradinspect.engine.readers import read_arrays
    from gradinspect.engine.source import check_arrays
    from gradinspect.errors import GradinspectError
    from gradinspect.report import InputSpec

    for suffix in (".csv", ".json"):
        path = tmp_path / f"t{suffix}"
        path.write_text(text)
        try:
            arrays = read_arrays(str(path), ["x"])
            check_arrays(arrays, [InputSpec("x", (None, 2), "float32")], "--input")
        except GradinspectError:
            pass


@settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=300), suffix=st.sampled_from([".keras", ".h5"]))
def test_model_readers_never_fail_uncleanly(tmp_path, data, suffix):
    from gradinspect.artifacts.formats import read_artifact
    from gradinspect.errors import GradinspectError

    path = tmp_path / f"m{suffix}"
    path.write_bytes(data)
    try:
        read_artifact(path)
    except GradinspectError:
        pass
