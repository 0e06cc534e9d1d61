"""Seeing gradients: the flow chart, --plot figures, tables that fit 80 columns, colour rules."""

from __future__ import annotations

import json
import math
import os
import re
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import SAMPLES, assert_one_error_line, run_cli
from test_render import GOLDEN, _grad_report

from gradinspect.render import render


def _golden(name: str, text: str) -> None:
    golden = GOLDEN / name
    if os.environ.get("GRADINSPECT_UPDATE_GOLDENS") == "1":
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("width", [80, 120])
def test_grad_table_golden_at_terminal_widths(width):
    text = render(_grad_report(), "table", width=width)
    _golden(f"grad_{width}.txt", text)
    assert all(len(line) <= width for line in text.splitlines())
    # Every number shown is whole: the full-width rendering holds each value cell as it is here.
    assert "2.236e+04" in text and "1.118e+04" in text


def test_narrow_tables_name_what_they_left_out():
    text = render(_grad_report(), "table", width=80)
    assert "(left out to fit 80 columns:" in text
    assert "(left out" not in render(_grad_report(), "table", width=200)


def _flow_report():
    from gradinspect.report.flow import FlowReport, flow_rows

    grad = _grad_report()
    return FlowReport(grad, flow_rows(grad))


@pytest.mark.parametrize("width", [80, 120])
def test_flow_chart_golden(width):
    text = render(_flow_report(), "table", width=width)
    _golden(f"flow_{width}.txt", text)
    assert all(len(line) <= width for line in text.splitlines())


def test_flow_rows_fold_each_layers_weights():
    """dense_2's two variables: norm = sqrt(Σ norm²), mean |g| weighted by finite entries, NaN counted."""
    rows = {r.layer: r for r in _flow_report().rows}
    kernel, bias = _grad_report().pairs[0].weights[:2]
    assert rows["dense_2"].grad_norm == pytest.approx(math.hypot(kernel.stats.norm, bias.stats.norm))
    finite = [1e4, -2e4, 0.5, -0.25, 0.0, 1.0, 2.0, -3.0]
    assert rows["dense_2"].mean_abs == pytest.approx(np.mean(np.abs(finite)))
    assert rows["dense_2"].nonfinite == 1 and rows["dense_2"].status == "non-finite"
    assert rows["side"].grad_norm is None and rows["side"].status == "no gradient"


def test_middle_ellipsis_keeps_the_end():
    from gradinspect.render.chart import middle_ellipsis

    assert middle_ellipsis("block_16_expand_relu", 30) == "block_16_expand_relu"
    # 20 characters: a third from the start, "…", two thirds from the end (the end names the layer).
    assert middle_ellipsis("functional/block_16_depthwise_BN_final", 20) == "functio…ise_BN_final"


@pytest.mark.slow
def test_flow_json_is_the_series_the_picture_is_drawn_from(tmp_path):
    result = run_cli("flow", SAMPLES / "cnn.keras", "--input", SAMPLES / "cnn_input.npy", "-f", "json")
    assert result.exit_code == 0, result.stderr
    flow = json.loads(result.stdout)
    grad = json.loads(
        run_cli("grad", SAMPLES / "cnn.keras", "--all", "--input", SAMPLES / "cnn_input.npy", "-f", "json").stdout
    )
    assert [r["layer"] for r in flow["layers"]] == ["conv1", "bn1", "conv2", "head"]
    weights = {(w["layer"], w["variable"]): w for p in grad["pairs"] for w in p["weights"]}
    for row in flow["layers"]:
        norms = [w["stats"]["norm"] for (layer, _), w in weights.items() if layer == row["layer"]]
        assert row["grad_norm"] == pytest.approx(math.sqrt(sum(n * n for n in norms)), rel=1e-12)
        assert row["status"] == "ok"
    assert flow["thresholds"] == {"vanishing": 1e-7, "exploding": 1e3}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["flow", "grad", "check"])
def test_plots_are_real_png_and_svg_files(tmp_path, command):
    pytest.importorskip("matplotlib")
    args = ["--all"] if command == "grad" else []
    for suffix in ("png", "svg"):
        out = tmp_path / f"{command}.{suffix}"
        hist = ["--hist"] if suffix == "png" else []
        result = run_cli(
            command, SAMPLES / "cnn.keras", *args, "--input", SAMPLES / "cnn_input.npy", "--plot", out, *hist
        )
        assert result.exit_code == 0, result.stderr
    png = (tmp_path / f"{command}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert width >= 800 and height >= 500 and len(png) > 20_000  # the --hist panels make it taller
    root = ET.parse(tmp_path / f"{command}.svg").getroot()
    texts = {"".join(t.itertext()).strip() for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"conv1", "bn1", "conv2", "head"} <= texts, texts


def test_plot_needs_a_png_or_svg_name_and_matplotlib(tmp_path):
    import subprocess
    import sys

    line = assert_one_error_line(run_cli("flow", SAMPLES / "mlp.keras", "--plot", tmp_path / "f.gif"))
    assert ".png or .svg" in line
    code = (
        "import sys; sys.modules['matplotlib'] = None; sys.argv = ['gradinspect', 'flow', "
        f"{str(SAMPLES / 'mlp.keras')!r}, '--plot', {str(tmp_path / 'f.png')!r}]; "
        "from gradinspect.cli import main; main()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "Error: --plot needs matplotlib: pip install 'gradinspect[plot]'"
    ]
    assert not (tmp_path / "f.png").exists()


def _drain(leader: int) -> bytes:
    """Everything the child writes to the pseudo-terminal, until it closes it."""
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            return seen
        if not chunk:
            return seen
        seen += chunk


def _on_a_terminal(*args: str, env: dict[str, str]) -> str:
    """Run the CLI with stdout on a pseudo-terminal; return what the terminal received."""
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gradinspect", *args], stdout=follower, stderr=follower, env=env)
    os.close(follower)
    seen = _drain(leader)
    assert proc.wait() == 0, seen
    os.close(leader)
    return seen.decode(errors="replace")


@pytest.mark.slow
def test_no_color_turns_colour_off_on_a_terminal_and_flags_override():
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    args = ("layers", str(SAMPLES / "mlp.keras"))
    assert "\x1b[" in _on_a_terminal(*args, env=env)  # colour on a terminal by default
    assert "\x1b[" not in _on_a_terminal(*args, env={**env, "NO_COLOR": "1"})
    assert "\x1b[" in _on_a_terminal(*args, "--color", env={**env, "NO_COLOR": "1"})
    assert "\x1b[" not in _on_a_terminal(*args, "--no-color", env=env)


@pytest.mark.slow
def test_global_flags_work_after_the_command():
    result = run_cli("grad", "--debug", SAMPLES / "mlp.keras", "--from", "nope", "--to", "dense_2")
    assert result.exit_code == 2 and "Traceback" in result.stderr  # --debug took effect
    piped = run_cli("layers", SAMPLES / "mlp.keras", "--color")
    assert piped.exit_code == 0 and "\x1b[" in piped.stdout


@pytest.mark.slow
def test_a_long_single_pass_job_shows_its_steps_on_a_terminal_only():
    """grad on one batch: loading TensorFlow and the model takes over a second, so a terminal sees
    the step names on stderr; stdout stays the data, and a pipe (CliRunner) sees no display."""
    import pty
    import subprocess
    import sys

    args = ["grad", str(SAMPLES / "cnn.keras"), "--all", "--input", str(SAMPLES / "cnn_input.npy"), "-f", "json"]
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gradinspect", *args], stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    seen = _drain(leader)
    out = proc.stdout.read()
    assert proc.wait() == 0
    os.close(leader)
    steps = ("loading the model", "reading the inputs", "forward pass", "backward pass", "statistics", "rendering")
    assert any(step in seen.decode(errors="replace") for step in steps), seen
    assert json.loads(out)["pairs"]  # stdout is the JSON alone
    piped = run_cli(*args)
    assert piped.exit_code == 0 and piped.stderr == ""


def test_sparkline_is_the_log_histogram_of_the_nonzero_finite_entries():
    from gradinspect.render.gradtables import sparkline

    values = np.array([1e-3] + [1e-1] * 7 + [0.0, np.nan, -np.inf])  # zeros and non-finite left out
    # 10 bins over log10 |g| in [-3, -1]: one entry in the first bin, seven in the last.
    assert sparkline(values) == "1e-3 ▂        █ 1e-1"
    assert sparkline(np.zeros(4)) == sparkline(None) == "—"


@pytest.mark.slow
def test_grad_hist_adds_a_sparkline_to_every_row():
    result = run_cli(
        "grad", SAMPLES / "cnn.keras", "--from", "conv1", "--to", "bn1", "--input", SAMPLES / "cnn_input.npy", "--hist"
    )
    assert result.exit_code == 0, result.stderr
    rows = [ln for ln in result.stdout.splitlines() if ln.startswith("│ conv1") or ln.startswith("│ bn1")]
    assert len(rows) == 6 and all(re.search(r"1e-?\d+ [ ▁▂▃▄▅▆▇█]{10} 1e-?\d+ │$", r) for r in rows), rows


@pytest.mark.slow
def test_flow_over_several_batches_shows_the_spread_of_the_batch_gradients():
    """spread = 1/sqrt(SNR) of the layer's noisiest variable, from the same run's noise scale."""
    data = SAMPLES / "mlp_dataset.h5"
    args = ("--input", f"{data}:x", "--batch-size", "64", "--max-batches", "5", "-f", "json")
    flow = json.loads(run_cli("flow", SAMPLES / "mlp.keras", *args).stdout)
    grad = json.loads(run_cli("grad", SAMPLES / "mlp.keras", "--all", *args).stdout)
    snr: dict[str, float] = {}
    for pair in grad["pairs"]:
        for w in pair["weights"]:
            if w["noise"]["snr"] is not None:  # None where |G|² <= 0 (no signal to measure against)
                snr[w["layer"]] = min(snr.get(w["layer"], math.inf), w["noise"]["snr"])
    assert flow["inputs"]["batches"] == 5 and snr
    for row in flow["layers"]:
        if row["layer"] in snr:
            assert row["spread"] == pytest.approx(1 / math.sqrt(snr[row["layer"]]), rel=1e-12)
        else:
            assert "spread" not in row
    chart = run_cli("flow", SAMPLES / "mlp.keras", *args[:-2]).stdout
    assert "±" in chart and "5 batches of 64" in chart


@pytest.mark.slow
def test_verify_at_80_columns_keeps_every_gradient_name_whole(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = run_cli("verify", SAMPLES / "mlp.keras", "--layer", "dense_1")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    for key in ("output/dense_1", "input/dense_1", "weight/dense_1/kernel", "weight/dense_1/bias"):
        assert any(f"│ {key} " in line for line in lines), key


@pytest.mark.slow
def test_flow_on_a_layer_whose_gradient_is_all_nan_reports_it(keras, tmp_path):
    """A gradient with no finite entry has no norm: the layer's row says non-finite (it used to be exit 70)."""
    import json

    import numpy as np

    x = keras.Input((2,), name="x")
    bad = keras.layers.Dense(2, name="bad")
    model = keras.Model(x, keras.layers.Dense(1, name="out")(bad(x)))
    bad.set_weights([np.full((2, 2), np.nan, np.float32), np.zeros(2, np.float32)])
    model.save(tmp_path / "nan.keras")
    result = run_cli("flow", tmp_path / "nan.keras", "--random", "2", "-f", "json")
    assert result.exit_code == 0, result.stderr
    rows = {row["layer"]: row for row in json.loads(result.stdout)["layers"]}
    assert rows["out"]["status"] == "non-finite" and rows["out"]["nonfinite"] == 2
