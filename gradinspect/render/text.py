"""Text only the renderers need: a layer's name indented as a tree (shapes and numbers: gradinspect.formatting)."""

from __future__ import annotations

from gradinspect.report import LayerRow


def display_name(row: LayerRow) -> str:
    """A layer's name indented under its parent model, as a tree."""
    if row.depth == 0:
        return row.name
    return "   " * (row.depth - 1) + " └─ " + row.name
