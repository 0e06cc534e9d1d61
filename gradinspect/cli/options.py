"""The CLI's shared pieces: option groups as decorators, output destinations, rendering, progress."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

from gradinspect.errors import UsageProblem


def size_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from gradinspect.artifacts.limits import parse_size

    try:
        return parse_size(value)
    except UsageProblem as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[-1], ctx=ctx, param=param) from None


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``MODEL``, ``--custom-objects``, ``--unsafe`` and ``--max-memory``: every command that reads a model."""
    fn = click.option(
        "--max-memory",
        "max_memory",
        metavar="SIZE",
        callback=size_option,
        help="Refuse models and inputs that would need more memory than SIZE (e.g. 8G, 512M). "
        "Default: half of physical memory.",
    )(fn)
    fn = click.option(
        "--unsafe",
        is_flag=True,
        help="Load models whose config holds Lambda layers or non-Keras classes. "
        "This may run code from the file: use only on files you trust.",
    )(fn)
    fn = click.option(
        "--custom-objects",
        "custom_objects",
        type=click.Path(dir_okay=False),
        metavar="FILE.py",
        help="A Python file you trust, imported to register custom layers and functions.",
    )(fn)
    return click.argument("model", type=click.Path())(fn)


# Formats a run can also write to a file of their own (``--junit FILE``, …), beside the terminal table.
REPORT_FILES = ("json", "markdown", "junit")


def output_options(report_type: type, files: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--format`` (the formats ``report_type`` has renderers for), ``--output``, ``--force`` and,
    with ``files``, ``--json/--markdown/--junit FILE`` for those of its formats in REPORT_FILES."""
    from gradinspect.render import formats_for

    formats = formats_for(report_type)
    extra = tuple(f for f in REPORT_FILES if f in formats) if files else ()
    return lambda fn: _output_options(fn, formats, extra)


def _output_options(fn: Callable[..., Any], formats: tuple[str, ...], files: tuple[str, ...]) -> Callable[..., Any]:
    for fmt in files:
        fn = click.option(
            f"--{fmt}",
            f"{fmt}_file",
            type=click.Path(dir_okay=False),
            metavar="FILE",
            help=f"Also write the result as {fmt} to FILE (same run; any of these together).",
        )(fn)
    fn = click.option("--force", is_flag=True, help="Overwrite existing output files (-o and the others).")(fn)
    fn = click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help="Write the result to FILE (atomically) instead of stdout; an existing FILE needs --force.",
    )(fn)
    return click.option(
        "-f",
        "--format",
        "fmt",
        type=click.Choice(formats),
        default="table",
        show_default=True,
        help="Output format.",
    )(fn)


def data_options(training: bool = True, batches: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Input data and loss, shared by grad, check and verify: ``--input``, ``--random``, ``--seed``,
    ``--input-shape``, ``--samples START:STOP``, ``--batch-size``, ``--loss``, ``--target`` and (when
    ``training``) ``--training``; :func:`data_values` turns them into the core calls' keywords."""
    options = [
        click.option(
            "--input", "input_", metavar="FILE", help="Input data: .npy, .npz, .csv, .json, data.h5[:dataset]."
        ),
        click.option(
            "--random",
            "random_",
            type=click.IntRange(min=1),
            default=4,
            show_default=True,
            help="Without --input: N seeded random samples.",
        ),
        click.option(
            "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed for every random choice."
        ),
        click.option("--input-shape", metavar="D1,D2,..", help="Shape of one sample, for inputs with None dimensions."),
        click.option("--samples", metavar="START:STOP", help="Use only these samples of the input."),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            help="Samples per batch; every batch runs, merged as one (default: 32 when the input has more)."
            if batches
            else "Use only the first N samples.",
        ),
        *_loss_options(),
    ]
    if training:
        options.append(
            click.option("--training", is_flag=True, help="Run layers in training mode (dropout, batch statistics).")
        )
    if batches:
        options.extend(_batch_options())

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _batch_options() -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """``--max-batches``, ``--quiet``, ``--compile`` and ``--devices``: how many batches run, and how."""
    return [
        click.option("--max-batches", type=click.IntRange(min=1), metavar="K", help="Stop after K batches."),
        click.option("--quiet", is_flag=True, help="No progress display on stderr."),
        click.option(
            "--compile",
            "compile_",
            type=click.Choice(["auto", "always", "never"]),
            default="auto",
            show_default=True,
            help="Run the batches after the first as one tf.function (auto: with 4 or more batches).",
        ),
        click.option(
            "--devices",
            type=click.IntRange(min=1),
            metavar="N",
            help="Run the compiled step across N devices (GPUs, else logical CPU devices).",
        ),
    ]


def _loss_options() -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """``--loss``, ``--target`` and ``--model-output``."""
    return [
        click.option(
            "--loss",
            default="auto",
            show_default=True,
            help="auto (logprob:pred on probability outputs, else sum), sum, mean, sumsq, unit:K, "
            "logprob:pred, logprob:K, compiled, or a Keras loss name (mse, categorical_crossentropy, ...) "
            "with --target.",
        ),
        click.option(
            "--target", metavar="FILE", help="Targets for a Keras loss (same formats as --input; .npz by output name)."
        ),
        click.option(
            "--model-output",
            "model_outputs",
            multiple=True,
            metavar="NAME[=FILE]",
            help="Aim the loss at this model output (repeatable); =FILE gives its target.",
        ),
    ]


def data_values(options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the core calls, from the ``data_options`` values."""
    return {
        "inputs": options["input_"],
        "loss": options["loss"],
        "target": options["target"],
        **({"training": options["training"]} if "training" in options else {}),
        **({"max_batches": options["max_batches"]} if "max_batches" in options else {}),
        **({"compile": options["compile_"]} if "compile_" in options else {}),
        **({"devices": options["devices"]} if options.get("devices") else {}),
        "random": options["random_"],
        "seed": options["seed"],
        "input_shape": shape_option(options["input_shape"]),
        "samples": options["samples"],
        "batch_size": options["batch_size"],
        "outputs": tuple(options["model_outputs"]),
    }


def shape_option(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        dims = tuple(int(v) for v in value.replace("x", ",").split(",") if v.strip())
    except ValueError as exc:
        raise UsageProblem(f"--input-shape {value}: expected integers like 28,28,1") from exc
    if not dims or any(d < 1 for d in dims):
        raise UsageProblem(f"--input-shape {value}: every dimension must be a positive integer, e.g. 28,28,1")
    return dims


def parse_pairs(from_: str | None, to: str | None, pair: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    if from_ or to:
        if not (from_ and to):
            raise UsageProblem("--from and --to go together (or use --pair A:B)")
        out.append((from_, to))
    for item in pair:
        a, sep, b = item.partition(":")
        if not sep or not a or not b:
            raise UsageProblem(f"--pair {item}: expected FROM:TO, e.g. --pair dense_1:dense_2")
        out.append((a, b))
    return out


def split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def files_read(model: str, *paths: Any) -> list[Any]:
    """The files this run reads (model, custom objects, inputs, targets, baseline), which no output may overwrite."""
    from gradinspect.output import input_paths

    return input_paths(model, *paths)


def report_files(options: dict[str, Any], reads: list[Any]) -> dict[str, Any]:
    """``--json/--markdown/--junit FILE`` destinations by format, checked before any work."""
    force = options.get("force", False)
    return {
        fmt: checked_destination(options.get(f"{fmt}_file"), f"--{fmt}", reads, force=force)
        for fmt in REPORT_FILES
        if options.get(f"{fmt}_file")
    }


def rendered_files(report: Any, files: dict[str, Any]) -> tuple[tuple[Any, str], ...]:
    """The report rendered once per extra file, for :func:`emit`."""
    from gradinspect.render import render

    return tuple((dest, render(report, fmt)) for fmt, dest in files.items())


def checked_destination(path: str | None, option: str, reads: list[Any], force: bool = True) -> Any:
    """Check an output path before any work (None when the option was not given)."""
    if not path:
        return None
    from gradinspect.output import destination

    return destination(path, option, reads, force=force)


def emit(report: Any, fmt: str, output: Any, extra: tuple[tuple[Any, Any], ...] = ()) -> None:
    """Render ``report`` to stdout or to the checked ``output``, writing ``extra`` files with it, all or none."""
    from gradinspect.output import write_all
    from gradinspect.render import render

    files = [(dest, data) for dest, data in extra if dest is not None]
    if output is not None:
        files.append((output, render(report, fmt)))
        write_all(files)
        return
    write_all(files)
    # The terminal's width, or COLUMNS when set (also in a pipe), else 160.
    width = shutil.get_terminal_size(fallback=(160, 24)).columns
    color = use_color()
    # click.echo strips styles when stdout is not a terminal unless told the colour choice.
    click.echo(render(report, fmt, color=color, width=width), nl=False, color=color)


@contextlib.contextmanager
def progress_bar(label: str, quiet: bool = False) -> Iterator[Callable[..., None] | None]:
    """A progress bar on stderr for long loops, only when stderr is a terminal (never in logs).

    Yields ``update(done, total, samples=None)``; with ``samples`` (samples done) it shows samples/s."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    rate = TextColumn("{task.fields[rate]}")
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), rate, TimeElapsedColumn(), TimeRemainingColumn())
    started = time.monotonic()

    def update(done: int, total: int, samples: int | None = None) -> None:
        elapsed = time.monotonic() - started
        speed = f"{samples / elapsed:,.0f} samples/s" if samples and elapsed > 0 else ""
        bar.update(task, completed=done, total=total, rate=speed)

    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None, rate="")
        yield update


@contextlib.contextmanager
def staged_h5(dest: Any) -> Iterator[Any]:
    """The ``--save-h5`` writer for a checked destination (None without one); its temporary file is
    removed on the way out unless :func:`emit` renamed it into place."""
    if dest is None:
        yield None
        return
    from gradinspect.output import StagedH5

    sink = StagedH5(dest)
    try:
        yield sink
    finally:
        sink.discard()


def unsafe_notice(unsafe: bool) -> None:
    if unsafe:
        click.echo("gradinspect: --unsafe: the safety scan is off; code in the model file may run", err=True)


def plot_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--plot FILE.png|FILE.svg`` and ``--hist``: the gradient-flow figure (matplotlib)."""
    fn = click.option("--hist", is_flag=True, help="With --plot: add histograms of each layer's |gradient|.")(fn)
    return click.option(
        "--plot",
        metavar="FILE",
        type=click.Path(dir_okay=False),
        help="Draw the gradient flow to FILE.png or FILE.svg (needs gradinspect[plot]).",
    )(fn)


def checked_plot(path: str | None, reads: list[Any], force: bool = False) -> Any:
    """The ``--plot`` destination, its format and matplotlib checked before any work (None: no plot)."""
    if not path:
        return None
    from gradinspect.render.plot import plot_format, require_matplotlib

    plot_format(path)
    require_matplotlib()
    return checked_destination(path, "--plot", reads, force=force)


def plot_file(dest: Any, grad_report: Any, hist: bool) -> tuple[Any, bytes]:
    """``(dest, figure bytes)`` for :func:`emit`'s extra files (nothing drawn without a destination)."""
    if dest is None:
        return None, b""
    from gradinspect.render.plot import figure_bytes, plot_format

    return dest, figure_bytes(grad_report, plot_format(str(dest.path)), hist)


def use_color() -> bool:
    """Colour on a terminal unless ``NO_COLOR`` is set (https://no-color.org); ``--color``/``--no-color``
    override both."""
    ctx = click.get_current_context(silent=True)
    forced = (ctx.find_root().obj or {}).get("color") if ctx is not None else None
    if forced is not None:
        return bool(forced)
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


@dataclass(frozen=True)
class ExtraOutputs:
    """``--plot`` (with ``--hist``) and ``--json/--markdown/--junit FILE``, checked before any work."""

    plot: Any
    hist: bool
    files: dict[str, Any]

    @classmethod
    def checked(cls, options: dict[str, Any], reads: list[Any]) -> ExtraOutputs:
        force = options.get("force", False)
        plot = checked_plot(options.pop("plot", None), reads, force)
        return cls(plot, bool(options.pop("hist", False)), report_files(options, reads))

    def rendered(self, report: Any, grad_report: Any) -> tuple[tuple[Any, Any], ...]:
        """(destination, bytes) of each, from one run's report (and the GradReport the figure is drawn from)."""
        return (plot_file(self.plot, grad_report, self.hist), *rendered_files(report, self.files))
