"""The four commands: each parses its options, calls one core function and renders its report."""

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
    parse_pairs,
    split_list,
    unsafe_notice,
)
from gradinspect.cli.outputs import (
    ExtraOutputs,
    checked_destination,
    emit,
    plot_options,
    saliency_bytes,
    staged_h5,
)
from gradinspect.destinations import ensure_distinct, npz_bytes
from gradinspect.errors import UsageProblem
from gradinspect.report import CheckReport, GradReport, LayersReport, VerifyReport

_SIGNATURE = click.option(
    "--signature",
    metavar="NAME",
    help="The SavedModel signature to use (default: serving_default, else the first; `layers` lists them).",
)


@main.command()
@model_options
@_SIGNATURE
@output_options(LayersReport)
def layers(model: str, signature: str | None, fmt: str, output: str | None, **options: Any) -> None:
    """List the layers of MODEL: name, class, output shape, parameters, trainable.

    Nested models are shown as a tree; their layers are addressed as `outer/inner`.
    `.keras` and `.h5` files are read without importing TensorFlow. For a SavedModel
    without Keras metadata, lists its signatures and the layers recovered from the
    graph of one of them (name scopes: main ops, output shape, parameters), read
    without TensorFlow.

    \b
    Example:
      gradinspect layers sample_models/mlp.keras --format json
    """
    from gradinspect.artifacts.limits import memory_limit
    from gradinspect.cli.isolation import run_isolated
    from gradinspect.commands.layers import list_layers, static_listing

    custom_objects, unsafe = options["custom_objects"], options["unsafe"]
    dest = checked_destination(output, "--output", files_read(model, custom_objects), force=options["force"])
    unsafe_notice(unsafe)
    report = None
    if custom_objects is None:  # the user's file is code that may import TensorFlow: the child runs it
        with memory_limit(options["max_memory"]):
            report = static_listing(model, unsafe=unsafe, signature=signature)
    if report is None:  # a model that only a loader can list
        kwargs = {"path": model, "custom_objects": custom_objects, "unsafe": unsafe, "signature": signature}
        report = run_isolated(list_layers, kwargs, child_limits(options), model, label=None)
    emit(report, fmt, dest)


@main.command()
@model_options
@click.option("--from", "from_", metavar="LAYER", help="First layer of the pair (its output gradient).")
@click.option("--to", metavar="LAYER", help="Second layer of the pair (its weight gradients).")
@click.option("--pair", multiple=True, metavar="A:B", help="A layer pair; may be repeated.")
@click.option("--all", "all_layers", is_flag=True, help="Every layer, as consecutive pairs.")
@click.option(
    "--activations",
    is_flag=True,
    help="Also the recorded outputs' own values: mean, std, share of zeros (dead ReLUs) and of saturated "
    "sigmoid/tanh units; activation/<layer> arrays in --save-npz.",
)
@data_options()
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
@_SIGNATURE
@plot_options
@output_options(GradReport, files=True)
@click.option("--save-npz", metavar="FILE", type=click.Path(dir_okay=False), help="Save every reported gradient array.")
@click.option(
    "--saliency",
    metavar="FILE.npz|FILE.png",
    type=click.Path(dir_okay=False),
    help="Per-sample saliency maps of the inputs (|d loss / d input|, max over channels, scaled per sample): "
    "saliency/<input> and input/<input> arrays, or for images a PNG grid of inputs and maps.",
)
@click.option("--smooth", type=click.IntRange(min=0), default=0, show_default=True, help="SmoothGrad: noisy copies.")
@click.option(
    "--noise",
    type=click.FloatRange(min=0),
    default=0.2,
    show_default=True,
    help="SmoothGrad's noise: a share of each sample's value range.",
)
@click.option(
    "--save-h5",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Save the per-sample output gradients of every batch as HDF5 datasets output/<layer>, shape (N, ...).",
)
def grad(
    model: str,
    custom_objects: str | None,
    unsafe: bool,
    from_: str | None,
    to: str | None,
    pair: tuple[str, ...],
    all_layers: bool,
    fmt: str,
    output: str | None,
    save_npz: str | None,
    save_h5: str | None,
    force: bool,
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
    from gradinspect.cli.isolation import run_isolated
    from gradinspect.commands.grad import inspect_gradients

    pairs = parse_pairs(from_, to, pair)
    if not pairs and not all_layers:
        raise UsageProblem("choose layers: --from A --to B, --pair A:B or --all")
    data = data_values(data_options_values)
    reads = files_read(model, custom_objects, data=data)
    npz_dest = checked_destination(save_npz, "--save-npz", reads, force=force)
    saliency = _saliency_destination(data_options_values, reads, force)
    h5_dest = checked_destination(save_h5, "--save-h5", reads, force=force)
    dest = checked_destination(output, "--output", reads, force=force)
    extras = ExtraOutputs.checked({**data_options_values, "force": force}, reads)
    ensure_distinct([npz_dest, saliency, h5_dest, dest, *extras.destinations()])
    unsafe_notice(unsafe)
    limits = child_limits(data_options_values)
    with staged_h5(h5_dest) as sink:
        kwargs = {
            "model_or_path": model,
            "pairs": pairs,
            "sink": sink,
            "all_layers": all_layers,
            "saliency": saliency is not None,
            "custom_objects": custom_objects,
            "unsafe": unsafe,
            **{k: data_options_values.pop(k) for k in _GRAD_OPTIONS},
            **data,
        }
        quiet = data_options_values.get("quiet", False)
        report = run_isolated(inspect_gradients, kwargs, limits, model, label="batches", quiet=quiet)
        npz = (npz_dest, npz_bytes(report.arrays) if npz_dest else b"")
        files = (npz, (saliency, saliency_bytes(report.arrays, saliency) if saliency else b""))
        files += tuple(extras.rendered(report, report))
        emit(report, fmt, dest, (*files, (h5_dest, sink)), hist=extras.hist)


# Passed through to inspect_gradients as they are.
_GRAD_OPTIONS = ("stage1", "stage2", "through", "signature", "activations", "smooth", "noise")


def _saliency_destination(options: dict[str, Any], reads: Any, force: bool) -> Any:
    """``--saliency FILE``: an ``.npz`` or a ``.png``, checked like every destination before any work."""
    path = options.pop("saliency")
    if path is not None and not str(path).lower().endswith((".npz", ".png")):
        raise UsageProblem(f"--saliency {path}: give a .npz (the maps) or a .png (a grid of inputs and maps) file")
    if path is not None and str(path).lower().endswith(".png"):
        from gradinspect.render.plot import require_matplotlib

        require_matplotlib()
    return checked_destination(path, "--saliency", reads, force=force)


def _rules(options: dict[str, Any], baseline: str | None) -> Any:
    """The check's rules: the flags, over the top-level thresholds of --rules FILE, and its per-layer tables."""
    from gradinspect.commands.check import read_rules
    from gradinspect.report import Rules

    defaults, per_layer = read_rules(options["rules_file"]) if options["rules_file"] else ({}, ())
    flags: dict[str, Any] = {k: options[k] if options[k] is not None else defaults.get(k) for k in _RULE_OPTIONS}
    return Rules(**flags, baseline=baseline, rtol=options["rtol"], per_layer=per_layer)


_RULE_OPTIONS = ("allow_nonfinite", "allow_disconnected", "max_norm", "min_norm", "max_zero_fraction", "max_ratio")
_NON_NEGATIVE = click.FloatRange(min=0)


@main.command()
@model_options
@data_options()
@click.option("--layers", "layer_list", metavar="A,B,...", help="Check only these layers (default: every layer).")
@click.option("--allow-nonfinite", is_flag=True, help="Do not fail on NaN/Inf gradients or loss.")
@click.option("--allow-disconnected", is_flag=True, help="Do not fail on variables that receive no gradient.")
@click.option("--max-norm", type=_NON_NEGATIVE, metavar="X", help="Fail when a gradient norm exceeds X (exploding).")
@click.option("--min-norm", type=_NON_NEGATIVE, metavar="X", help="Fail when a gradient norm is below X (vanishing).")
@click.option(
    "--max-zero-fraction",
    type=click.FloatRange(0, 1),
    metavar="F",
    help="Fail when more than F of a gradient's entries are exactly 0.",
)
@click.option("--max-ratio", type=_NON_NEGATIVE, metavar="R", help="Fail when gradient norm / weight norm exceeds R.")
@click.option(
    "--rules",
    "rules_file",
    metavar="FILE.toml",
    type=click.Path(dir_okay=False),
    help="Per-layer thresholds: [[layer]] tables with match = GLOB and the keys of the flags above.",
)
@click.option("--write-baseline", metavar="FILE", type=click.Path(dir_okay=False), help="Save the gradient profile.")
@click.option("--baseline", metavar="FILE", type=click.Path(dir_okay=False), help="Compare with a saved profile.")
@click.option(
    "--rtol", type=_NON_NEGATIVE, default=1e-3, show_default=True, help="Relative change of a norm --baseline allows."
)
@plot_options
@output_options(CheckReport, files=True)
@click.pass_context
def check(ctx: click.Context, /, model: str, **options: Any) -> None:
    """Check that MODEL back-propagates healthy gradients: a smoke test for CI.

    One forward and one backward pass give the gradient of every trainable variable
    and layer output; each rule is then checked per gradient. Exit status: 0 all rules
    pass, 1 a rule failed, 2 the model or input could not be used. The table ends
    with a summary such as `FAIL  12 checks, 2 failed`; with another format or
    --output, that summary is the last line on stderr.

    \b
    Examples:
      gradinspect check model.keras --input batch.npy --max-norm 100 --format junit -o grads.xml
      gradinspect check model.keras --write-baseline grads.json
      gradinspect check model.keras --baseline grads.json --rtol 0.01
    """
    from gradinspect.cli.isolation import run_isolated
    from gradinspect.commands.check import baseline_json, read_baseline
    from gradinspect.commands.check import check as run_check

    data = data_values(options)
    baseline = options["baseline"]
    reads = files_read(model, options["custom_objects"], baseline, options["rules_file"], data=data)
    if baseline is not None:
        read_baseline(baseline)  # a missing or malformed baseline fails before any work
    force = options["force"]
    baseline_dest = checked_destination(options["write_baseline"], "--write-baseline", reads, force=force)
    dest = checked_destination(options["output"], "--output", reads, force=force)
    extras = ExtraOutputs.checked(options, reads)
    ensure_distinct([baseline_dest, dest, *extras.destinations()])
    rules = _rules(options, baseline)
    unsafe_notice(options["unsafe"])
    kwargs = {
        "model_or_path": model,
        "layers": split_list(options["layer_list"]),
        "rules": rules,
        "custom_objects": options["custom_objects"],
        "unsafe": options["unsafe"],
        **data,
    }
    quiet = options.get("quiet", False)
    report = run_isolated(run_check, kwargs, child_limits(options), model, label="batches", quiet=quiet)
    files = (
        (baseline_dest, baseline_json(report.grad) if baseline_dest else ""),
        *extras.rendered(report, report.grad),
    )
    emit(report, options["fmt"], dest, files)
    if options["fmt"] != "table" or dest is not None:  # the terminal table already ends with it
        click.echo(report.summary(), err=True)
    ctx.exit(0 if report.passed else 1)


@main.command()
@model_options
@click.option("--layer", required=True, metavar="LAYER", help="The layer whose gradients are verified.")
@data_options(training=False, batches=False)
@click.option(
    "--entries", type=click.IntRange(min=1), default=10, show_default=True, help="Entries checked per variable."
)
@click.option(
    "--eps",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-6,
    show_default=True,
    help="Finite-difference step (float64).",
)
@click.option(
    "--tol", type=_NON_NEGATIVE, default=1e-6, show_default=True, help="Allowed max |tape - fd| / max(1, |fd|)."
)
@output_options(VerifyReport)
@click.pass_context
def verify(ctx: click.Context, /, model: str, layer: str, **options: Any) -> None:
    """Verify LAYER's gradients against central finite differences (like torch.autograd.gradcheck).

    The model is rebuilt in float64 (float32 differences are only good to ~1e-4); the
    tape gradient of the layer's output and variables is compared with (f(w+eps) -
    f(w-eps)) / 2eps at --entries entries each. Exit status 1 when an error exceeds
    --tol: how a custom layer with a wrong gradient shows itself.

    \b
    Example:
      gradinspect verify model.keras --layer my_layer --custom-objects layers.py
    """
    from gradinspect.cli.isolation import run_isolated
    from gradinspect.commands.verify import verify as run_verify

    data = data_values(options)
    reads = files_read(model, options["custom_objects"], data=data)
    dest = checked_destination(options["output"], "--output", reads, force=options["force"])
    unsafe_notice(options["unsafe"])
    kwargs = {
        "model_or_path": model,
        "layer": layer,
        "entries": options["entries"],
        "eps": options["eps"],
        "tol": options["tol"],
        "custom_objects": options["custom_objects"],
        "unsafe": options["unsafe"],
        **data,
    }
    report = run_isolated(run_verify, kwargs, child_limits(options), model, label="finite differences")
    emit(report, options["fmt"], dest)
    click.echo(report.summary(), err=True)
    ctx.exit(0 if report.passed else 1)
