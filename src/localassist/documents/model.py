"""What a loaded document is made of: pieces of text, each with a locator that says
where in the source it came from. Numbers a person reads are 1-based everywhere
(pages, lines, data rows); line ranges are inclusive."""

from __future__ import annotations

import hashlib
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
        if self.row_start is not None:
            one = self.row_end in (None, self.row_start)
            parts.append(f"row {self.row_start}" if one else f"rows {self.row_start}–{self.row_end}")
        elif self.line_start is not None:
            one = self.line_end in (None, self.line_start)
            parts.append(f"L{self.line_start}" if one else f"L{self.line_start}–{self.line_end}")
        if self.section:
            parts.append(f"§ {self.section}")
        return " ".join(parts)


@dataclass(frozen=True)
class Piece:
    """A unit of a document: a PDF page, a Markdown section, a CSV data row, or a
    whole text file. ``first_line`` is the source line of ``text[0]`` (None where
    lines mean nothing, as in a PDF); the chunker derives chunk line ranges from it."""

    text: str
    locator: Locator
    first_line: int | None = None


@dataclass
class Document:
    """A loaded file (or stdin). ``sha256`` is of the raw bytes. ``pages``, ``lines``
    and ``rows`` are totals for a coverage ledger: PDF pages (with or without text),
    lines of the (extracted) text, CSV data rows. ``header`` is a CSV's header row,
    repeated at the top of every chunk. ``warnings`` are for the person at the
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
