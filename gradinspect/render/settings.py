"""What a renderer may be told besides the report: colour and terminal width (the table uses them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RenderOptions:
    """``color``: emit ANSI styles (only for a terminal); ``width``: columns to fit (None: 160);
    ``hist``: add histogram sparklines to the ``grad`` tables."""

    color: bool = False
    width: int | None = None
    hist: bool = False  # grad tables: a sparkline of each gradient's log10 |g| histogram
