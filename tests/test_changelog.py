"""CHANGELOG.md keeps to Keep a Changelog: Unreleased first, dated releases, link references."""

from __future__ import annotations

import re

from conftest import REPO

import gradinspect

SECTIONS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_changelog_has_unreleased_dated_releases_and_links():
    text = (REPO / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.M)
    assert versions[0] == ("Unreleased", "")
    assert (gradinspect.__version__, "2026-11-26") in versions  # the released version has its dated section
    assert all(date for name, date in versions[1:]), versions
    links = dict(re.findall(r"^\[([^\]]+)\]: (\S+)$", text, re.M))
    assert {name for name, _ in versions} <= set(links), links
    assert set(re.findall(r"^### (.+)$", text, re.M)) <= SECTIONS
