"""Markdown: a GitHub-flavoured table plus a totals line, fit for a pull-request comment."""

from __future__ import annotations

import re
from typing import Any

from gradinspect.formatting import count, number, shape, summed_over
from gradinspect.render.safetext import markdown_text
from gradinspect.render.settings import RenderOptions
from gradinspect.report import CheckReport, GradReport, LayersReport
from gradinspect.report.flow import FlowReport


def _cell(text: str) -> str:
    """Model-supplied text shown literally in a table cell or line: no HTML, links or emphasis."""
    return markdown_text(text)


def _code(text: str) -> str:
    """A code span holding ``text`` literally: fenced past any backticks inside, pipes escaped for tables."""
    text = text.replace("\n", " ").replace("\r", " ").replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _render_grad(report: Any) -> str:
    mode = "training" if report.training else "inference"
    lines = [
        f"### Gradients of {_code(report.model.path)}",
        "",
        f"loss {_code(report.loss_spec)} = {report.loss_value:.6g} · input {_cell(report.input_source)}, "
        f"{report.batches_text} · {mode} mode",
        "",
    ]
    for pair in report.pairs:
        lines += [
            f"#### {_cell(pair.from_layer)} → {_cell(pair.to_layer)}",
            "",
            "| Output | Call | Shape | L2 norm | Mean | Std | Min | Max | Mean \\|g\\| | Zero frac | NaN/Inf |",
            "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for o in pair.outputs:
            s = o.stats
            if s is None:
                lines.append(f"| {_cell(o.layer)} | {o.call} | {shape(o.shape)} | {_cell(o.missing or '')} |||||||")
                continue
            values = (s.norm, s.mean, s.std, s.min, s.max, s.abs_mean, s.zero_fraction)
            cells = " | ".join(number(v) for v in values)
            lines.append(f"| {_cell(o.layer)} | {o.call} | {shape(o.shape)} | {cells} | {s.nonfinite} |")
        lines += [
            "",
            "| Weight | Variable | Shape | Grad norm | Weight norm | Ratio | Max \\|g\\| | NaN/Inf |",
            "|---|---|---|--:|--:|--:|--:|--:|",
        ]
        for w in pair.weights:
            s = w.stats
            if s is None:
                lines.append(
                    f"| {_cell(w.layer)} | {_cell(w.variable)} | {shape(w.shape)} | {_cell(w.missing or '')} ||||"
                )
                continue
            lines.append(
                f"| {_cell(w.layer)} | {_cell(w.variable)} | {shape(w.shape)} | {number(s.norm)} | "
                f"{number(w.weight_norm)} | {number(w.ratio)} | {number(s.abs_max)} | {s.nonfinite} |"
            )
        if pair.stage2 is not None:
            lines += _stage2(pair.stage2)
        lines.append("")
    return "\n".join(lines)


def _stage2(st: Any) -> list[str]:
    mode = ("differentiated through g" if st.through else "g held constant") + summed_over(st.batches)
    lines = [
        "",
        f"Stage 1 {_code(st.stage1_expr)} = {st.stage1_value:.6g}; g: shape {shape(st.grad_shape)}, "
        f"norm {number(st.grad_stats.norm)}. Stage 2 {_code(st.expr)} = {st.value:.6g} ({mode}).",
        "",
        "| Stage-2 weight | Variable | Shape | Grad norm | Plain norm | Cosine | Norm ratio |",
        "|---|---|---|--:|--:|--:|--:|",
    ]
    for w in st.weights:
        norm = number(w.stats.norm) if w.stats else _cell(w.missing or "—")
        lines.append(
            f"| {_cell(w.layer)} | {_cell(w.variable)} | {shape(w.shape)} | {norm} | {number(w.plain_norm)} | "
            f"{number(w.cosine)} | {number(w.norm_ratio)} |"
        )
    return lines


def _render_check(report: Any) -> str:
    g = report.grad
    mark = "✅" if report.passed else "❌"
    lines = [
        f"### {mark} gradinspect check {_code(g.model.path)}: {report.summary()}",
        "",
        f"loss {_code(g.loss_spec)} = {g.loss_value:.6g} · input {_cell(g.input_source)}, {g.batches_text}",
        "",
        *(f"> note: {_cell(n)}\n" for n in g.notes),
        "| Rule | Checks | Failed |",
        "|---|--:|--:|",
    ]
    counts: dict[str, list[int]] = {}
    for r in report.results:
        c = counts.setdefault(r.rule, [0, 0])
        c[0] += 1
        c[1] += 0 if r.passed else 1
    lines += [f"| {rule} | {n} | {failed} |" for rule, (n, failed) in counts.items()]
    if report.failures:
        lines += ["", "| Failed rule | Gradient | Why |", "|---|---|---|"]
        lines += [f"| {r.rule} | {_code(r.target)} | {_cell(r.message)} |" for r in report.failures]
    lines.append("")
    return "\n".join(lines)


def grad(report: GradReport, options: RenderOptions) -> str:
    return _render_grad(report)


def check(report: CheckReport, options: RenderOptions) -> str:
    return _render_check(report)


def layers(report: LayersReport, options: RenderOptions) -> str:
    m = report.model
    lines = [f"### Layers of {_code(m.path)} ({m.format})", ""]
    for sig in report.signatures:
        args = ", ".join(f"{i.name}: {shape(i.shape)} {i.dtype}" for i in sig.inputs)
        lines.append(f"- signature {_code(sig.key)}({_cell(args)})")
    if report.signatures:
        lines.append("")
    graph = report.source == "graph"
    if graph:
        lines += [f"Layers recovered from the graph of signature {_code(report.graph_signature or '')}.", ""]
    notes = any(row.note for row in report.layers)
    kind = "Main ops" if graph else "Class"
    lines += [
        f"| Layer | {kind} | Output shape | Params | Trainable |" + (" Note |" if notes else ""),
        "|---|---|---|--:|:-:|" + ("---|" if notes else ""),
    ]
    for row in report.layers:
        name = "&nbsp;&nbsp;" * row.depth + _cell(row.name)
        lines.append(
            f"| {name} | {_cell(row.class_name)} | {_cell(shape(row.output_shape))} | "
            f"{count(row.params)} | {'yes' if row.trainable else 'no'} |"
            + (f" {_cell(row.note or '')} |" if notes else "")
        )
    lines += [
        "",
        f"Total params: {count(report.total_params)} · trainable: {count(report.trainable_params)} · "
        f"non-trainable: {count(report.non_trainable_params)}",
        "",
    ]
    return "\n".join(lines)


def flow(report: FlowReport, options: RenderOptions) -> str:
    g = report.grad
    lines = [
        f"### Gradient flow of {_code(g.model.path)}",
        "",
        f"Loss {_code(g.loss_spec)} = {g.loss_value:.6g}; weight-gradient norm vanishing below "
        f"{report.vanishing:g}, exploding above {report.exploding:g}.",
        "",
        "| Layer | Params | Grad norm | Mean \\|g\\| | Max \\|g\\| | Spread | Status |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for r in report.rows:
        lines.append(
            f"| {_cell(r.layer)} | {count(r.params)} | {number(r.grad_norm)} | {number(r.mean_abs)} | "
            f"{number(r.max_abs)} | {number(r.spread)} | {r.status} |"
        )
    return "\n".join([*lines, ""])
