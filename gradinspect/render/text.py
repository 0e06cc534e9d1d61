"""Plain-text formatting shared by the renderers (shapes, counts)."""

from __future__ import annotations

from typing import Any


def shape(value: Any) -> str:
    """``(None, 3)`` like Keras prints it; several outputs as ``[(None, 3), (None, 2)]``; unknown as ``""``."""
    if value is None:
        return ""
    if value and all(isinstance(s, tuple) for s in value):
        return "[" + ", ".join(shape(s) for s in value) + "]"
    inner = ", ".join("None" if d is None else str(d) for d in value)
    return f"({inner},)" if len(value) == 1 else f"({inner})"


def count(n: int) -> str:
    """``1,234,567``."""
    return f"{n:,}"


def display_name(row: Any) -> str:
    """A layer's name indented under its parent model, as a tree."""
    if row.depth == 0:
        return row.name
    return "   " * (row.depth - 1) + " └─ " + row.name
