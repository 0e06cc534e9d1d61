"""check --rules FILE.toml: per-layer thresholds (glob on layer names) over the flags."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLES, assert_one_error_line, run_cli

# On sample_models/cnn.keras with --loss unit:0 the ratios are conv1/kernel 1.246 and
# conv2/kernel 2.004 (README example), every other weight below 1.
BASE = ("check", SAMPLES / "cnn.keras", "--loss", "unit:0", "-f", "json")


def _failed(result) -> list[tuple[str, str, float]]:
    data = json.loads(result.stdout)
    return sorted((r["rule"], r["target"], r["threshold"]) for r in data["results"] if not r["passed"])


@pytest.mark.slow
def test_a_layer_table_overrides_the_flag_for_matching_layers_only(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[layer]]\nmatch = "conv2*"\nmax-ratio = 3\n\n[[layer]]\nmatch = "conv*"\nmax-ratio = 0.5\n')
    result = run_cli(*BASE, "--max-ratio", "1", "--rules", rules)
    assert result.exit_code == 1
    # conv2 matches the first table (3: passes); conv1 the second (0.5: fails); others keep the flag's 1.
    assert _failed(result) == [("max-ratio", "weight/conv1/kernel", 0.5)]


@pytest.mark.slow
def test_top_level_thresholds_are_defaults_that_flags_override(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text("max-ratio = 1.5\n")
    assert _failed(run_cli(*BASE, "--rules", rules)) == [("max-ratio", "weight/conv2/kernel", 1.5)]
    assert run_cli(*BASE, "--rules", rules, "--max-ratio", "3").exit_code == 0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[layer]]\nmatch = "x"\nmax-nrom = 1\n', "unknown key 'max-nrom'"),
        ("[[layer]]\nmax-norm = 1\n", "needs match"),
        ("max-norm = -1\n", "must be a number >= 0"),
        ('max-norm = "big"\n', "must be a number >= 0"),
        ("max-zero-fraction = 2\n", "between 0 and 1"),
        ("max-norm = \n", "cannot read it as TOML"),
    ],
)
def test_bad_rules_files_are_one_line_before_any_work(tmp_path, text, needle):
    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    line = assert_one_error_line(run_cli(*BASE, "--rules", rules))
    assert needle in line and str(rules) in line
