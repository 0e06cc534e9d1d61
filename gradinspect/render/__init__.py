"""Renderers, one per (report type, output format), chosen from one registry.

``REGISTRY`` maps each pair to ``"module:function"`` in this package; modules are imported when
first used, so ``--help`` stays fast. ``formats_for(report type)`` gives a command's ``--format``
choices; asking for a pair that is not registered is a UsageProblem, never an AttributeError.
Every renderer except JSON gets the report with names from the model made printable.
"""

from __future__ import annotations

import importlib
from enum import Enum
from typing import Any

from gradinspect.errors import UsageProblem
from gradinspect.render.safetext import sanitized
from gradinspect.render.settings import RenderOptions
from gradinspect.report import CheckReport, GradReport, LayersReport, VerifyReport
from gradinspect.report.flow import FlowReport


class OutputFormat(str, Enum):
    """Values of ``--format``."""

    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"
    CSV = "csv"
    JUNIT = "junit"


REGISTRY: dict[tuple[type, OutputFormat], str] = {
    (LayersReport, OutputFormat.TABLE): "table:layers",
    (LayersReport, OutputFormat.JSON): "json:any_report",
    (LayersReport, OutputFormat.MARKDOWN): "markdown:layers",
    (LayersReport, OutputFormat.CSV): "csv:layers",
    (GradReport, OutputFormat.TABLE): "table:grad",
    (GradReport, OutputFormat.JSON): "json:any_report",
    (GradReport, OutputFormat.MARKDOWN): "markdown:grad",
    (GradReport, OutputFormat.CSV): "csv:grad",
    (CheckReport, OutputFormat.TABLE): "table:check",
    (CheckReport, OutputFormat.JSON): "json:any_report",
    (CheckReport, OutputFormat.JUNIT): "junit:check",
    (CheckReport, OutputFormat.MARKDOWN): "markdown:check",
    (FlowReport, OutputFormat.TABLE): "chart:flow",
    (FlowReport, OutputFormat.JSON): "json:any_report",
    (FlowReport, OutputFormat.MARKDOWN): "markdown:flow",
    (FlowReport, OutputFormat.CSV): "csv:flow",
    (VerifyReport, OutputFormat.TABLE): "table:verify",
    (VerifyReport, OutputFormat.JSON): "json:any_report",
}

_KIND = {LayersReport: "layers", GradReport: "grad", CheckReport: "check", VerifyReport: "verify", FlowReport: "flow"}


def formats_for(report_type: type) -> tuple[str, ...]:
    """The ``--format`` values a report type can be rendered as, table first."""
    return tuple(fmt.value for (kind, fmt) in REGISTRY if kind is report_type)


def render(
    report: Any, fmt: OutputFormat | str, *, color: bool = False, width: int | None = None, hist: bool = False
) -> str:
    """Render ``report`` as ``fmt`` (``color``/``width`` matter to the table); raise UsageProblem for a
    format that report type does not have."""
    fmt = OutputFormat(fmt)
    target = REGISTRY.get((type(report), fmt))
    if target is None:
        kind = _KIND.get(type(report), type(report).__name__)
        raise UsageProblem(
            f"--format {fmt.value} is not available for {kind} results; choose from "
            f"{', '.join(formats_for(type(report))) or 'none'}"
        )
    module_name, function = target.split(":")
    renderer = getattr(importlib.import_module(f"gradinspect.render.{module_name}"), function)
    if fmt is not OutputFormat.JSON:
        # JSON escapes control characters itself; every other format gets printable names.
        report = sanitized(report)
    return str(renderer(report, RenderOptions(color=color, width=width, hist=hist)))
