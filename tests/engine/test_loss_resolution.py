"""The loss that ran is reported the same on every path: one eager batch, or compiled later batches."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLES, run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model,resolved", [("mlp.keras", "sum"), ("cnn.keras", "logprob:pred")])
def test_auto_is_resolved_alike_on_the_eager_and_the_compiled_path(model, resolved):
    specs = {}
    for batch in ("8", "2"):  # one batch (eager), four batches (the later ones compiled)
        args = ("grad", SAMPLES / model, "--all", "--random", "8", "--batch-size", batch, "--compile", "auto")
        result = run_cli(*args, "-f", "json")
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        specs[batch] = report["loss"]["spec"]
        assert report["inputs"].get("batches") == (None if batch == "8" else 4)
    assert specs == {"8": resolved, "2": resolved}


def test_a_baseline_from_one_batch_accepts_a_run_that_only_changed_the_batch_size(tmp_path):
    baseline = tmp_path / "b.json"
    first = run_cli("check", SAMPLES / "mlp.keras", "--random", "8", "--write-baseline", baseline)
    assert first.exit_code == 0, first.stderr
    assert json.loads(baseline.read_text())["loss"] == "sum"
    again = run_cli("check", SAMPLES / "mlp.keras", "--random", "8", "--batch-size", "2", "--baseline", baseline)
    assert "written with --loss" not in again.stderr
    assert again.exit_code == 0, again.stderr
