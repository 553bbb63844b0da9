"""What a loaded document is made of: pieces of text, each with a locator that says
where in the source it came from. Numbers a person reads are 1-based everywhere
(pages, lines, data rows); line ranges are inclusive."""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

STDIN = "-"


@dataclass(frozen=True)
class Locator:
    """Where a piece of text is: the path as given (``-`` for stdin) plus the fields
    that apply to its kind. ``page_label`` is set only when the printed label differs
    from the page number; ``section`` is a heading breadcrumb like ``Intro > Setup``."""

    path: str
    page: int | None = None
    page_label: str | None = None
    line_start: int | None = None
    line_end: int | None = None
    row_start: int | None = None
    row_end: int | None = None
    section: str | None = None

    def __str__(self) -> str:
        parts = ["stdin" if self.path == STDIN else self.path]
        if self.page is not None:
            parts.append(f"p.{self.page}" + (f" ({self.page_label})" if self.page_label else ""))
        # lines of the file before CSV data rows: "row 1" would send a reader to the header line
        if self.line_start is not None:
            one = self.line_end in (None, self.line_start)
            parts.append(f"L{self.line_start}" if one else f"L{self.line_start}–{self.line_end}")
        elif self.row_start is not None:
            one = self.row_end in (None, self.row_start)
            parts.append(f"row {self.row_start}" if one else f"rows {self.row_start}–{self.row_end}")
        if self.section:
            parts.append(f"§ {self.section}")
        return " ".join(parts)


_NON_SPACE = re.compile(r"\S")


@dataclass(frozen=True)
class LineMap:
    """The source line of every character of a text that is not the file's own lines: text
    taken out of HTML markup, or JSON printed again. Runs tile the text: run ``i`` starts
    at ``starts[i]`` and came from line ``lines[i]`` of the file, or from none (0: what the
    loader wrote itself, such as a heading's ``#`` or a JSON indent)."""

    starts: tuple[int, ...]
    lines: tuple[int, ...]

    @classmethod
    def of(cls, per_char: Sequence[int]) -> LineMap:
        """From one source line (or 0) per character."""
        starts, lines, at = [], [], 0
        for line, run in itertools.groupby(per_char):
            starts.append(at)
            lines.append(line)
            at += sum(1 for _ in run)
        return cls(tuple(starts), tuple(lines))

    def cut(self, start: int, end: int) -> LineMap:
        """The map of text[start:end], its offsets counted from ``start``."""
        first = max(0, bisect.bisect_right(self.starts, start) - 1)
        last = bisect.bisect_left(self.starts, end)
        starts = [max(0, s - start) for s in self.starts[first:last]]
        return LineMap(tuple(starts), self.lines[first:last])

    def span(self, text: str, start: int, end: int) -> tuple[int, int] | None:
        """The source lines of the first and the last non-blank character of text[start:end]
        that came from the file (None when none did). ``text`` is the mapped text."""
        first = last = None
        for i in range(max(0, bisect.bisect_right(self.starts, start) - 1), len(self.starts)):
            a, b = max(start, self.starts[i]), min(end, self._end(i, len(text)))
            if a >= end:
                break
            if self.lines[i] and _NON_SPACE.search(text, a, b):
                first = self.lines[i]
                break
        for i in range(bisect.bisect_left(self.starts, end) - 1, -1, -1):
            a, b = max(start, self.starts[i]), min(end, self._end(i, len(text)))
            if b <= start:
                break
            if self.lines[i] and text[a:b].strip():
                last = self.lines[i]
                break
        return None if first is None or last is None else (first, last)

    def text_lines(self, text: str) -> set[int]:
        """The source lines that some non-blank character of ``text`` came from."""
        return {
            line
            for i, line in enumerate(self.lines)
            if line and _NON_SPACE.search(text, self.starts[i], self._end(i, len(text)))
        }

    def _end(self, i: int, length: int) -> int:
        return self.starts[i + 1] if i + 1 < len(self.starts) else length


@dataclass(frozen=True)
class Piece:
    """A unit of a document: a PDF page, a Markdown section, a CSV data row, or a
    whole text file. ``first_line`` is the source line of ``text[0]`` (None where
    lines mean nothing, as in a PDF); the chunker derives chunk line ranges from it.
    Text that is not the file's own lines (HTML, JSON) has a ``line_map`` instead, which
    says the source line of each character: locators always point into the file."""

    text: str
    locator: Locator
    first_line: int | None = None
    line_map: LineMap | None = None

    def source_lines(self) -> set[int]:
        """The lines of the file that hold this piece's non-blank text."""
        if self.line_map is not None:
            return self.line_map.text_lines(self.text)
        if self.first_line is None:
            return set()
        return {self.first_line + i for i, line in enumerate(self.text.split("\n")) if line.strip()}


@dataclass
class Document:
    """A loaded file (or stdin). ``sha256`` is of the raw bytes. ``pages``, ``lines``
    and ``rows`` are totals for a coverage ledger: PDF pages (with or without text),
    lines of the source (not of the text taken out of it), CSV data rows. ``header``
    is a CSV's header row, repeated at the top of every chunk. ``warnings`` are for the person at the
    terminal (a fallback encoding, pages without text); nothing here prints them."""

    path: str
    sha256: str
    kind: str  # text | markdown | pdf | csv | html | json
    pieces: list[Piece]
    warnings: list[str] = field(default_factory=list)
    encoding: str | None = None
    pages: int | None = None
    lines: int | None = None
    rows: int | None = None
    header: str | None = None


@dataclass(frozen=True)
class Chunk:
    """A span of text that fits the token budget, with where it came from."""

    text: str
    locator: Locator
    tokens: int  # by the count_tokens the chunker was given
    sha256: str = field(init=False)  # of the text as UTF-8: a cache key for map outputs and embeddings

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.text.encode("utf-8")).hexdigest())

    @property
    def path(self) -> str:
        return self.locator.path
