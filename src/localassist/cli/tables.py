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


def print_table_fitted(headers: Sequence[str], rows: Sequence[Sequence[object]], width: int | None) -> None:
    """``print_table``, with the last two columns wrapped at spaces so that no line is wider
    than ``width`` cells (a terminal's); ``None`` (a pipe): one line per row, as it is."""
    import re
    import textwrap

    class Wrapper(textwrap.TextWrapper):
        wordsep_simple_re = re.compile(r"(\s+|(?<=\|))")  # after a "|" too: "now|today|weekday" choices

    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(cell_width(row[i]) for row in cells) for i in range(len(headers))]
    gaps = 2 * (len(widths) - 1)
    if width is None or sum(widths) + gaps <= width:
        print_table(headers, rows)
        return
    room = width - sum(widths[:-2]) - gaps
    second = max(min(widths[-2], room * 2 // 5), 12)  # the next-to-last column gets two fifths at most
    widths[-2:] = [second, max(room - second, 20)]
    for row in cells:
        columns = [[cell] for cell in row[:-2]]
        columns += [
            Wrapper(size, break_on_hyphens=False).wrap(cell) or [""]
            for cell, size in zip(row[-2:], widths[-2:], strict=True)
        ]
        for n in range(max(len(column) for column in columns)):
            parts = [column[n] if n < len(column) else "" for column in columns]
            out("  ".join(part + " " * (widths[i] - cell_width(part)) for i, part in enumerate(parts)).rstrip())


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
