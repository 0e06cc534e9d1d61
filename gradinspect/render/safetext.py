"""Names from a model file are data: make them inert in terminals, CSV cells and Markdown.

A layer name can hold escape sequences (recolouring the terminal, OSC commands that reach it
even through pipes), newlines that forge output lines, spreadsheet formulas, or HTML. Every
renderer except JSON (whose encoder already escapes control characters) gets a report whose
strings went through :func:`printable`; CSV and Markdown cells go through their own helpers too.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

# C0 and C1 control characters, DEL, and the Unicode direction overrides that reorder text.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Emphasis, code, links (the brackets), HTML and entities, table columns, strikethrough.
# An underscore inside a word (dense_1) never starts emphasis in GitHub Markdown; one at a word's
# edge may, and is escaped.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>|~&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control and direction-override character written as ``\\xNN``/``\\uNNNN``."""
    return _UNSAFE.sub(_escape, text)


def sanitized(value: Any) -> Any:
    """A copy of ``value`` (a report: dataclasses, tuples, lists, dicts) with every string :func:`printable`."""
    if isinstance(value, str):
        return printable(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: sanitized(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(sanitized(v) for v in value)
    if isinstance(value, list):
        return [sanitized(v) for v in value]
    if isinstance(value, dict):
        return {sanitized(k): sanitized(v) for k, v in value.items()}
    return value


def csv_text(text: str) -> str:
    """A CSV text cell that a spreadsheet will not run as a formula (a leading ``'``, as OWASP advises)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def markdown_text(text: str) -> str:
    """Text shown literally in a Markdown table cell: no HTML, links, emphasis or column breaks."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text.replace("\n", " ").replace("\r", " "))
