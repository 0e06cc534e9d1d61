"""The `grad` tables' columns and cells (output and weight gradients of a pair), ranked by how much
a reader needs them, for :func:`gradinspect.render.fit.fit_table`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from rich.text import Text

from gradinspect.formatting import number, shape
from gradinspect.render.fit import Column
from gradinspect.report.flow import EXPLODING, VANISHING

_DASH = Text("—", style="dim")
_NOTE = Column("Note", 90, "left", text=True, style="yellow", max_width=48)  # why a gradient is missing


def num(value: float | None, bad: bool = False) -> Text:
    if value is None:
        return Text("—", style="dim")
    return Text(number(value), style="bold red" if bad else "")


def norm_cell(stats: Any) -> Text:
    if stats is None or stats.norm is None:
        return Text("—", style="dim")
    return num(stats.norm, stats.norm < VANISHING or stats.norm > EXPLODING)


def _nonfinite(stats: Any) -> Text:
    return Text(str(stats.nonfinite), style="bold red" if stats.nonfinite else "")


OUTPUT_COLUMNS = [
    Column("Layer", 100, "left", text=True),
    Column("Call", 30, "left"),
    Column("Shape", 88, "left"),
    Column("L2 norm", 95),
    Column("Mean", 40),
    Column("Std", 45),
    Column("Min", 35),
    Column("Max", 36),
    Column("Mean |g|", 80),
    Column("Zero frac", 60),
    Column("NaN/Inf", 85),
]


_HIST = Column("log10 |g|", 20, "left")  # the first to go in a narrow terminal
_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Any, bins: int = 10) -> str:
    """The histogram of log10 |g| over the finite non-zero entries, as unicode blocks, between the
    decades that hold its smallest and largest |g|."""
    if values is None:
        return "—"
    flat = np.abs(np.asarray(values, dtype=np.float64).ravel())
    flat = flat[np.isfinite(flat) & (flat > 0)]
    if not flat.size:
        return "—"
    logs = np.log10(flat)
    lo, hi = float(logs.min()), float(logs.max())
    counts, _ = np.histogram(logs, bins=bins, range=(lo, hi if hi > lo else lo + 1))
    top = counts.max()
    blocks = "".join(" " if c == 0 else _BLOCKS[min(7, int(c * 8 / (top + 1)))] for c in counts)
    return f"1e{math.floor(lo)} {blocks} 1e{math.ceil(hi) if hi > lo else math.floor(lo) + 1}"


# --activations: the recorded outputs' own values.
ACTIVATION_COLUMNS = [Column("Act mean", 38), Column("Act std", 37), Column("Act zeros", 58), Column("Saturated", 57)]


def outputs_table(pair: Any, arrays: dict[str, Any] | None = None) -> tuple[str, list[Column], list[list[Any]]]:
    notes = any(o.stats is None for o in pair.outputs)
    acts = any(o.activation is not None for o in pair.outputs)
    rows = []
    for o in pair.outputs:
        name = o.layer + (f".{o.tensor}" if o.tensors > 1 else "")
        head = [Text(name), str(o.call), Text(shape(o.shape))]
        a = o.activation
        values = [num(a.mean), num(a.std), num(a.zero_fraction), num(a.saturated_fraction)] if a else [_DASH] * 4
        tail = values if acts else []
        if o.stats is None:
            rows.append([*head, *[_DASH] * 8, *tail, Text(o.missing or "")])
            continue
        s = o.stats
        cells = [norm_cell(s), num(s.mean), num(s.std), num(s.min), num(s.max), num(s.abs_mean)]
        rows.append([*head, *cells, num(s.zero_fraction), _nonfinite(s), *tail, *([Text("")] if notes else [])])
    columns = OUTPUT_COLUMNS + (ACTIVATION_COLUMNS if acts else []) + ([_NOTE] if notes else [])
    if arrays is not None:
        columns = columns + [_HIST]
        for row, o in zip(rows, pair.outputs):
            row.append(Text(sparkline(arrays.get(o.key))))
    return f"Output gradients ({pair.from_layer} → {pair.to_layer})", columns, rows


WEIGHT_COLUMNS = [
    Column("Layer", 100, "left", text=True),
    Column("Variable", 98, "left", text=True),
    Column("Shape", 58, "left"),
    Column("Grad norm", 95),
    Column("Weight norm", 70),
    Column("Ratio", 75),
    Column("Mean", 40),
    Column("Std", 45),
    Column("Max |g|", 65),
    Column("Zero frac", 55),
    Column("NaN/Inf", 85),
]
NOISE_COLUMNS = [Column("Noise B", 50), Column("SNR", 52)]


def weights_table(pair: Any, arrays: dict[str, Any] | None = None) -> tuple[str, list[Column], list[list[Any]]]:
    noise = any(w.noise is not None for w in pair.weights)
    notes = any(w.stats is None for w in pair.weights)
    rows = []
    for w in pair.weights:
        head = [Text(w.layer), Text(w.variable), Text(shape(w.shape))]
        extra = [Text(w.missing or "")] if notes else []
        if w.stats is None:
            rows.append([*head, _DASH, num(w.weight_norm), *[_DASH] * 6, *([_DASH] * 2 if noise else []), *extra])
            continue
        s = w.stats
        cells = [norm_cell(s), num(w.weight_norm), num(w.ratio), num(s.mean), num(s.std), num(s.abs_max)]
        rows.append([*head, *cells, num(s.zero_fraction), _nonfinite(s), *(_noise(w.noise) if noise else []), *extra])
    columns = WEIGHT_COLUMNS + (NOISE_COLUMNS if noise else []) + ([_NOTE] if notes else [])
    if arrays is not None:
        columns = columns + [_HIST]
        for row, w in zip(rows, pair.weights):
            row.append(Text(sparkline(arrays.get(w.key))))
    if not pair.weights:
        rows.append([Text("(no trainable variables in these layers)", style="dim"), *[Text("")] * (len(columns) - 1)])
    return f"Weight gradients ({pair.from_layer} → {pair.to_layer})", columns, rows


def _noise(noise: Any) -> list[Text]:
    if noise is None or noise.b_simple is None:
        return [_DASH, _DASH]
    return [num(noise.b_simple), num(noise.snr)]
