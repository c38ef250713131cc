"""Tables for command output (the CLI's and the operator views'), drawn by rich: no colour,
a header underlined with dashes, as wide as the terminal allows. Cells wrap inside their
column when the table would be wider than ``COLUMNS`` (or the terminal); piped into a file or
a script with no ``COLUMNS`` set, nothing wraps, so every row stays on one line for grep."""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Sequence

from rich.console import Console, JustifyMethod
from rich.table import Table

#: the width of output that goes to no terminal and has no COLUMNS (no wrapping)
UNLIMITED = 10_000


def width() -> int:
    """``COLUMNS`` when set (a positive number), else the terminal's width when stdout is
    one, else :data:`UNLIMITED`."""
    value = os.environ.get("COLUMNS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return UNLIMITED


Cell = object
"""A table cell: a list or tuple is a list of items (", " between them on one line, or one
item per line when the column is narrower); anything else is shown as ``str(cell)``."""


def format_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    *,
    columns: int | None = None,
    indent: str = "",
    rule: bool = True,
    right: Sequence[bool] = (),
) -> str:
    """Left-aligned columns separated by two spaces, at most ``columns`` (default:
    :func:`width`) wide. When the rows do not fit, the columns that can wrap give up width
    first: a text wraps at its spaces, a list puts one item per line; a word is cut only when
    even the longest words of every column do not fit side by side. ``indent`` starts every
    line; ``rule``: the dashes under the header; ``right``: right-aligned columns."""
    cells = [[_Cell(c) for c in header], *([_Cell(c) for c in row] for row in rows)]
    room = (columns or width()) - len(indent) - 2 * (len(header) - 1)
    sizes = _widths(cells, room)
    aligned = [*right, *([False] * len(header))]

    def render(body: Sequence[Sequence[_Cell]]) -> list[str]:
        table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0))
        for i, (name, size) in enumerate(zip(header, sizes, strict=True)):
            justify: JustifyMethod = "right" if aligned[i] else "left"
            table.add_column(
                name, overflow="fold", header_style="none", width=size, justify=justify
            )
        for row in body:
            table.add_row(*(cell.text(size) for cell, size in zip(row, sizes, strict=True)))
        out = io.StringIO()
        console = Console(
            file=out,
            width=UNLIMITED,
            color_system=None,
            highlight=False,
            markup=False,
            emoji=False,
            legacy_windows=False,
        )
        console.print(table, crop=False)
        return [(indent + line).rstrip() for line in out.getvalue().rstrip("\n").splitlines()]

    lines = render(cells[1:])
    if rule:  # dashes under each column's header, two spaces apart, as wide as the column
        head = len(render([]))
        lines.insert(head, indent + "  ".join("-" * size for size in sizes))
    return "\n".join(lines)


class _Cell:
    def __init__(self, value: Cell) -> None:
        if isinstance(value, list | tuple):
            self.items = [str(item) for item in value]
            self.line = ", ".join(self.items)
            self.shortest = max((len(item) for item in self.items), default=0)
        else:
            self.items = []
            self.line = str(value)
            self.shortest = max((len(word) for word in self.line.split()), default=0)

    def text(self, size: int) -> str:
        return self.line if len(self.line) <= size or not self.items else "\n".join(self.items)


def _widths(cells: list[list[_Cell]], room: int) -> list[int]:
    """Each column's width: its longest cell when everything fits in ``room``; otherwise at
    least its longest word (or list item), the rest of the room shared in proportion to what
    each column would like more; if even those do not fit, shares of the room (words cut)."""
    count = range(len(cells[0]))
    most = [max(len(row[i].line) for row in cells) for i in count]
    if sum(most) <= room:
        return most
    least = [max(1, *(row[i].shortest for row in cells)) for i in count]
    if sum(least) > room:
        return [max(1, room * n // sum(least)) for n in least]
    spare, wanted = room - sum(least), sum(most) - sum(least)
    return [lo + spare * (hi - lo) // wanted for lo, hi in zip(least, most, strict=True)]
