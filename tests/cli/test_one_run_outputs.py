"""One run, several outputs: `check` writes JUnit, Markdown and JSON from the same report, and
an existing output file is kept unless --force."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest
from conftest import SAMPLES, assert_one_error_line, run_cli


@pytest.mark.slow
def test_one_check_run_writes_junit_markdown_and_json_that_agree(tmp_path):
    files = {fmt: tmp_path / f"c.{fmt}" for fmt in ("junit", "markdown", "json")}
    result = run_cli(
        "check", SAMPLES / "cnn.keras", "--loss", "unit:0", "--max-ratio", "1",
        *(a for fmt, path in files.items() for a in (f"--{fmt}", path)),
    )  # fmt: skip
    assert result.exit_code == 1  # two ratios above 1 (README example)
    assert "Failed checks" in result.stdout  # the terminal table is still shown
    suite = ET.parse(files["junit"]).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed_junit = sorted(tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None)
    markdown = files["markdown"].read_text()
    data = json.loads(files["json"].read_text())
    failed_json = sorted(r["target"] for r in data["results"] if not r["passed"])
    assert failed_junit == failed_json == ["weight/conv1/kernel", "weight/conv2/kernel"]
    assert int(suite.get("tests")) == len(data["results"]) and int(suite.get("failures")) == 2
    header = re.search(r"(\d+) checks, (\d+) failed", markdown)
    assert header and header.groups() == (str(len(data["results"])), "2")
    assert all(name in markdown for name in failed_junit)


def test_an_existing_output_is_kept_unless_force(tmp_path):
    out = tmp_path / "layers.txt"
    out.write_text("keep me")
    line = assert_one_error_line(run_cli("layers", SAMPLES / "mlp.keras", "-o", out))
    assert "the file exists; pass --force" in line and out.read_text() == "keep me"
    assert run_cli("layers", SAMPLES / "mlp.keras", "-o", out, "--force").exit_code == 0
    assert "dense_1" in out.read_text()


@pytest.mark.slow
def test_grad_writes_json_and_markdown_files_from_the_run_it_prints(tmp_path):
    args = ("grad", SAMPLES / "mlp.keras", "--all", "--input", SAMPLES / "mlp_input.npy")
    result = run_cli(*args, "--json", tmp_path / "g.json", "--markdown", tmp_path / "g.md", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "g.json").read_text()) == json.loads(result.stdout)
    markdown = (tmp_path / "g.md").read_text()
    assert "dense_1" in markdown and markdown.startswith("###")


@pytest.mark.slow
def test_flow_csv_and_markdown_hold_the_json_series():
    import csv
    import io

    args = ("flow", SAMPLES / "cnn.keras", "--input", SAMPLES / "cnn_input.npy", "-f")
    series = json.loads(run_cli(*args, "json").stdout)["layers"]
    rows = list(csv.DictReader(io.StringIO(run_cli(*args, "csv").stdout)))
    assert [r["layer"] for r in rows] == [s["layer"] for s in series]
    for row, s in zip(rows, series):
        assert float(row["grad_norm"]) == s["grad_norm"] and row["status"] == s["status"]
    markdown = run_cli(*args, "markdown").stdout
    assert all(f"| {s['layer']} |" in markdown for s in series)
