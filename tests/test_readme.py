"""Every `$ gradinspect ...` example in README.md and docs/*.md prints what the page shows (no stale
output), and the Python API page's code runs."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import REPO, SAMPLES, run_cli

BLOCK = re.compile(r"```\n(\$ gradinspect .*?)```", re.S)


PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _examples(page):
    for block in BLOCK.findall(page.read_text()):
        lines = block.rstrip("\n").split("\n")
        yield lines[0][2:], [ln.rstrip() for ln in lines[1:]]


EXAMPLES = [example for page in PAGES for example in _examples(page)]


def test_readme_and_docs_have_examples():
    """The README shows one run of each command, layers first; the reference pages hold the rest."""
    readme = [command.split()[1] for command, _ in _examples(REPO / "README.md")]
    assert readme[:1] == ["layers"] and {"layers", "grad", "flow", "check", "verify"} <= set(readme)
    assert len(EXAMPLES) >= 14


def test_readme_is_the_front_door():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250
    for link in re.findall(r"\]\((docs/[^)]+)\)", (REPO / "README.md").read_text()):
        assert (REPO / link).is_file(), link


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


@pytest.mark.slow
def test_the_python_api_page_runs(monkeypatch):
    monkeypatch.chdir(REPO)
    for code in re.findall(r"```python\n(.*?)```", (REPO / "docs" / "python-api.md").read_text(), re.S):
        exec(compile(code, "docs/python-api.md", "exec"), {})
