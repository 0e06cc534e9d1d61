"""CSV: one row per layer (per variable for SavedModels without Keras metadata)."""

from __future__ import annotations

import csv
import io
from typing import Any

from gradinspect.formatting import shape
from gradinspect.render.safetext import csv_text
from gradinspect.render.settings import RenderOptions
from gradinspect.report import GradReport, LayersReport
from gradinspect.report.flow import FlowReport

STAT_KEYS = ("norm", "mean", "std", "min", "max", "abs_mean", "abs_max", "zero_fraction", "nonfinite")


GRAD_COLUMNS = (
    "pair",
    "kind",
    "layer",
    "call",
    "tensor",
    "variable",
    "shape",
    *STAT_KEYS,
    "weight_norm",
    "missing",
    "plain_norm",
    "cosine",
    "norm_ratio",
)


def _row(tag: str, kind: str, entry: Any, **extra: Any) -> list[Any]:
    """One CSV row: the pair, the kind of entry, its statistics; ``extra`` fills the columns only some kinds have."""
    values = entry.stats.to_dict() if entry.stats else {}
    return [
        tag,
        kind,
        entry.layer,
        extra.get("call", ""),
        extra.get("tensor", ""),
        extra.get("variable", ""),
        shape(entry.shape),
        *(values.get(k, "") for k in STAT_KEYS),
        extra.get("weight_norm", ""),
        entry.missing or "",
        _blank(extra.get("plain")),
        _blank(extra.get("cosine")),
        _blank(extra.get("ratio")),
    ]


class _SafeWriter:
    """Every text cell neutralised against spreadsheet formulas; numbers pass as they are."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def writerow(self, row: Any) -> None:
        self._writer.writerow([csv_text(c) if isinstance(c, str) else c for c in row])


def _blank(value: Any) -> Any:
    return "" if value is None else value


def grad(report: GradReport, options: RenderOptions) -> str:
    buf = io.StringIO()
    writer = _SafeWriter(csv.writer(buf, lineterminator="\n"))
    writer.writerow(GRAD_COLUMNS)
    for pair in report.pairs:
        tag = f"{pair.from_layer}:{pair.to_layer}"
        for o in pair.outputs:
            writer.writerow(_row(tag, "output", o, call=o.call, tensor=o.tensor))
        for w in pair.weights:
            writer.writerow(_row(tag, "weight", w, variable=w.variable, weight_norm=w.weight_norm))
        for s2 in pair.stage2.weights if pair.stage2 is not None else ():
            extra = {"variable": s2.variable, "plain": s2.plain_norm, "cosine": s2.cosine, "ratio": s2.norm_ratio}
            writer.writerow(_row(tag, "stage2", s2, **extra))
    return buf.getvalue()


def layers(report: LayersReport, options: RenderOptions) -> str:
    buf = io.StringIO()
    writer = _SafeWriter(csv.writer(buf, lineterminator="\n"))
    writer.writerow(["name", "class", "output_shape", "params", "trainable_params", "trainable", "depth"])
    for row in report.layers:
        writer.writerow(
            [
                row.name,
                row.class_name,
                shape(row.output_shape),
                row.params,
                row.trainable_params,
                row.trainable,
                row.depth,
            ]
        )
    return buf.getvalue()


FLOW_COLUMNS = [
    "layer", "params", "grad_norm", "mean_abs", "max_abs",
    "zero_fraction", "nonfinite", "weight_norm", "spread", "status",
]  # fmt: skip


def flow(report: FlowReport, options: RenderOptions) -> str:
    buf = io.StringIO()
    writer = _SafeWriter(csv.writer(buf, lineterminator="\n"))
    writer.writerow(FLOW_COLUMNS)
    for row in report.rows:
        writer.writerow([getattr(row, column) for column in FLOW_COLUMNS])
    return buf.getvalue()
