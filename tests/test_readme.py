"""Every `$ gradinspect ...` example in README.md prints what the README shows (no stale output)."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import REPO, SAMPLES, run_cli

BLOCK = re.compile(r"```\n(\$ gradinspect .*?)```", re.S)


def _examples():
    text = (REPO / "README.md").read_text()
    for block in BLOCK.findall(text):
        lines = block.rstrip("\n").split("\n")
        yield lines[0][2:], [ln.rstrip() for ln in lines[1:]]


EXAMPLES = list(_examples())


def test_readme_has_examples():
    assert len(EXAMPLES) >= 8


@pytest.mark.slow
@pytest.mark.parametrize("command,expected", EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_readme_example(command, expected, monkeypatch):
    args = shlex.split(command)[1:]
    monkeypatch.chdir(SAMPLES if "article" in command else REPO)
    result = run_cli(*args)
    shown = [ln for ln in expected if ln and not ln.startswith("$ ")]
    if "$ echo $?" in expected:
        assert str(result.exit_code) == expected[expected.index("$ echo $?") + 1]
        shown = shown[:-1]
    actual = {ln.rstrip() for ln in (result.stdout + result.stderr).splitlines()}
    missing = [ln for ln in shown if ln not in actual]
    assert not missing, missing
