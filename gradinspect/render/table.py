"""Terminal tables drawn with rich. Names from the model are wrapped in Text, never parsed as markup."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gradinspect.formatting import count, number, shape, summed_over
from gradinspect.render.options import RenderOptions
from gradinspect.render.text import display_name
from gradinspect.report import CheckReport, GradReport, LayersReport, VerifyReport


def _drawn(draw: Callable[[Console, Any], None], report: Any, options: RenderOptions) -> str:
    """Run ``draw`` on a console that writes to a string: colour only when asked, a fixed width."""
    buf = io.StringIO()
    console = Console(
        file=buf,
        force_terminal=options.color,
        no_color=not options.color,
        width=options.width or 160,
        highlight=False,
        soft_wrap=False,
    )
    draw(console, report)
    return buf.getvalue()


def layers(report: LayersReport, options: RenderOptions) -> str:
    return _drawn(_layers, report, options)


def grad(report: GradReport, options: RenderOptions) -> str:
    return _drawn(_grad, report, options)


def check(report: CheckReport, options: RenderOptions) -> str:
    return _drawn(_check, report, options)


def verify(report: VerifyReport, options: RenderOptions) -> str:
    return _drawn(_verify, report, options)


# A gradient norm outside this band is flagged as vanishing or exploding.
VANISHING = 1e-7
EXPLODING = 1e3


def _num(value: float | None, style_bad: bool = False) -> Text:
    if value is None:
        return Text("—", style="dim")
    return Text(number(value), style="bold red" if style_bad else "")


def _norm_cell(stats) -> Text:
    if stats is None or stats.norm is None:
        return Text("—", style="dim")
    bad = stats.norm < VANISHING or stats.norm > EXPLODING
    return _num(stats.norm, bad)


_DASHES = tuple(Text("—", style="dim") for _ in range(8))


def _grad(console: Console, report) -> None:
    m = report.model
    mode = "training" if report.training else "inference"
    console.print(
        Text.assemble(
            Text(m.path, style="bold"),
            f"  loss {report.loss_spec} = {report.loss_value:.6g}  ·  input {report.input_source}, "
            + report.batches_text
            + f"  ·  {mode} mode",
        )
    )
    for note in report.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    for pair in report.pairs:
        console.print(_outputs_table(pair))
        console.print(_weights_table(pair))
        if pair.stage2 is not None:
            _stage2(console, pair)


def _outputs_table(pair: Any) -> Table:
    outs = Table(title=Text(f"Output gradients ({pair.from_layer} → {pair.to_layer})"), title_justify="left")
    for col in ("Layer", "Call", "Shape"):
        outs.add_column(col)
    for col in ("L2 norm", "Mean", "Std", "Min", "Max", "Mean |g|", "Zero frac", "NaN/Inf"):
        outs.add_column(col, justify="right")
    notes = any(o.stats is None for o in pair.outputs)
    if notes:
        outs.add_column("Note", style="yellow", max_width=48)
    for o in pair.outputs:
        name = o.layer + (f".{o.tensor}" if o.tensors > 1 else "")
        if o.stats is None:
            outs.add_row(Text(name), str(o.call), Text(shape(o.shape)), *_DASHES[:8], Text(o.missing or ""))
            continue
        s = o.stats
        outs.add_row(
            Text(name),
            str(o.call),
            Text(shape(o.shape)),
            _norm_cell(s),
            _num(s.mean),
            _num(s.std),
            _num(s.min),
            _num(s.max),
            _num(s.abs_mean),
            _num(s.zero_fraction),
            Text(str(s.nonfinite), style="bold red" if s.nonfinite else ""),
        )
    return outs


def _weights_table(pair: Any) -> Table:
    ws = Table(title=Text(f"Weight gradients ({pair.from_layer} → {pair.to_layer})"), title_justify="left")
    for col in ("Layer", "Variable", "Shape"):
        ws.add_column(col)
    for col in ("Grad norm", "Weight norm", "Ratio", "Mean", "Std", "Max |g|", "Zero frac", "NaN/Inf"):
        ws.add_column(col, justify="right")
    noise = any(w.noise is not None for w in pair.weights)
    if noise:
        ws.add_column("Noise B", justify="right")
        ws.add_column("SNR", justify="right")
    if any(w.stats is None for w in pair.weights):
        ws.add_column("Note", style="yellow", max_width=48)
    for w in pair.weights:
        if w.stats is None:
            ws.add_row(
                Text(w.layer),
                Text(w.variable),
                Text(shape(w.shape)),
                _DASHES[0],
                _num(w.weight_norm),
                *_DASHES[:6],
                *(_DASHES[:2] if noise else ()),
                Text(w.missing or ""),
            )
            continue
        s = w.stats
        ws.add_row(
            Text(w.layer),
            Text(w.variable),
            Text(shape(w.shape)),
            _norm_cell(s),
            _num(w.weight_norm),
            _num(w.ratio),
            _num(s.mean),
            _num(s.std),
            _num(s.abs_max),
            _num(s.zero_fraction),
            Text(str(s.nonfinite), style="bold red" if s.nonfinite else ""),
            *(_noise_cells(w.noise) if noise else ()),
        )
    if not pair.weights:
        ws.add_row(Text("(no trainable variables in these layers)", style="dim"))
    return ws


def _noise_cells(noise: Any) -> tuple[Text, Text]:
    if noise is None or noise.b_simple is None:
        return _DASHES[0], _DASHES[0]
    return _num(noise.b_simple), _num(noise.snr)


def _stage2(console: Console, pair) -> None:
    st = pair.stage2
    g = st.grad_stats
    mode = "--through: differentiated through g (double backprop)" if st.through else "g held constant (no --through)"
    mode += summed_over(st.batches)
    console.print(
        Text(
            f"stage 1: {st.stage1_expr} = {st.stage1_value:.6g}   g = d stage1/d act({pair.from_layer}): "
            f"shape {shape(st.grad_shape)}, norm {number(g.norm)}, mean {number(g.mean)}, max |g| {number(g.abs_max)}"
        )
    )
    console.print(Text(f"stage 2: {st.expr} = {st.value:.6g}   ({mode})"))
    table = Table(title=Text(f"Second-stage gradients ({pair.from_layer} → {pair.to_layer})"), title_justify="left")
    for col in ("Layer", "Variable", "Shape"):
        table.add_column(col)
    for col in ("Grad norm", "Mean", "Std", "Max |g|", "Zero frac", "NaN/Inf", "Plain norm", "Cosine", "Norm ratio"):
        table.add_column(col, justify="right")
    if any(w.stats is None for w in st.weights):
        table.add_column("Note", style="yellow", max_width=40)
    for w in st.weights:
        s = w.stats
        if s is None:
            table.add_row(
                Text(w.layer),
                Text(w.variable),
                Text(shape(w.shape)),
                *_DASHES[:6],
                _num(w.plain_norm),
                _DASHES[0],
                _DASHES[0],
                Text(w.missing or ""),
            )
            continue
        table.add_row(
            Text(w.layer),
            Text(w.variable),
            Text(shape(w.shape)),
            _norm_cell(s),
            _num(s.mean),
            _num(s.std),
            _num(s.abs_max),
            _num(s.zero_fraction),
            Text(str(s.nonfinite), style="bold red" if s.nonfinite else ""),
            _num(w.plain_norm),
            _num(w.cosine),
            _num(w.norm_ratio),
        )
    console.print(table)


def _layers(console: Console, report: Any) -> None:
    m = report.model
    title = Text.assemble(Text(m.path, style="bold"), f"  ({m.format}")
    if m.loader:
        title.append(f", {m.loader}")
    title.append(")")
    console.print(title)
    if m.inputs:
        inputs = ", ".join(f"{i.name} {shape(i.shape)} {i.dtype or ''}".rstrip() for i in m.inputs)
        console.print(Text(f"inputs: {inputs}"))
    if report.signatures:
        sigs = Table(title="Signatures", title_justify="left", show_lines=False)
        for col in ("Signature", "Inputs", "Outputs"):
            sigs.add_column(col)
        for sig in report.signatures:
            sigs.add_row(
                Text(sig.key),
                Text("\n".join(f"{i.name}: {shape(i.shape)} {i.dtype}" for i in sig.inputs)),
                Text("\n".join(f"{o.name}: {shape(o.shape)} {o.dtype}" for o in sig.outputs)),
            )
        console.print(sigs)
    graph = report.source == "graph"
    title = "Variables by name scope" if report.signatures or _scoped(report) else "Layers"
    if graph:
        title = f"Layers recovered from the graph of signature {report.graph_signature!r}"
    table = Table(title=Text(title), title_justify="left")
    table.add_column("Layer")
    table.add_column("Main ops" if graph else "Class")
    table.add_column("Output shape")
    table.add_column("Params", justify="right")
    table.add_column("Trainable", justify="center")
    notes = any(row.note for row in report.layers)
    if notes:
        table.add_column("Note", style="yellow", max_width=50)
    for row in report.layers:
        style = "bold" if row.is_container else ""
        table.add_row(
            Text(display_name(row), style=style),
            Text(row.class_name),
            Text(f"{shape(row.output_shape)} {row.dtype}" if row.dtype else shape(row.output_shape)),
            count(row.params),
            "yes" if row.trainable else Text("no", style="yellow"),
            *([Text(row.note or "")] if notes else []),
        )
        for var in row.variables:
            table.add_row(
                Text(f"   · {var.name}", style="dim"),
                Text(var.dtype or "", style="dim"),
                Text(shape(var.shape), style="dim"),
                count(_size(var.shape)),
                "yes" if var.trainable else "no",
            )
    console.print(table)
    console.print(
        f"Total params: {count(report.total_params)}   "
        f"Trainable: {count(report.trainable_params)}   "
        f"Non-trainable: {count(report.non_trainable_params)}"
    )


def _scoped(report: Any) -> bool:
    return any(row.variables for row in report.layers)


def _size(dims: tuple) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _check(console: Console, report) -> None:
    g = report.grad
    console.print(
        Text.assemble(
            Text(g.model.path, style="bold"),
            f"  loss {g.loss_spec} = {g.loss_value:.6g}  ·  input {g.input_source}, {g.batches_text}",
        )
    )
    for note in g.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    rules = Table(title="Rules", title_justify="left")
    rules.add_column("Rule")
    rules.add_column("Checks", justify="right")
    rules.add_column("Failed", justify="right")
    counts: dict[str, list[int]] = {}
    for r in report.results:
        c = counts.setdefault(r.rule, [0, 0])
        c[0] += 1
        c[1] += 0 if r.passed else 1
    for rule, (n, failed) in counts.items():
        rules.add_row(Text(rule), str(n), Text(str(failed), style="bold red" if failed else "green"))
    console.print(rules)
    if report.failures:
        table = Table(title="Failed checks", title_justify="left")
        for col in ("Rule", "Gradient", "Value", "Limit", "Why"):
            table.add_column(col, justify="right" if col in ("Value", "Limit") else "left")
        for r in report.failures:
            table.add_row(
                Text(r.rule, style="bold red"), Text(r.target), _num(r.value), _num(r.threshold), Text(r.message)
            )
        console.print(table)
    status = Text("PASS", style="bold green") if report.passed else Text("FAIL", style="bold red")
    console.print(Text.assemble(status, f"  {report.summary()}"))


_STATUS_STYLE = {"ok": "green", "FAIL": "bold red", "kink": "yellow", "unresolved": "yellow"}


def _verify(console: Console, report) -> None:
    console.print(
        Text.assemble(
            Text(report.model.path, style="bold"),
            f"  layer {report.layer}  ·  loss {report.loss_spec}  ·  input {report.input_source}, "
            f"batch {report.batch_size}  ·  float64 copy, eps {report.eps:g}, tol {report.tol:g}",
        )
    )
    table = Table(title="Tape gradient vs central finite differences", title_justify="left")
    table.add_column("Gradient")
    table.add_column("Shape")
    for col in ("Checked", "Max abs error", "Max rel error", "Error", "Status"):
        table.add_column(col, justify="right")
    for e in report.entries:
        table.add_row(
            Text(e.target),
            Text(shape(e.shape)),
            str(e.checked),
            f"{e.max_abs_error:.3g}",
            f"{e.max_rel_error:.3g}",
            _num(e.max_error, not e.passed),
            Text(e.status, style=_STATUS_STYLE.get(e.status, "")),
        )
    console.print(table)
    details = [(e.target, d) for e in report.entries for d in e.details]
    if details:
        console.print(_details_table(details))
    if report.verdict:
        console.print(Text(report.verdict, style="bold red"))
    status = Text("PASS", style="bold green") if report.passed else Text("FAIL", style="bold red")
    console.print(Text.assemble(status, f"  {report.summary()}"))


def _details_table(details: list) -> Table:
    """Each entry off the central difference: a failure, or a kink (the one-sided differences disagree)."""
    table = Table(title="Entries off the central difference", title_justify="left")
    for col in ("Gradient", "Index", "Kind"):
        table.add_column(col)
    for col in ("Tape", "Central", "Forward", "Backward"):
        table.add_column(col, justify="right")
    for target, d in details:
        kind = Text(d.kind, style=_STATUS_STYLE.get(d.kind, ""))
        values = (number(v) for v in (d.tape, d.central, d.forward, d.backward))
        table.add_row(Text(target), Text(str(d.index)), kind, *values)
    return table
