"""`gradinspect flow`: the weight gradients of every layer with weights, from one backward pass."""

from __future__ import annotations

from typing import Any

from gradinspect.engine.runner import run_gradients
from gradinspect.report.flow import FlowReport, flow_rows


def inspect_flow(model_or_path: Any, inputs: Any = None, **options: Any) -> FlowReport:
    """Per-layer weight-gradient series of ``model_or_path``: a ``grad --all`` run (same options as
    :func:`gradinspect.commands.grad.inspect_gradients` but the pairs), folded per layer."""
    report = run_gradients(model_or_path, inputs, all_layers=True, **options)
    return FlowReport(report, flow_rows(report))
