"""JSON: the report's ``to_dict()``, stable keys, two-space indent. NaN/Inf become ``null``."""

from __future__ import annotations

import json
import math
from typing import Any

from gradinspect.render.settings import RenderOptions


def any_report(report: Any, options: RenderOptions) -> str:
    """Every report type: its ``to_dict()`` (see gradinspect.jsonform)."""
    return json.dumps(_finite(report.to_dict()), indent=2, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    # JSON has no NaN/Inf; a non-finite number (e.g. the loss of a NaN input) is written as null.
    # The stats' `nonfinite` counts say how many entries were non-finite.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
