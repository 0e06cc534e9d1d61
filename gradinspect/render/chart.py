"""The terminal picture of gradient flow: one row per layer with weights, a bar on a log scale.

Each row: the layer's name (ellipsized in the middle, keeping the end, where it is long), a bar
on a log scale spanning the model's smallest mean |g| to its largest norm (whole decades): solid
up to the layer's mean |g|, shaded on to its weight-gradient norm; then the norm, mean |g| and,
over several batches, the relative spread of the per-batch gradients. Bars are coloured where the
norm vanishes or explodes or the gradient holds NaN/Inf. Fits the given width (80 columns at least).
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.text import Text

from gradinspect.formatting import number
from gradinspect.render.settings import RenderOptions
from gradinspect.render.table import drawn
from gradinspect.report.flow import FlowReport, FlowRow

_STYLE = {"vanishing": "yellow", "exploding": "bold red", "non-finite": "bold magenta", "no gradient": "dim"}
_NAME = 22
_NUMBERS = 30  # "  1.234e-05  |g| 1.234e-07  ±0.12"
_WIDEST = 100  # a wider terminal gets longer bars up to this width, no further


def flow(report: FlowReport, options: RenderOptions) -> str:
    return drawn(_flow, report, options)


def middle_ellipsis(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters: its start, "…", and its end (the end says most)."""
    if len(name) <= width:
        return name
    tail = (width - 1) * 2 // 3
    return name[: width - 1 - tail] + "…" + name[len(name) - tail :]


def _flow(console: Console, report: FlowReport) -> None:
    g = report.grad
    batches = f"{g.batches} batches of {g.batch_size}" if g.batches else f"batch {g.batch_size}"
    console.print(Text(f"{g.model.path}  loss {g.loss_spec} = {g.loss_value:.6g}  ·  {batches}"))
    rows = report.rows
    if not rows:
        console.print(Text("(no layer with trainable weights)"))
        return
    low, high = _decades([v for r in rows for v in (r.grad_norm, r.mean_abs)])
    width = max(10, min(console.width, _WIDEST) - _NAME - _NUMBERS - 3)
    scale = f"{'█ mean |g|  ░ norm':>{_NAME}} 10^{low} {'·' * max(0, width - 10)} 10^{high}"
    console.print(Text(scale, style="dim"))
    for row in rows:
        console.print(_line(row, low, high, width))
    flagged = [r for r in rows if r.status != "ok"]
    console.print(
        Text(
            f"{len(rows)} layers; vanishing below {report.vanishing:g}, exploding above {report.exploding:g}"
            + (f"; flagged: {', '.join(f'{r.layer} ({r.status})' for r in flagged)}" if flagged else "")
        )
    )


def _decades(norms: list[float | None]) -> tuple[int, int]:
    finite = [n for n in norms if n is not None and n > 0 and math.isfinite(n)]
    if not finite:
        return -8, 0
    low, high = math.floor(math.log10(min(finite))), math.ceil(math.log10(max(finite)))
    return low, max(high, low + 1)


def _line(row: FlowRow, low: int, high: int, width: int) -> Text:
    line = Text(f"{middle_ellipsis(row.layer, _NAME):>{_NAME}} ")
    style = _STYLE.get(row.status, "green")
    mean = _cells(row.mean_abs, low, high, width)
    line.append("█" * mean, style=style)
    line.append("░" * max(0, _cells(row.grad_norm, low, high, width) - mean), style=style)
    line.append(" " * (width - max(mean, _cells(row.grad_norm, low, high, width))))
    numbers = f" {number(row.grad_norm):>9}  |g| {number(row.mean_abs):>9}"
    if row.spread is not None:
        numbers += f"  ±{row.spread:.2g}"
    line.append(numbers, style=style if row.status != "ok" else "")
    return line


def _cells(value: float | None, low: int, high: int, width: int) -> int:
    """How many of ``width`` cells a log-scale bar from 10^low to ``value`` fills (10^high: all)."""
    if value is None or not math.isfinite(value) or value <= 0:
        return 0
    fraction = (math.log10(value) - low) / (high - low)
    return max(1, round(min(max(fraction, 0.0), 1.0) * width))
