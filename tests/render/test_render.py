"""Renderers, tested on a hand-built report against golden files (GRADINSPECT_UPDATE_GOLDENS=1 rewrites them)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from gradinspect.render import REGISTRY, OutputFormat, formats_for, render
from gradinspect.report import InputSpec, LayerRow, LayersReport, ModelInfo

GOLDEN = Path(__file__).parent / "golden"


def _report() -> LayersReport:
    rows = (
        LayerRow("x", "InputLayer", (None, 2), 0, 0, True),
        LayerRow("dense_1", "Dense", (None, 3), 9, 9, True),
        LayerRow("block", "Sequential", (None, 3), 24, 12, True, 0, is_container=True),
        LayerRow("block/inner", "Dense", (None, 3), 12, 12, True, 1),
        LayerRow("block/[bold]bn|x", "BatchNormalization", (None, 3), 12, 0, False, 1),
        LayerRow("lstm", "LSTM", ((None, 4), (None, 4), (None, 4)), 128, 128, True),
        LayerRow("custom", "MyLayer", None, 1_234_567, 1_234_567, True),
    )
    info = ModelInfo(
        "models/m.keras", "keras", "m", (InputSpec("x", (None, 2), "float32"),), "static (no TensorFlow)", "3.15.1"
    )
    return LayersReport(info, rows, 1_234_738, 1_234_726)


def test_every_format_has_a_renderer():
    import click

    from gradinspect.cli import main
    from gradinspect.report import CheckReport, GradReport, LayersReport, VerifyReport

    assert {fmt for _, fmt in REGISTRY} == set(OutputFormat)
    offered = {}
    for name, command in main.commands.items():
        for param in command.params:
            if param.name == "fmt":
                assert isinstance(param.type, click.Choice)
                offered[name] = tuple(param.type.choices)
    # Each command offers exactly the formats its report type has renderers for.
    from gradinspect.report.flow import FlowReport

    kinds = {"layers": LayersReport, "grad": GradReport, "check": CheckReport, "verify": VerifyReport}
    kinds["flow"] = FlowReport
    assert offered == {name: formats_for(kind) for name, kind in kinds.items()}


def test_a_format_a_report_type_lacks_is_a_clear_error():
    from gradinspect.errors import UsageProblem
    from gradinspect.report import CheckReport, Rules

    report = CheckReport(_grad_report(), (), Rules())
    with pytest.raises(UsageProblem, match="--format csv is not available for check results; choose from table"):
        render(report, "csv")


@pytest.mark.parametrize("fmt,suffix", [("table", "txt"), ("markdown", "md"), ("csv", "csv"), ("json", "json")])
def test_golden(fmt, suffix):
    text = render(_report(), fmt, color=False, width=100)
    golden = GOLDEN / f"layers.{suffix}"
    if os.environ.get("GRADINSPECT_UPDATE_GOLDENS") == "1":
        golden.write_text(text)
    assert text == golden.read_text()


def test_model_names_are_not_parsed_as_markup():
    text = render(_report(), "table", width=120)
    assert "block/[bold]bn|x" in text


def test_json_keys_and_totals():
    data = json.loads(render(_report(), "json"))
    assert set(data) == {"model", "layers", "total_params", "trainable_params", "non_trainable_params"}
    assert set(data["model"]) >= {"path", "format", "name", "inputs"}
    assert set(data["layers"][0]) >= {"name", "class", "output_shape", "params", "trainable"}
    assert data["non_trainable_params"] == 12
    assert data["layers"][5]["output_shape"] == [[None, 4], [None, 4], [None, 4]]
    assert data["layers"][6]["output_shape"] is None


def test_csv_parses_back():
    rows = list(csv.DictReader(io.StringIO(render(_report(), "csv"))))
    assert [r["name"] for r in rows][:2] == ["x", "dense_1"]
    assert rows[1]["output_shape"] == "(None, 3)" and rows[1]["params"] == "9"
    assert rows[6]["output_shape"] == ""


def test_markdown_escapes_pipes():
    assert "block/\\[bold\\]bn\\|x" in render(_report(), "markdown")


def test_table_colour_only_when_asked():
    assert "\x1b[" not in render(_report(), "table")
    assert "\x1b[" in render(_report(), "table", color=True)


def _grad_report():
    from gradinspect.engine.stats import tensor_stats
    from gradinspect.report import GradReport, OutputGradient, PairReport, WeightGradient

    g1 = tensor_stats([[0.5, -0.25, 0.0], [1.0, 2.0, -3.0]])
    g2 = tensor_stats([float("nan"), 1e4, -2e4])
    outputs = (
        OutputGradient("dense_1", 0, 0, (2, 3), g1),
        OutputGradient("shared", 1, 0, (2, 3), g1),
        OutputGradient("tokens", 0, 0, (2, 5), None, "no gradient: the tensor is integer-typed"),
    )
    weights = (
        WeightGradient("dense_2", "kernel", (3,), g2, 2.0),
        WeightGradient("dense_2", "bias", (2, 3), g1, 0.0),
        WeightGradient("side", "kernel", (3, 2), None, 1.5, "no gradient: not between the inputs and the loss"),
    )
    info = ModelInfo("m.keras", "keras", "m", (InputSpec("x", (None, 2), "float32"),), "keras", "3.15.1")
    return GradReport(
        info,
        "sum",
        1.25,
        "--random 2 (seed 0)",
        2,
        False,
        (PairReport("dense_1", "dense_2", outputs, weights),),
        ("a note",),
    )


@pytest.mark.parametrize("fmt,suffix", [("table", "txt"), ("markdown", "md"), ("csv", "csv"), ("json", "json")])
def test_grad_golden(fmt, suffix):
    text = render(_grad_report(), fmt, color=False, width=160)
    golden = GOLDEN / f"grad.{suffix}"
    if os.environ.get("GRADINSPECT_UPDATE_GOLDENS") == "1":
        golden.write_text(text)
    assert text == golden.read_text()


def test_grad_json_keys_and_non_finite():
    data = json.loads(render(_grad_report(), "json"))
    assert set(data) >= {"model", "loss", "inputs", "pairs"}
    assert data["loss"] == {"spec": "sum", "value": 1.25}
    pair = data["pairs"][0]
    assert set(pair) == {"from", "to", "outputs", "weights"}
    assert set(pair["outputs"][0]) >= {"layer", "call", "shape", "stats"}
    assert set(pair["weights"][0]) >= {"layer", "variable", "shape", "stats", "weight_norm"}
    assert set(pair["outputs"][0]["stats"]) == {
        "norm",
        "mean",
        "std",
        "min",
        "max",
        "abs_mean",
        "abs_max",
        "zero_fraction",
        "nonfinite",
    }
    assert pair["weights"][0]["stats"]["nonfinite"] == 1
    assert pair["weights"][0]["stats"]["max"] == 1e4  # over the finite entries
    assert pair["weights"][1]["ratio"] is None  # zero weight norm: no ratio


def test_grad_table_flags_trouble():
    text = render(_grad_report(), "table", color=True, width=200)
    assert "\x1b[1;31m" in text  # bold red for the exploding norm and the NaN count
