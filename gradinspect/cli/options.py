"""The CLI's shared pieces: option groups as decorators, output destinations, rendering, progress."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from gradinspect.cli.outputs import REPORT_FILES
from gradinspect.errors import UsageProblem

if TYPE_CHECKING:
    from gradinspect.engine.options import InputShape


def size_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from gradinspect.artifacts.limits import parse_size

    try:
        return parse_size(value)
    except UsageProblem as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[-1], ctx=ctx, param=param) from None


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``MODEL``, ``--custom-objects``, ``--unsafe``, ``--max-memory``, ``--max-disk`` and ``--timeout``:
    every command that reads a model."""
    fn = click.option(
        "--timeout",
        type=click.FloatRange(min=0),
        default=600,
        show_default=True,
        metavar="SECONDS",
        help="Stop a run whose TensorFlow work takes longer (a model's graph can loop forever); 0: no limit.",
    )(fn)
    fn = click.option(
        "--max-disk",
        "max_disk",
        metavar="SIZE",
        callback=size_option,
        help="Refuse to copy or write a file larger than SIZE (the private model copy, --save-h5). "
        "Default: the --max-memory default.",
    )(fn)
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
    options: list[Any] = [
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
        click.option(
            "--input-shape",
            metavar="[NAME=]D1,D2,..",
            multiple=True,
            help="Shape of one sample, for inputs with None dimensions; NAME=D1,D2 for one input (repeatable).",
        ),
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
    """``--loss``, ``--target``, ``--model-output`` and ``--no-regularizers``."""
    return [
        click.option(
            "--regularizers/--no-regularizers",
            default=True,
            show_default=True,
            help="With --loss compiled: add the model's regularization losses (model.losses), as Keras trains.",
        ),
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
        "regularizers": options["regularizers"],
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


def shape_option(values: tuple[str, ...] | str | None) -> InputShape:
    """``--input-shape``: one shape for every input, or ``NAME=SHAPE`` per input (a plain shape
    beside them serves every other input, under ``"*"``)."""
    if not values:
        return None
    if isinstance(values, str):
        values = (values,)
    named: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, sep, dims = value.rpartition("=")
        key = name.strip() if sep else "*"
        if key in named:
            what = f"input {key!r}" if key != "*" else "every input"
            raise UsageProblem(f"--input-shape {value}: a second shape for {what}; give one per input")
        named[key] = _dims(dims, value)
    return named["*"] if list(named) == ["*"] else named


def _dims(text: str, value: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
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
        # A model input is a pair end too: ``input:NAME``, so ``--pair input:x:dense_1`` is (input:x, dense_1).
        ends: list[str] = []
        for part in item.split(":"):
            if ends and ends[-1] == "input" and item.count(":") > 1:  # a layer may be named "input"
                ends[-1] = f"input:{part}"
            else:
                ends.append(part)
        if len(ends) != 2 or not all(ends):
            raise UsageProblem(f"--pair {item}: expected FROM:TO, e.g. --pair dense_1:dense_2 or input:x:dense_1")
        out.append((ends[0], ends[1]))
    return out


def split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def files_read(model: str, *paths: Any, data: dict[str, Any] | None = None) -> list[Any]:
    """The files this run reads (model, custom objects, baseline, and with ``data`` its inputs, targets
    and ``--model-output NAME=FILE`` targets), which no output may overwrite."""
    from gradinspect.engine.readers import data_file

    if data is not None:
        named = [o.partition("=")[2] for o in data.get("outputs", ()) if "=" in o]
        paths = (*paths, data.get("inputs"), data.get("target"), *named)
    return [data_file(p)[0] for p in (model, *paths) if p is not None]


def child_limits(options: dict[str, Any]) -> Any:
    """What the TensorFlow child process may use, from ``--timeout``, ``--max-memory`` and ``--max-disk``."""
    from gradinspect.artifacts.limits import default_max_memory
    from gradinspect.cli.isolation import ChildLimits

    timeout = options.get("timeout")
    disk = options.get("max_disk") or default_max_memory()
    return ChildLimits(timeout or None, options.get("max_memory"), disk)


def unsafe_notice(unsafe: bool) -> None:
    if unsafe:
        click.echo("gradinspect: --unsafe: the safety scan is off; code in the model file may run", err=True)
