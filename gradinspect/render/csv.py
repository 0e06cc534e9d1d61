"""CSV: one row per layer (per variable for SavedModels without Keras metadata)."""

from __future__ import annotations

import csv
import io
from typing import Any

from gradinspect.render.text import shape


def render(report: Any) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
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
