"""Plain aligned columns: readable on a terminal, parseable in a pipe, no rich import.

Columns are measured in terminal cells, not characters: CJK and most emoji take two.
(``rich.cells`` would do it, but importing it costs ~15-25 ms on every ``models``/``logs``.)
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from localassist.cli.console import out


def cell_width(text: str) -> int:
    """The terminal columns ``text`` takes: East Asian wide and fullwidth characters (CJK,
    most emoji) two, combining marks and zero-width format characters none, others one."""
    if text.isascii():
        return len(text)
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def fit_cells(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` cells, ending in "…" when it was cut."""
    if cell_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        used += cell_width(ch)
        if used > width - 1:
            break
        out.append(ch)
    return "".join(out) + "…"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(cell_width(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        line = "  ".join(cell + " " * (widths[i] - cell_width(cell)) for i, cell in enumerate(row)).rstrip()
        out(line)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}".replace(".00", "")
    return str(n)
