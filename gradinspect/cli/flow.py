"""`gradinspect flow`: the gradient-flow picture (terminal chart, --plot figure, JSON series)."""

from __future__ import annotations

from typing import Any

import click

from gradinspect.cli import main
from gradinspect.cli.feedback import progress_bar, say
from gradinspect.cli.options import data_options, data_values, files_read, model_options, output_options, unsafe_notice
from gradinspect.cli.outputs import checked_destination, checked_plot, emit, plot_file, plot_options
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
    from gradinspect.artifacts.limits import memory_limit
    from gradinspect.commands.flow import inspect_flow

    data = data_values(options)
    reads = files_read(model, options["custom_objects"], data["inputs"], data["target"])
    plot_dest = checked_plot(options["plot"], reads, options["force"])
    dest = checked_destination(options["output"], "--output", reads, force=options["force"])
    unsafe_notice(options["unsafe"])
    with memory_limit(options["max_memory"]), progress_bar("batches", options.get("quiet", False)) as progress:
        report = inspect_flow(
            model,
            progress=progress,
            custom_objects=options["custom_objects"],
            unsafe=options["unsafe"],
            signature=options["signature"],
            **data,
        )
        say(progress, "rendering")
        figure = plot_file(plot_dest, report.grad, options["hist"])
    emit(report, options["fmt"], dest, (figure,))
