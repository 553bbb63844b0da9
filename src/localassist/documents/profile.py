"""Facts about a CSV computed here, not by the model: columns, row count, and per column
its type, range or most common values. The summary of a CSV opens with them, and the
model gets them with its notes, so the numbers in that part are always right."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter

from localassist.documents.model import Document

_TOP = 4  # most common values shown for a text column
_CELL = 40  # characters of a value shown


def csv_facts(document: Document) -> str:
    """``sales.csv: 40 rows, 4 columns`` and one line per column."""
    header, rows = _parse(document)
    name = "stdin" if document.path == "-" else document.path
    lines = [f"{name}: {document.rows} rows, {len(header)} columns"]
    for i, column in enumerate(header):
        values = [row[i].strip() if i < len(row) else "" for row in rows]
        lines.append(f"- {_cell(column) or f'column {i + 1}'}: {_describe(values)}")
    return "\n".join(lines)


def _parse(document: Document) -> tuple[list[str], list[list[str]]]:
    text = (document.header or "") + "".join(piece.text for piece in document.pieces)
    delimiter = "\t" if document.path.lower().endswith(".tsv") else None
    if delimiter is None:  # the loader's own choice, made the same way
        try:
            delimiter = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    records = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if r]
    return (records[0], records[1:]) if records else ([], [])


def _describe(values: list[str]) -> str:
    present = [v for v in values if v]
    empty = len(values) - len(present)
    tail = f", {empty} empty" if empty else ""
    if not present:
        return "empty"
    numbers = [_number(v) for v in present]
    if all(n is not None for n in numbers):
        nums = [n for n in numbers if n is not None]
        total = math.fsum(nums)
        mean = total / len(nums)
        return f"number, min {_num(min(nums))}, max {_num(max(nums))}, mean {_num(mean)}, sum {_num(total)}{tail}"
    counts = Counter(present)
    if len(counts) == len(present):
        return f"text, all {len(present)} values distinct{tail}"
    top = ", ".join(f"{_cell(value)} ({n})" for value, n in counts.most_common(_TOP))
    more = "" if len(counts) <= _TOP else ", ..."
    return f"text, {len(counts)} distinct: {top}{more}{tail}"


def _number(value: str) -> float | None:
    if not value.isascii():  # "²" or "١٢" are not numbers here (float() would take the latter)
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _num(x: float) -> str:
    return f"{x:,.0f}" if x == int(x) and abs(x) < 1e15 else f"{x:,.4g}"


def _cell(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _CELL else text[: _CELL - 1] + "…"
