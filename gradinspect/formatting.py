"""The one home for turning values into text: shapes, numbers, counts, the informative line of an error.

A leaf module (it imports nothing from gradinspect), so that messages raised anywhere and every
renderer format the same value the same way.
"""

from __future__ import annotations

from typing import Any

MISSING = "—"


def shape(value: Any, unknown: str = "") -> str:
    """``(None, 3)`` as Keras prints it, ``(3,)`` for one dimension; several as ``[(None, 3), (None, 2)]``."""
    if value is None:
        return unknown
    value = tuple(value)
    if value and all(isinstance(s, tuple) for s in value):
        return "[" + ", ".join(shape(s) for s in value) + "]"
    inner = ", ".join("None" if d is None else str(d) for d in value)
    return f"({inner},)" if len(value) == 1 else f"({inner})"


def number(value: float | None, missing: str = MISSING) -> str:
    """A statistic in four significant digits (``0.1235``, ``2.236e+04``); ``missing`` for None."""
    return missing if value is None else f"{value:.4g}"


def count(n: int) -> str:
    """``1,234,567``."""
    return f"{n:,}"


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The informative line of an exception: its first non-empty line (or its type), at most ``limit`` characters."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
