"""The CLI's outputs: destinations checked before any work, rendering to stdout or files (all or
none), colour, the --plot figure and the extra report files of one run."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

from gradinspect.destinations import npz_bytes

# Formats a run can also write to a file of their own (``--junit FILE``, …), beside the terminal table.
REPORT_FILES = ("json", "markdown", "junit")


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
    from gradinspect.destinations import destination

    return destination(path, option, reads, force=force)


def emit(report: Any, fmt: str, output: Any, extra: tuple[tuple[Any, Any], ...] = (), hist: bool = False) -> None:
    """Render ``report`` to stdout or to the checked ``output``, writing ``extra`` files with it, all or none."""
    from gradinspect.destinations import write_all
    from gradinspect.render import render

    files = [(dest, data) for dest, data in extra if dest is not None]
    if output is not None:
        files.append((output, render(report, fmt, hist=hist)))
        write_all(files)
        return
    write_all(files)
    # The terminal's width, or COLUMNS when set (also in a pipe), else 160.
    width = shutil.get_terminal_size(fallback=(160, 24)).columns
    color = use_color()
    # click.echo strips styles when stdout is not a terminal unless told the colour choice.
    click.echo(render(report, fmt, color=color, width=width, hist=hist), nl=False, color=color)


def use_color() -> bool:
    """Colour on a terminal unless ``NO_COLOR`` is set (https://no-color.org); ``--color``/``--no-color``
    override both."""
    ctx = click.get_current_context(silent=True)
    forced = (ctx.find_root().obj or {}).get("color") if ctx is not None else None
    if forced is not None:
        return bool(forced)
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


@contextlib.contextmanager
def staged_h5(dest: Any) -> Iterator[Any]:
    """The ``--save-h5`` writer for a checked destination (None without one); its temporary file is
    removed on the way out unless :func:`emit` renamed it into place."""
    if dest is None:
        yield None
        return
    from gradinspect.destinations import StagedH5

    sink = StagedH5(dest)
    try:
        yield sink
    finally:
        sink.discard()


def plot_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--plot FILE.png|FILE.svg`` and ``--hist``: the gradient-flow figure (matplotlib)."""
    fn = click.option(
        "--hist", is_flag=True, help="Histograms of |gradient|: sparklines in grad's tables; panels in --plot."
    )(fn)
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

    def destinations(self) -> list[Any]:
        """Every checked destination (for the run's check that no two outputs share a file)."""
        return [self.plot, *self.files.values()]

    def rendered(self, report: Any, grad_report: Any) -> tuple[tuple[Any, Any], ...]:
        """(destination, bytes) of each, from one run's report (and the GradReport the figure is drawn from)."""
        return (plot_file(self.plot, grad_report, self.hist), *rendered_files(report, self.files))


def saliency_bytes(arrays: dict[str, Any] | None, dest: Any) -> bytes:
    """``--saliency FILE``: the maps and their inputs as an ``.npz``, or a PNG grid for image inputs."""
    chosen = {k: v for k, v in (arrays or {}).items() if k.startswith(("saliency/", "input/"))}
    if str(dest.path).lower().endswith(".png"):
        from gradinspect.render.plot import saliency_png

        return saliency_png(chosen)
    return npz_bytes(chosen)
