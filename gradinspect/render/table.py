"""Terminal tables drawn with rich. Names from the model are wrapped in Text, never parsed as markup."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gradinspect.formatting import count, number, shape, summed_over
from gradinspect.render.fit import Column, dropped_note, fit_table
from gradinspect.render.gradtables import norm_cell, num, outputs_table, weights_table
from gradinspect.render.settings import RenderOptions
from gradinspect.render.text import display_name
from gradinspect.report import CheckReport, GradReport, LayersReport, PairReport, VerifyReport


def drawn(draw: Callable[[Console, Any], None], report: Any, options: RenderOptions) -> str:
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
    return drawn(_layers, report, options)


def grad(report: GradReport, options: RenderOptions) -> str:
    return drawn(lambda console, r: _grad(console, r, options.hist), report, options)


def check(report: CheckReport, options: RenderOptions) -> str:
    return drawn(_check, report, options)


def verify(report: VerifyReport, options: RenderOptions) -> str:
    return drawn(_verify, report, options)


_DASHES = tuple(Text("—", style="dim") for _ in range(8))


def _grad(console: Console, report: GradReport, hist: bool = False) -> None:
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
        arrays = report.arrays if hist else None
        for title, columns, rows in (outputs_table(pair, arrays), weights_table(pair, arrays)):
            table, dropped = fit_table(title, columns, rows, console.width)
            console.print(table)
            if dropped:
                console.print(dropped_note(dropped, console.width))
        if pair.stage2 is not None:
            _stage2(console, pair)


def _stage2(console: Console, pair: PairReport) -> None:
    st = pair.stage2
    if st is None:
        return
    g = st.grad_stats
    mode = "--through: differentiated through g (double backprop)" if st.through else "g held constant (no --through)"
    mode += summed_over(st.batches)
    console.print(
        Text(
            f"stage 1: {st.stage1_expr} = {st.stage1_value:.6g}   g = d stage1/d act({pair.from_layer}): "
            f"shape {shape(st.grad_shape)}, norm {number(g.norm if g else None)}, "
            f"mean {number(g.mean if g else None)}, max |g| {number(g.abs_max if g else None)}"
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
                num(w.plain_norm),
                _DASHES[0],
                _DASHES[0],
                Text(w.missing or ""),
            )
            continue
        table.add_row(
            Text(w.layer),
            Text(w.variable),
            Text(shape(w.shape)),
            norm_cell(s),
            num(s.mean),
            num(s.std),
            num(s.abs_max),
            num(s.zero_fraction),
            Text(str(s.nonfinite), style="bold red" if s.nonfinite else ""),
            num(w.plain_norm),
            num(w.cosine),
            num(w.norm_ratio),
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
    heading = "Variables by name scope" if report.signatures or _scoped(report) else "Layers"
    if graph:
        heading = f"Layers recovered from the graph of signature {report.graph_signature!r}"
    table = Table(title=Text(heading), title_justify="left")
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


def _size(dims: tuple[Any, ...]) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _check(console: Console, report: CheckReport) -> None:
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
                Text(r.rule, style="bold red"), Text(r.target), num(r.value), num(r.threshold), Text(r.why or r.message)
            )
        console.print(table)
    status = Text("PASS", style="bold green") if report.passed else Text("FAIL", style="bold red")
    console.print(Text.assemble(status, f"  {report.summary()}"))


_STATUS_STYLE = {"ok": "green", "FAIL": "bold red", "kink": "yellow", "unresolved": "yellow"}


_VERIFY_COLUMNS = [
    Column("Gradient", 100, "left", text=True),
    Column("Shape", 40, "left"),
    Column("Checked", 50),
    Column("Max abs error", 60),
    Column("Max rel error", 55),
    Column("Error", 90),
    Column("Status", 95),
]


def _verify(console: Console, report: VerifyReport) -> None:
    console.print(
        Text.assemble(
            Text(report.model.path, style="bold"),
            f"  layer {report.layer}  ·  loss {report.loss_spec}  ·  input {report.input_source}, "
            f"batch {report.batch_size}  ·  float64 copy, eps {report.eps:g}, tol {report.tol:g}",
        )
    )
    rows = [
        [
            Text(e.target),
            Text(shape(e.shape)),
            str(e.checked),
            f"{e.max_abs_error:.3g}",
            f"{e.max_rel_error:.3g}",
            num(e.max_error, not e.passed),
            Text(e.status, style=_STATUS_STYLE.get(e.status, "")),
        ]
        for e in report.entries
    ]
    table, dropped = fit_table("Tape gradient vs central finite differences", _VERIFY_COLUMNS, rows, console.width)
    console.print(table)
    if dropped:
        console.print(dropped_note(dropped, console.width))
    details = [(e.target, d) for e in report.entries for d in e.details]
    if details:
        console.print(_details_table(details))
    if report.verdict:
        console.print(Text(report.verdict, style="bold red"))
    status = Text("PASS", style="bold green") if report.passed else Text("FAIL", style="bold red")
    console.print(Text.assemble(status, f"  {report.summary()}"))


def _details_table(details: list[Any]) -> Table:
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
