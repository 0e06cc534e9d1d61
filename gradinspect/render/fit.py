"""Tables that fit the terminal: below the width where every column fits, the least important
columns are left out (and named in a footer); numbers are never cut."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Column:
    """A column: header, importance (higher stays longer), alignment; ``text`` columns may wrap."""

    header: str
    keep: int
    justify: JustifyMethod = "right"
    text: bool = False
    style: str | None = None
    max_width: int | None = None


def fit_table(title: str, columns: list[Column], rows: list[list[Any]], width: int) -> tuple[Table, list[str]]:
    """The widest table of ``columns`` that fits ``width``, dropping the least important first.
    Returns the table and the headers left out (in table order)."""
    shown = list(range(len(columns)))
    while True:
        cols, cells = [columns[i] for i in shown], [[r[i] for i in shown] for r in rows]
        # Names and notes wrap first, narrower and narrower; then a column is left out.
        for wrap in (None, 40, 30, 24, _WRAP):
            table = _table(title, cols, cells, wrap)
            if _width(table) <= width:
                break
        if _width(table) <= width or len(shown) <= 2:
            break
        shown.remove(min(shown, key=lambda i: (columns[i].keep, -i)))
    dropped = [c.header for i, c in enumerate(columns) if i not in shown]
    return table, dropped


def dropped_note(dropped: list[str], width: int) -> Text:
    return Text(
        f"(left out to fit {width} columns: {', '.join(dropped)}; widen the terminal, or use --format json)",
        style="dim",
    )


_WRAP = 18  # the width text columns (names, notes) wrap at in a narrow terminal


def _table(title: str, columns: list[Column], rows: list[list[Any]], wrap: int | None) -> Table:
    table = Table(title=Text(title), title_justify="left")
    for c in columns:
        if c.text:
            limit = min(c.max_width or wrap or 10_000, wrap or 10_000) if (c.max_width or wrap) else None
            table.add_column(c.header, justify=c.justify, style=c.style, max_width=limit, overflow="fold")
        else:
            table.add_column(c.header, justify=c.justify, style=c.style, no_wrap=True, min_width=len(c.header))
    for row in rows:
        table.add_row(*row)
    return table


def _width(table: Table) -> int:
    """The table's natural width (every cell on one line, text columns up to their max width)."""
    console = Console(width=10_000, no_color=True)
    return console.measure(table).maximum
