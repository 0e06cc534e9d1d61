"""`gradinspect flow`: the weight gradients of every layer with weights, from one backward pass."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gradinspect.engine.options import InputShape
from gradinspect.engine.runner import run_gradients
from gradinspect.report.flow import FlowReport, flow_rows


def inspect_flow(
    model_or_path: Any,
    inputs: Any = None,
    *,
    loss: str = "auto",
    target: Any = None,
    regularizers: bool = True,
    outputs: Sequence[str] = (),
    training: bool = False,
    random: int = 4,
    seed: int = 0,
    input_shape: InputShape = None,
    samples: str | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    compile: str = "auto",
    devices: int | None = None,
    signature: str | None = None,
    custom_objects: str | Path | None = None,
    unsafe: bool = False,
    progress: Callable[..., None] | None = None,
) -> FlowReport:
    """Per-layer weight-gradient series of ``model_or_path``: a ``grad --all`` run folded per layer.

    The parameters are those of :func:`gradinspect.inspect_gradients` (without the pairs and the
    second stage). Raises a :class:`gradinspect.GradinspectError` subclass for every expected failure.
    """
    options = {name: value for name, value in locals().items() if name not in ("model_or_path", "inputs")}
    options["outputs"] = tuple(outputs)
    report = run_gradients(model_or_path, inputs, all_layers=True, **options)
    return FlowReport(report, flow_rows(report))
