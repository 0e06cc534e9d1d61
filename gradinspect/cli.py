"""Click wiring only: options -> one core call -> one renderer -> stdout or --output."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import click

from gradinspect import __version__
from gradinspect.errors import GradinspectError, UsageProblem
from gradinspect.formatting import first_line
from gradinspect.report import CheckReport, GradReport, LayersReport, VerifyReport

# An unexpected exception is a bug in gradinspect, not bad input (2) or a failed check (1).
INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE (sysexits.h)


class _Group(click.Group):
    """Every failure becomes one ``Error:`` line on stderr with its exit status, never a traceback."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:  # fmt: skip
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "gradinspect"
            _error(f"{exc.format_message()} (see '{where} --help')")
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            _error(exc.format_message())
            sys.exit(exc.exit_code)
        except click.Abort:
            _error("interrupted")
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except GradinspectError as exc:
            if _debug(ctx):
                traceback.print_exc()
            _error(str(exc))
            ctx.exit(exc.exit_code)
        except Exception as exc:  # a bug: still one line, unless --debug asks for more
            if _debug(ctx):
                traceback.print_exc()
            detail = first_line(exc) if str(exc).strip() else ""
            _error(
                f"internal error ({type(exc).__name__}{': ' + detail if detail else ''}); this is a bug in "
                "gradinspect: rerun with --debug and report the traceback"
            )
            ctx.exit(INTERNAL_ERROR_EXIT)


def _error(message: str) -> None:
    """The one error line; text from model files or options is made printable first."""
    from gradinspect.render.safetext import printable

    click.echo(f"Error: {printable(message)}", err=True)


def _debug(ctx: click.Context) -> bool:
    obj = ctx.obj or {}
    return bool(obj.get("debug")) or os.environ.get("GRADINSPECT_DEBUG") == "1"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="gradinspect")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error (for bug reports).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Inspect per-layer gradients of saved Keras models.

    Reads Keras 3 `.keras`, legacy `.h5` (any Keras era) and TensorFlow SavedModel
    directories. Model files are scanned before loading and never run code unless
    you pass --unsafe.

    Exit status: 0 success, 1 a check failed, 2 trouble (bad flags, an unreadable,
    unsafe or unsupported file, bad input data).

    \b
    Example:
      gradinspect layers sample_models/mlp.keras
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _size_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
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
        callback=_size_option,
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


def output_options(report_type: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--format`` (the formats ``report_type`` has renderers for) and ``--output``."""
    from gradinspect.render import formats_for

    return lambda fn: _output_options(fn, formats_for(report_type))


def _output_options(fn: Callable[..., Any], formats: tuple[str, ...]) -> Callable[..., Any]:
    fn = click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help="Write the result to FILE (atomically) instead of stdout.",
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


def _reads(model: str, **paths: Any) -> list[Any]:
    """The files this run reads, which no output may overwrite."""
    from gradinspect.output import input_paths

    return input_paths(model, *paths.values())


def _destination(path: str | None, option: str, reads: list[Any], force: bool = True) -> Any:
    """Check an output path before any work (None when the option was not given)."""
    if not path:
        return None
    from gradinspect.output import destination

    return destination(path, option, reads, force=force)


def _emit(report: Any, fmt: str, output: Any, extra: tuple[tuple[Any, bytes | str], ...] = ()) -> None:
    """Render ``report`` to stdout or to the checked ``output``, writing ``extra`` files with it, all or none."""
    from gradinspect.output import write_all
    from gradinspect.render import render

    files = [(dest, data) for dest, data in extra if dest is not None]
    if output is not None:
        files.append((output, render(report, fmt)))
        write_all(files)
        return
    write_all(files)
    is_tty = sys.stdout.isatty()
    width = shutil.get_terminal_size().columns if is_tty else None
    click.echo(render(report, fmt, color=is_tty, width=width), nl=False)


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr for long loops, only when stderr is a terminal (never in logs)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _unsafe_notice(unsafe: bool) -> None:
    if unsafe:
        click.echo("gradinspect: --unsafe: the safety scan is off; code in the model file may run", err=True)


@main.command()
@model_options
@output_options(LayersReport)
def layers(
    model: str, custom_objects: str | None, unsafe: bool, max_memory: int | None, fmt: str, output: str | None
) -> None:
    """List the layers of MODEL: name, class, output shape, parameters, trainable.

    Nested models are shown as a tree; their layers are addressed as `outer/inner`.
    `.keras` and `.h5` files are read without importing TensorFlow. For a SavedModel
    without Keras metadata, lists its signatures and its variables by name scope.

    \b
    Example:
      gradinspect layers sample_models/mlp.keras --format json
    """
    from gradinspect.artifacts.limits import memory_limit
    from gradinspect.commands.layers import list_layers

    dest = _destination(output, "--output", _reads(model, custom_objects=custom_objects))
    _unsafe_notice(unsafe)
    with memory_limit(max_memory):
        report = list_layers(model, custom_objects=custom_objects, unsafe=unsafe)
    _emit(report, fmt, dest)


def _pairs(from_: str | None, to: str | None, pair: tuple[str, ...]) -> list[tuple[str, str]]:
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


def _shape_option(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        dims = tuple(int(v) for v in value.replace("x", ",").split(",") if v.strip())
    except ValueError as exc:
        raise UsageProblem(f"--input-shape {value}: expected integers like 28,28,1") from exc
    if not dims or any(d < 1 for d in dims):
        raise UsageProblem(f"--input-shape {value}: every dimension must be a positive integer, e.g. 28,28,1")
    return dims


def data_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Input data and loss: ``--input``/``--random``/``--seed``/``--input-shape``/``--samples``/
    ``--batch-size``, ``--loss``/``--target`` and ``--training``; collected into ``data``."""
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
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed for --random."),
        click.option("--input-shape", metavar="D1,D2,..", help="Shape of one sample, for inputs with None dimensions."),
        click.option("--samples", metavar="START:STOP", help="Use only these samples of the input."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Use only the first N samples."),
        click.option(
            "--loss",
            default="sum",
            show_default=True,
            help="sum, mean, sumsq, unit:K, compiled, or a Keras loss name (mse, categorical_crossentropy, "
            "...) with --target.",
        ),
        click.option("--target", metavar="FILE", help="Targets for a Keras loss (same formats as --input)."),
        click.option("--training", is_flag=True, help="Run layers in training mode (dropout, batch statistics)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _data(options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the core calls, from the ``data_options`` values."""
    return {
        "inputs": options["input_"],
        "loss": options["loss"],
        "target": options["target"],
        "training": options["training"],
        "random": options["random_"],
        "seed": options["seed"],
        "input_shape": _shape_option(options["input_shape"]),
        "samples": options["samples"],
        "batch_size": options["batch_size"],
    }


@main.command()
@model_options
@click.option("--from", "from_", metavar="LAYER", help="First layer of the pair (its output gradient).")
@click.option("--to", metavar="LAYER", help="Second layer of the pair (its weight gradients).")
@click.option("--pair", multiple=True, metavar="A:B", help="A layer pair; may be repeated.")
@click.option("--all", "all_layers", is_flag=True, help="Every layer, as consecutive pairs.")
@data_options
@click.option(
    "--stage1",
    metavar="EXPR",
    help="Stage-1 loss whose gradient g = d stage1/d act feeds --stage2. Default: sum(square(act)).",
)
@click.option(
    "--stage2",
    metavar="EXPR",
    help="Second-stage loss using grad (= g), act, out, y, target, from.<var>, to.<var>. Built-in: "
    "'seed' = sum(out) + sum(matmul(grad, to.kernel) * out); 'grad-penalty' = (norm(grad) - 1) ** 2.",
)
@click.option("--through", is_flag=True, help="Differentiate through g (double backprop); default: g is a constant.")
@output_options(GradReport)
@click.option("--save-npz", metavar="FILE", type=click.Path(dir_okay=False), help="Save every reported gradient array.")
@click.option("--force", is_flag=True, help="Overwrite an existing --save-npz file.")
def grad(
    model,
    custom_objects,
    unsafe,
    from_,
    to,
    pair,
    all_layers,
    stage1,
    stage2,
    through,
    max_memory,
    fmt,
    output,
    save_npz,
    force,
    **data_options_values: Any,
) -> None:
    """Gradients of a loss w.r.t. layer outputs and layer weights, for chosen layer pairs.

    One forward pass under a GradientTape and one backward call serve every pair.
    With --stage2, the gradient g of a stage-1 loss w.r.t. the --from layer's output
    feeds a second loss, whose gradients are compared with the plain ones.

    \b
    Examples:
      gradinspect grad sample_models/mlp.keras --from dense_1 --to dense_2
      gradinspect grad sample_models/mlp.keras --from dense_1 --to dense_2 --stage2 seed --through
    """
    from gradinspect.artifacts.limits import memory_limit
    from gradinspect.commands.grad import inspect_gradients

    pairs = _pairs(from_, to, pair)
    if not pairs and not all_layers:
        raise UsageProblem("choose layers: --from A --to B, --pair A:B or --all")
    data = _data(data_options_values)
    reads = _reads(model, custom_objects=custom_objects, inputs=data["inputs"], target=data["target"])
    if save_npz and os.path.exists(save_npz) and not force:
        raise UsageProblem(f"--save-npz {save_npz}: the file exists; pass --force to overwrite it")
    npz_dest = _destination(save_npz, "--save-npz", reads)
    dest = _destination(output, "--output", reads)
    _unsafe_notice(unsafe)
    with memory_limit(max_memory):
        report = inspect_gradients(
            model,
            data.pop("inputs"),
            pairs,
            all_layers=all_layers,
            custom_objects=custom_objects,
            unsafe=unsafe,
            stage1=stage1,
            stage2=stage2,
            through=through,
            **data,
        )
    _emit(report, fmt, dest, ((npz_dest, _npz_bytes(report.arrays) if npz_dest else b""),))


def _npz_bytes(arrays: dict[str, Any]) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@main.command()
@model_options
@data_options
@click.option("--layers", "layer_list", metavar="A,B,...", help="Check only these layers (default: every layer).")
@click.option("--allow-nonfinite", is_flag=True, help="Do not fail on NaN/Inf gradients or loss.")
@click.option("--allow-disconnected", is_flag=True, help="Do not fail on variables that receive no gradient.")
@click.option("--max-norm", type=float, metavar="X", help="Fail when a variable's gradient norm exceeds X (exploding).")
@click.option(
    "--min-norm", type=float, metavar="X", help="Fail when a variable's gradient norm is below X (vanishing)."
)
@click.option(
    "--max-zero-fraction", type=float, metavar="F", help="Fail when more than F of a gradient's entries are exactly 0."
)
@click.option("--max-ratio", type=float, metavar="R", help="Fail when gradient norm / weight norm exceeds R.")
@click.option("--write-baseline", metavar="FILE", type=click.Path(dir_okay=False), help="Save the gradient profile.")
@click.option("--baseline", metavar="FILE", type=click.Path(dir_okay=False), help="Compare with a saved profile.")
@click.option(
    "--rtol", type=float, default=1e-3, show_default=True, help="Relative change of a norm --baseline allows."
)
@output_options(CheckReport)
@click.pass_context
def check(
    ctx,
    model,
    custom_objects,
    unsafe,
    layer_list,
    allow_nonfinite,
    allow_disconnected,
    max_norm,
    min_norm,
    max_zero_fraction,
    max_ratio,
    write_baseline,
    baseline,
    rtol,
    max_memory,
    fmt,
    output,
    **data_options_values: Any,
) -> None:
    """Check that MODEL back-propagates healthy gradients: a smoke test for CI.

    One forward and one backward pass give the gradient of every trainable variable
    and layer output; each rule is then checked per gradient. Exit status: 0 all rules
    pass, 1 a rule failed, 2 the model or input could not be used. The last line on
    stderr is a summary such as `12 checks, 2 failed`.

    \b
    Examples:
      gradinspect check model.keras --input batch.npy --max-norm 100 --format junit -o grads.xml
      gradinspect check model.keras --write-baseline grads.json
      gradinspect check model.keras --baseline grads.json --rtol 0.01
    """
    from gradinspect.artifacts.limits import memory_limit
    from gradinspect.commands.check import Rules, baseline_json, read_baseline
    from gradinspect.commands.check import check as run_check

    data = _data(data_options_values)
    reads = _reads(
        model, custom_objects=custom_objects, inputs=data["inputs"], target=data["target"], baseline=baseline
    )
    if baseline is not None:
        read_baseline(baseline)  # a missing or malformed baseline fails before any work
    baseline_dest = _destination(write_baseline, "--write-baseline", reads)
    dest = _destination(output, "--output", reads)
    _unsafe_notice(unsafe)
    rules = Rules(
        allow_nonfinite=allow_nonfinite,
        allow_disconnected=allow_disconnected,
        max_norm=max_norm,
        min_norm=min_norm,
        max_zero_fraction=max_zero_fraction,
        max_ratio=max_ratio,
        baseline=baseline,
        rtol=rtol,
    )
    with memory_limit(max_memory):
        report = run_check(
            model,
            data.pop("inputs"),
            layers=_split(layer_list),
            rules=rules,
            custom_objects=custom_objects,
            unsafe=unsafe,
            **data,
        )
    _emit(report, fmt, dest, ((baseline_dest, baseline_json(report.grad) if baseline_dest else ""),))
    click.echo(report.summary(), err=True)
    ctx.exit(0 if report.passed else 1)


@main.command()
@model_options
@click.option("--layer", required=True, metavar="LAYER", help="The layer whose gradients are verified.")
@click.option("--input", "input_", metavar="FILE", help="Input data: .npy, .npz, .csv, .json, data.h5[:dataset].")
@click.option(
    "--random",
    "random_",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Without --input: N random samples.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed for --random and for choosing entries.",
)
@click.option("--input-shape", metavar="D1,D2,..", help="Shape of one sample, for inputs with None dimensions.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Use only the first N samples.")
@click.option("--loss", default="sum", show_default=True, help="Loss spec, as for `grad`.")
@click.option("--target", metavar="FILE", help="Targets for a Keras loss.")
@click.option(
    "--samples",
    "entries",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Entries checked per variable.",
)
@click.option(
    "--eps",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-6,
    show_default=True,
    help="Finite-difference step (float64).",
)
@click.option(
    "--tol",
    type=click.FloatRange(min=0),
    default=1e-6,
    show_default=True,
    help="Allowed max |tape - fd| / max(1, |fd|).",
)
@output_options(VerifyReport)
@click.pass_context
def verify(
    ctx,
    model,
    custom_objects,
    unsafe,
    layer,
    input_,
    random_,
    seed,
    input_shape,
    batch_size,
    loss,
    target,
    entries,
    eps,
    tol,
    max_memory,
    fmt,
    output,
) -> None:
    """Verify LAYER's gradients against central finite differences (like torch.autograd.gradcheck).

    The model is rebuilt in float64 (float32 differences are only good to ~1e-4); the
    tape gradient of the layer's output and variables is compared with (f(w+eps) -
    f(w-eps)) / 2eps at --samples entries each. Exit status 1 when an error exceeds
    --tol: how a custom layer with a wrong gradient shows itself.

    \b
    Example:
      gradinspect verify model.keras --layer my_layer --custom-objects layers.py
    """
    from gradinspect.artifacts.limits import memory_limit
    from gradinspect.commands.verify import verify as run_verify

    dest = _destination(output, "--output", _reads(model, custom_objects=custom_objects, inputs=input_, target=target))
    _unsafe_notice(unsafe)
    with memory_limit(max_memory), _progress("finite differences") as progress:
        report = run_verify(
            model,
            layer,
            input_,
            samples=entries,
            eps=eps,
            tol=tol,
            seed=seed,
            loss=loss,
            target=target,
            custom_objects=custom_objects,
            unsafe=unsafe,
            random=random_,
            input_shape=_shape_option(input_shape),
            batch_size=batch_size,
            progress=progress,
        )
    _emit(report, fmt, dest)
    click.echo(report.summary(), err=True)
    ctx.exit(0 if report.passed else 1)
