"""Terminal tables drawn with rich. Names from the model are wrapped in Text, never parsed as markup."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gradinspect.render.text import count, display_name, shape


def render(report: Any, *, color: bool = False, width: int | None = None) -> str:
    buf = io.StringIO()
    console = Console(
        file=buf,
        force_terminal=color,
        no_color=not color,
        width=width or 160,
        highlight=False,
        soft_wrap=False,
    )
    _layers(console, report)
    return buf.getvalue()


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
    table = Table(
        title="Variables by name scope" if report.signatures or _scoped(report) else "Layers", title_justify="left"
    )
    table.add_column("Layer")
    table.add_column("Class")
    table.add_column("Output shape")
    table.add_column("Params", justify="right")
    table.add_column("Trainable", justify="center")
    for row in report.layers:
        style = "bold" if row.is_container else ""
        table.add_row(
            Text(display_name(row), style=style),
            Text(row.class_name),
            Text(shape(row.output_shape)),
            count(row.params),
            "yes" if row.trainable else Text("no", style="yellow"),
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
