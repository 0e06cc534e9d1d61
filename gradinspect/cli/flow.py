"""`gradinspect flow`: the gradient-flow picture (terminal chart, --plot figure, JSON series)."""

from __future__ import annotations

from typing import Any

import click

from gradinspect.cli.group import main
from gradinspect.cli.options import (
    child_limits,
    data_options,
    data_values,
    files_read,
    model_options,
    output_options,
    unsafe_notice,
)
from gradinspect.cli.outputs import checked_destination, checked_plot, emit, plot_file, plot_options
from gradinspect.destinations import ensure_distinct
from gradinspect.report.flow import FlowReport


@main.command()
@model_options
@data_options()
@click.option("--signature", metavar="NAME", help="The SavedModel signature to use (default: serving_default).")
@plot_options
@output_options(FlowReport)
def flow(model: str, **options: Any) -> None:
    """Gradient flow: every layer with weights, in model order, from one backward pass.

    In the terminal, one row per layer: a bar for the weight-gradient norm on a log scale,
    the norm and mean |g| beside it (and, over several batches, the relative spread of
    the per-batch gradients), coloured where it vanishes (< 1e-7), explodes (> 1e3) or is
    NaN/Inf. --format json gives the per-layer series; --plot FILE.png|.svg draws them.

    \b
    Examples:
      gradinspect flow sample_models/cnn.keras --input sample_models/cnn_input.npy
      gradinspect flow model.keras --random 32 --plot flow.png --hist
    """
    from gradinspect.cli.isolation import run_isolated
    from gradinspect.commands.flow import inspect_flow

    data = data_values(options)
    reads = files_read(model, options["custom_objects"], data=data)
    plot_dest = checked_plot(options["plot"], reads, options["force"])
    dest = checked_destination(options["output"], "--output", reads, force=options["force"])
    ensure_distinct([plot_dest, dest])
    unsafe_notice(options["unsafe"])
    kwargs = {
        "model_or_path": model,
        "custom_objects": options["custom_objects"],
        "unsafe": options["unsafe"],
        "signature": options["signature"],
        **data,
    }
    quiet = options.get("quiet", False)
    report = run_isolated(inspect_flow, kwargs, child_limits(options), model, label="batches", quiet=quiet)
    figure = plot_file(plot_dest, report.grad, options["hist"])
    emit(report, options["fmt"], dest, (figure,))
