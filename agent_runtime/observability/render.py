"""Small text helpers for the operator commands: aligned tables and human durations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent_runtime.observability.tables import UNLIMITED, format_table, width


def duration(seconds: float | None) -> str:
    """``0.4ms``, ``12ms``, ``3.2s``, ``4m05s``, ``2h03m``, ``3d04h``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:.1f}ms" if ms < 10 else f"{ms:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> str:
    """Left-aligned columns; numbers right-aligned. Within ``COLUMNS`` or the terminal's
    width when either is known (cells wrap inside their column); one line per row when the
    output goes to a file or a pipe."""
    if width() < UNLIMITED:
        numeric = [
            bool(rows) and all(_is_number(row[i]) for row in rows) for i in range(len(headers))
        ]
        texts = [[cell(v) for v in row] for row in rows]
        return format_table(headers, texts, indent=indent, rule=False, right=numeric)
    cells = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return (indent + "  ".join(parts)).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in cells)])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
