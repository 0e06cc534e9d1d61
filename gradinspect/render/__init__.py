"""One renderer per output format; each turns a report into text."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from gradinspect.render import csv as _csv
from gradinspect.render import json as _json
from gradinspect.render import junit as _junit
from gradinspect.render import markdown as _markdown
from gradinspect.render import table as _table
from gradinspect.render.safetext import sanitized


class OutputFormat(str, Enum):
    """Values of ``--format``."""

    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"
    CSV = "csv"
    JUNIT = "junit"


RENDERERS: dict[OutputFormat, Callable[..., str]] = {
    OutputFormat.TABLE: _table.render,
    OutputFormat.JSON: _json.render,
    OutputFormat.MARKDOWN: _markdown.render,
    OutputFormat.CSV: _csv.render,
    OutputFormat.JUNIT: _junit.render,
}


def render(report: Any, fmt: OutputFormat | str, *, color: bool = False, width: int | None = None) -> str:
    """Render ``report`` as ``fmt``. ``color``/``width`` matter only for the table."""
    fmt = OutputFormat(fmt)
    if fmt is not OutputFormat.JSON:
        # JSON escapes control characters itself; every other format gets printable names.
        report = sanitized(report)
    if fmt is OutputFormat.TABLE:
        return _table.render(report, color=color, width=width)
    return RENDERERS[fmt](report)
