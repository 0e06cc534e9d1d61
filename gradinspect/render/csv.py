"""CSV: one row per layer (per variable for SavedModels without Keras metadata)."""

from __future__ import annotations

import csv
import io
from typing import Any

from gradinspect.formatting import shape
from gradinspect.render.options import RenderOptions
from gradinspect.render.safetext import csv_text
from gradinspect.report import GradReport, LayersReport

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


def _row(tag, kind, layer, call, tensor, variable, dims, stats, missing, weight_norm="", plain="", cosine="", ratio=""):
    values = stats.to_dict() if stats else {}
    return [
        tag,
        kind,
        layer,
        call,
        tensor,
        variable,
        shape(dims),
        *(values.get(k, "") for k in STAT_KEYS),
        weight_norm,
        missing or "",
        _blank(plain),
        _blank(cosine),
        _blank(ratio),
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
            writer.writerow(_row(tag, "output", o.layer, o.call, o.tensor, "", o.shape, o.stats, o.missing))
        for w in pair.weights:
            writer.writerow(
                _row(tag, "weight", w.layer, "", "", w.variable, w.shape, w.stats, w.missing, w.weight_norm)
            )
        if pair.stage2 is not None:
            for w in pair.stage2.weights:
                writer.writerow(
                    _row(
                        tag,
                        "stage2",
                        w.layer,
                        "",
                        "",
                        w.variable,
                        w.shape,
                        w.stats,
                        w.missing,
                        "",
                        w.plain_norm,
                        w.cosine,
                        w.norm_ratio,
                    )
                )
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
