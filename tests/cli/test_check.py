"""`gradinspect check` (rules, baselines, JUnit) and `gradinspect verify` (finite differences)."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import SAMPLES, assert_one_error_line, run_cli


def _last_stderr_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_healthy_model_passes():
    result = run_cli("check", SAMPLES / "mlp.keras", "--max-norm", "100", "--min-norm", "1e-8")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "PASS  29 checks, 0 failed"


@pytest.fixture(scope="module")
def broken_models(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("broken")
    L = keras.layers
    keras.utils.set_random_seed(5)
    x = keras.Input((3,), name="x")
    h = L.Dense(4, name="huge")(x)
    model = keras.Model(x, L.Dense(1, name="out")(L.Dense(4, activation="tanh", name="mid")(h)))
    model.get_layer("huge").set_weights([np.full((3, 4), np.inf, "float32"), np.zeros(4, "float32")])
    model.save(d / "nan.keras")

    x = keras.Input((3,), name="x")
    dead = L.Dense(4, activation="relu", name="dead")
    model = keras.Model(x, L.Dense(1, name="out")(dead(x)))
    dead.set_weights([np.ones((3, 4), "float32") * 0.01, np.full(4, -100.0, "float32")])
    model.save(d / "dead.keras")
    return d


def test_nonfinite_gradients_fail_naming_the_variable(broken_models):
    result = run_cli("check", broken_models / "nan.keras", "-f", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    failed = {(r["rule"], r["target"]) for r in data["results"] if not r["passed"]}
    assert ("nonfinite", "weight/huge/kernel") in failed
    assert _last_stderr_line(result) == f"{data['checks']} checks, {data['failed']} failed"
    allowed = run_cli("check", broken_models / "nan.keras", "--allow-nonfinite")
    assert allowed.exit_code == 0


def test_dead_relu_fails_max_zero_fraction(broken_models):
    result = run_cli("check", broken_models / "dead.keras", "--max-zero-fraction", "0.5")
    assert result.exit_code == 1
    assert "max-zero-fraction" in result.stdout and "weight/dead/kernel" in result.stdout
    assert "zero share too high" in result.stdout  # the numbers are in the Value and Limit columns
    as_json = run_cli("check", broken_models / "dead.keras", "--max-zero-fraction", "0.5", "-f", "json")
    messages = [r["message"] for r in json.loads(as_json.stdout)["results"] if not r["passed"]]
    assert "share of exactly-zero entries 100.0% > 50.0%" in messages
    assert run_cli("check", broken_models / "dead.keras").exit_code == 0  # off unless asked


def test_baseline_against_itself_and_scaled_weights(keras, tmp_path):
    base = tmp_path / "base.json"
    wrote = run_cli("check", SAMPLES / "mlp.keras", "--write-baseline", base)
    assert wrote.exit_code == 0
    data = json.loads(base.read_text())
    assert data["gradinspect_baseline"] == 2 and data["inputs"]["fingerprint"].startswith("sha256:")
    assert set(data["norms"]) == {f"weight/dense_{i}/{v}" for i in (1, 2, 3) for v in ("kernel", "bias")}
    same = run_cli("check", SAMPLES / "mlp.keras", "--baseline", base)
    assert same.exit_code == 0, same.stdout
    model = keras.saving.load_model(SAMPLES / "mlp.keras")
    k, b = model.get_layer("dense_3").get_weights()
    model.get_layer("dense_3").set_weights([k * 2, b])
    model.save(tmp_path / "scaled.keras")
    moved = run_cli("check", tmp_path / "scaled.keras", "--baseline", base, "-f", "json")
    assert moved.exit_code == 1
    failed = {r["target"]: r["message"] for r in json.loads(moved.stdout)["results"] if not r["passed"]}
    # dense_3's kernel doubles every upstream gradient; its own gradient does not depend on it.
    assert "weight/dense_3/kernel" not in failed
    assert set(failed) == {f"weight/dense_{i}/{v}" for i in (1, 2) for v in ("kernel", "bias")}
    assert all("(+100.00%)" in m for m in failed.values())
    loose = run_cli("check", tmp_path / "scaled.keras", "--baseline", base, "--rtol", "1.5")
    assert loose.exit_code == 0


def test_a_huge_change_against_the_baseline_reads_as_a_ratio(keras, tmp_path):
    """A kernel scaled by 1e6 moves upstream norms by ~1e6: ``×1e+06``, not ``+99999900.00%``."""
    base = tmp_path / "base.json"
    assert run_cli("check", SAMPLES / "mlp.keras", "--write-baseline", base).exit_code == 0
    model = keras.saving.load_model(SAMPLES / "mlp.keras")
    k, b = model.get_layer("dense_3").get_weights()
    model.get_layer("dense_3").set_weights([k * 1e6, b])
    model.save(tmp_path / "scaled.keras")
    moved = run_cli("check", tmp_path / "scaled.keras", "--baseline", base, "-f", "json")
    failed = [r["message"] for r in json.loads(moved.stdout)["results"] if not r["passed"]]
    assert failed and all("(×1e+06)" in m and "%" not in m for m in failed), failed


@pytest.mark.slow
def test_check_at_80_columns_one_line_per_failure_and_one_summary(monkeypatch):
    """The Why column says what is wrong without repeating Value and Limit, so each failure is one
    row at 80 columns; the summary is printed once (the table's last line, not again on stderr)."""
    monkeypatch.setenv("COLUMNS", "80")
    args = ("check", SAMPLES / "cnn.keras", "--loss", "unit:0", "--max-zero-fraction", "0.5", "--max-ratio", "1")
    result = run_cli(*args)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    rows = [line for line in lines if line.startswith("│ max-ratio │")]
    assert len(rows) == 2 and all("grad/weight ratio too high" in row for row in rows)
    assert not any(line.startswith("│           │") for line in lines)  # no wrapped continuation rows
    both = (result.stdout + result.stderr).splitlines()
    assert sum("40 checks, 2 failed" in line for line in both) == 1
    as_json = run_cli(*args, "-f", "json")
    assert as_json.stderr.strip().splitlines()[-1] == "40 checks, 2 failed"


@pytest.mark.slow
def test_baseline_with_other_inputs_is_trouble(tmp_path):
    base = tmp_path / "base.json"
    run_cli("check", SAMPLES / "mlp.keras", "--write-baseline", base)
    assert_one_error_line(run_cli("check", SAMPLES / "mlp.keras", "--baseline", base, "--seed", "1"), "other inputs")
    (tmp_path / "junk.json").write_text("{}")
    assert_one_error_line(
        run_cli("check", SAMPLES / "mlp.keras", "--baseline", tmp_path / "junk.json"), "not a gradinspect baseline"
    )


def test_junit_is_xml_with_one_testcase_per_rule_per_gradient(broken_models, tmp_path):
    out = tmp_path / "report.xml"
    result = run_cli("check", broken_models / "dead.keras", "--max-zero-fraction", "0.5", "-f", "junit", "-o", out)
    assert result.exit_code == 1 and result.stdout == ""
    root = ET.parse(out).getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases) and int(root.get("tests")) == len(cases)
    failed = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failed)
    assert ("gradinspect.max-zero-fraction", "weight/dead/kernel") in {
        (c.get("classname"), c.get("name")) for c in failed
    }
    names = {(c.get("classname"), c.get("name")) for c in cases}
    for var in ("weight/dead/kernel", "weight/dead/bias", "weight/out/kernel", "weight/out/bias"):
        assert {
            ("gradinspect.disconnected", var),
            ("gradinspect.max-zero-fraction", var),
            ("gradinspect.nonfinite", var),
        } <= names


def test_markdown_summary(broken_models):
    result = run_cli("check", broken_models / "dead.keras", "--max-zero-fraction", "0.5", "-f", "markdown")
    assert result.stdout.startswith("### ❌ gradinspect check")
    assert "| max-zero-fraction | `weight/dead/kernel` |" in result.stdout


@pytest.mark.slow
def test_layers_option_and_missing_model(tmp_path):
    only = run_cli("check", SAMPLES / "mlp.keras", "--layers", "dense_2", "-f", "json")
    targets = {r["target"] for r in json.loads(only.stdout)["results"]}
    assert targets == {"loss", "output/dense_2", "weight/dense_2/kernel", "weight/dense_2/bias"}
    assert_one_error_line(run_cli("check", tmp_path / "none.keras"), "no such file")
    assert_one_error_line(run_cli("check", SAMPLES / "mlp.keras", "--layers", "nope"), "no layer named 'nope'")


def test_python_api(broken_models):
    from gradinspect import assert_healthy, check
    from gradinspect.commands.check import Rules

    report = check(SAMPLES / "mlp.keras", None)
    assert report.passed and report.summary() == "17 checks, 0 failed"
    with pytest.raises(AssertionError, match="max-zero-fraction weight/dead/kernel"):
        assert_healthy(broken_models / "dead.keras", rules=Rules(max_zero_fraction=0.5))


BAD_GRADIENT = textwrap.dedent(
    """
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="gi_verify")
    class BadScale(keras.layers.Layer):
        \"\"\"y = w * x, with a custom gradient for w that is off by a factor of 2.\"\"\"

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

        def call(self, x):
            @tf.custom_gradient
            def scale(t, w):
                def grad(dy):
                    return dy * w, 2.0 * tf.reduce_sum(dy * t, axis=0)
                return t * w, grad
            return scale(x, tf.convert_to_tensor(self.w))
    """
)


@pytest.fixture(scope="module")
def bad_gradient_model(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("verify")
    src = d / "bad_layer.py"
    src.write_text(BAD_GRADIENT)
    ns: dict = {}
    exec(compile(BAD_GRADIENT, str(src), "exec"), ns)  # noqa: S102 - the test's own layer
    keras.utils.set_random_seed(9)
    x = keras.Input((3,), name="x")
    h = ns["BadScale"](name="bad")(keras.layers.Dense(3, activation="tanh", name="d1")(x))
    keras.Model(x, keras.layers.Dense(2, name="d2")(h)).save(d / "bad.keras")
    return d


@pytest.mark.slow
def test_verify_passes_on_standard_layers():
    for layer in ("dense_1", "dense_3"):
        result = run_cli("verify", SAMPLES / "mlp.keras", "--layer", layer, "-f", "json")
        assert result.exit_code == 0, result.stdout + result.stderr
        data = json.loads(result.stdout)
        assert data["passed"] and all(e["max_error"] < 1e-8 for e in data["entries"])
    cnn = run_cli(
        "verify", SAMPLES / "cnn.keras", "--layer", "conv1", "--loss", "unit:1", "--entries", "5", "-f", "json"
    )
    assert cnn.exit_code == 0
    # output, input, kernel, bias (4 entries)
    assert [e["checked"] for e in json.loads(cnn.stdout)["entries"]] == [5, 5, 5, 4]


def test_verify_fails_on_a_wrong_custom_gradient(bad_gradient_model):
    d = bad_gradient_model
    result = run_cli("verify", d / "bad.keras", "--layer", "bad", "--custom-objects", d / "bad_layer.py", "-f", "json")
    assert result.exit_code == 1, result.stderr
    entries = {e["target"]: e for e in json.loads(result.stdout)["entries"]}
    assert entries["output/bad"]["passed"]  # d loss / d output does not use the custom gradient
    assert not entries["weight/bad/w"]["passed"]
    assert entries["weight/bad/w"]["max_rel_error"] == pytest.approx(0.5, rel=1e-6)  # 2x: |2g - g| / |2g|
    assert _last_stderr_line(result) == "3 gradients checked against finite differences, 1 failed"
    # the layer before it gets its gradient through the custom one, which is right for x
    upstream = run_cli("verify", d / "bad.keras", "--layer", "d1", "--custom-objects", d / "bad_layer.py")
    assert upstream.exit_code == 0


@pytest.mark.slow
def test_verify_usage_errors():
    assert_one_error_line(run_cli("verify", SAMPLES / "mlp.keras", "--layer", "nope"), "no layer named 'nope'")
    assert_one_error_line(run_cli("verify", SAMPLES / "mlp_export", "--layer", "dense_1"), "float64")
    eps_zero = run_cli("verify", SAMPLES / "mlp.keras", "--layer", "dense_1", "--eps", "0")
    assert_one_error_line(eps_zero, "'--eps': 0.0 is not in the range x>0")


@pytest.mark.slow
def test_verify_reports_progress():
    from gradinspect import verify

    calls = []
    report = verify(SAMPLES / "mlp.keras", layer="dense_2", entries=3, progress=lambda d, t: calls.append((d, t)))
    total = sum(e.checked for e in report.entries)
    assert calls == [(i, total) for i in range(1, total + 1)]


@pytest.mark.slow
def test_check_json_says_which_mode_ran():
    """The check report's JSON is derived like grad's: its inputs block carries `training` too."""
    for flags, expected in (((), False), (("--training",), True)):
        result = run_cli("check", SAMPLES / "mlp.keras", "-f", "json", *flags)
        assert result.exit_code == 0, result.stderr
        inputs = json.loads(result.stdout)["inputs"]
        assert inputs["training"] is expected
        assert inputs["batch_size"] == 4 and inputs["fingerprint"].startswith("sha256:")
