"""Markdown: a GitHub-flavoured table plus a totals line, fit for a pull-request comment."""

from __future__ import annotations

from typing import Any

from gradinspect.render.text import count, shape


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render(report: Any) -> str:
    m = report.model
    lines = [f"### Layers of `{_cell(m.path)}` ({m.format})", ""]
    for sig in report.signatures:
        args = ", ".join(f"{i.name}: {shape(i.shape)} {i.dtype}" for i in sig.inputs)
        lines.append(f"- signature `{_cell(sig.key)}`({_cell(args)})")
    if report.signatures:
        lines.append("")
    lines += ["| Layer | Class | Output shape | Params | Trainable |", "|---|---|---|--:|:-:|"]
    for row in report.layers:
        name = "&nbsp;&nbsp;" * row.depth + _cell(row.name)
        lines.append(
            f"| {name} | {_cell(row.class_name)} | {_cell(shape(row.output_shape))} | "
            f"{count(row.params)} | {'yes' if row.trainable else 'no'} |"
        )
    lines += [
        "",
        f"Total params: {count(report.total_params)} · trainable: {count(report.trainable_params)} · "
        f"non-trainable: {count(report.non_trainable_params)}",
        "",
    ]
    return "\n".join(lines)
