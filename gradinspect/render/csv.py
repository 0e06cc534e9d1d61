"""CSV: one row per layer (per variable for SavedModels without Keras metadata)."""

from __future__ import annotations

import csv
import io
from typing import Any

from gradinspect.render.text import shape

STAT_KEYS = ("norm", "mean", "std", "min", "max", "abs_mean", "abs_max", "zero_fraction", "nonfinite")


def render(report: Any) -> str:
    from gradinspect.report import GradReport

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if isinstance(report, GradReport):
        writer.writerow(
            ["pair", "kind", "layer", "call", "tensor", "variable", "shape", *STAT_KEYS, "weight_norm", "missing"]
        )
        for pair in report.pairs:
            tag = f"{pair.from_layer}:{pair.to_layer}"
            for o in pair.outputs:
                stats = o.stats.to_dict() if o.stats else {}
                writer.writerow(
                    [
                        tag,
                        "output",
                        o.layer,
                        o.call,
                        o.tensor,
                        "",
                        shape(o.shape),
                        *(stats.get(k, "") for k in STAT_KEYS),
                        "",
                        o.missing or "",
                    ]
                )
            for w in pair.weights:
                stats = w.stats.to_dict() if w.stats else {}
                writer.writerow(
                    [
                        tag,
                        "weight",
                        w.layer,
                        "",
                        "",
                        w.variable,
                        shape(w.shape),
                        *(stats.get(k, "") for k in STAT_KEYS),
                        w.weight_norm,
                        w.missing or "",
                    ]
                )
        return buf.getvalue()
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
