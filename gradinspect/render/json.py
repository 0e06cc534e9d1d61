"""JSON: the report's ``to_dict()``, stable keys, two-space indent."""

from __future__ import annotations

import json
from typing import Any


def render(report: Any) -> str:
    return json.dumps(report.to_dict(), indent=2, allow_nan=False, default=_default) + "\n"


def _default(value: Any) -> Any:
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
