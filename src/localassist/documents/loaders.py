"""Files (or stdin bytes) into :class:`Document` pieces with locators.

The kind comes from the content first (``%PDF-``), then the extension; anything else
is read as text if it decodes as text. PDFs go through pypdf directly, not
LangChain's PyPDFLoader: that loader is a thin wrapper over the same
``page.extract_text()`` whose import costs about 1 s (pypdf alone: 0.2 s) and warns
that langchain-community is being sunset; pypdf also gives the encryption state and
the page labels this needs.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import logging
import os
import re
import threading
from array import array

from localassist.documents.chunking import line_span
from localassist.documents.decoding import decode
from localassist.documents.model import STDIN, Document, LineMap, Locator, Piece
from localassist.errors import DocumentError, DocumentNotFoundError
from localassist.files import NotRegularFileError, read_regular_bytes

KINDS = ("text", "markdown", "pdf", "csv", "html", "json")
_BY_EXTENSION = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".pdf": "pdf",
    ".csv": "csv",
    ".tsv": "csv",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".json": "json",
}


def load(path: str | os.PathLike[str], kind: str | None = None) -> Document:
    """Load a file. ``kind`` overrides detection (one of :data:`KINDS`)."""
    name = os.fspath(path)
    try:
        data = read_regular_bytes(name)  # a FIFO or a device is refused, never waited on
    except FileNotFoundError:
        raise DocumentNotFoundError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise DocumentError(f"{name} is a folder; give a file") from None
    except NotRegularFileError as error:
        raise DocumentError(f"{name} is {error.strerror}; give a file") from None
    except OSError as error:
        raise DocumentError(f"cannot read {name}: {error.strerror or error}") from None
    return load_bytes(data, name, kind)


def load_bytes(data: bytes, path: str = STDIN, kind: str | None = None) -> Document:
    """Load bytes already read (stdin: ``path="-"``). ``path`` names the source in
    locators and messages; its extension picks the kind unless ``kind`` is given."""
    kind = kind or detect_kind(path, data)
    if kind not in KINDS:
        raise DocumentError(f"unknown document kind {kind!r}; use one of {', '.join(KINDS)}")
    name = "stdin" if path == STDIN else path
    if not data.strip():
        raise DocumentError(f"{name} is empty")
    document = Document(path=path, sha256=hashlib.sha256(data).hexdigest(), kind=kind, pieces=[])
    if kind == "pdf":
        _load_pdf(document, data, name)
        return document
    text, document.encoding, document.warnings = decode(data, name)
    if not text.strip():
        raise DocumentError(f"{name} is empty (only whitespace)")
    if kind == "csv":
        _load_csv(document, text, name, tab=path.lower().endswith(".tsv"))
        return document
    document.lines = _count_lines(text)
    line_map = None  # text that is not the file's own lines says where each character was
    if kind == "json":
        text, line_map = _pretty_json(document, text, name)
    elif kind == "html":
        from localassist.documents.htmltext import html_to_text

        text, line_map = html_to_text(text)
        if not text.strip():
            raise DocumentError(f"{name} has no text outside its markup")
    lines = text.split("\n")
    if kind in ("markdown", "html"):
        from localassist.documents.markdown import sections

        starts = sections(lines)
    else:
        starts = [(0, None)]
    document.pieces = _line_pieces(text, lines, starts, path, line_map)
    return document


def _count_lines(text: str) -> int:
    return text.count("\n") + (not text.endswith("\n"))


def detect_kind(path: str, data: bytes) -> str:
    if data.startswith(b"%PDF-"):
        return "pdf"
    return _BY_EXTENSION.get(os.path.splitext(path)[1].lower(), "text")


def _line_pieces(
    text: str, lines: list[str], starts: list[tuple[int, str | None]], path: str, line_map: LineMap | None
) -> list[Piece]:
    """One piece per section: from its first line to the next section's first line.
    Lines are the text's own, or with ``line_map`` the file's lines it says."""
    offsets = [0]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    pieces = []
    for k, (first, section) in enumerate(starts):
        start = offsets[first]
        end = offsets[starts[k + 1][0]] if k + 1 < len(starts) else len(text)
        piece_text = text[start:end]
        if not piece_text.strip():
            continue
        if line_map is not None:
            piece_map = line_map.cut(start, end)
            span = piece_map.span(piece_text, 0, len(piece_text))
            if span is not None:  # else only what html_to_text wrote (an empty <pre>'s fence): nothing to cite
                locator = Locator(path, line_start=span[0], line_end=span[1], section=section)
                pieces.append(Piece(piece_text, locator, line_map=piece_map))
            continue
        newlines = [i for i, c in enumerate(piece_text) if c == "\n"]
        a, b = line_span(piece_text, newlines, 0, len(piece_text))
        locator = Locator(path, line_start=first + 1 + a, line_end=first + 1 + b, section=section)
        pieces.append(Piece(piece_text, locator, first_line=first + 1))
    return pieces


# a JSON token: a string, a bracket or punctuation, or a number or literal
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]|[^\s{}\[\],:"]+')


def _pretty_json(document: Document, text: str, name: str) -> tuple[str, LineMap | None]:
    """The JSON printed with an indent of 2, and the line of the file each of its tokens
    came from; with repeated keys, the text as written (printing it again would keep only
    the last value of each)."""
    duplicates: list[str] = []

    def keep_last(pairs: list[tuple[str, object]]) -> dict[str, object]:
        result: dict[str, object] = {}
        for key, value in pairs:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    try:
        value = json.loads(text, object_pairs_hook=keep_last)
    except json.JSONDecodeError as error:
        raise DocumentError(
            f"{name} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    except RecursionError:
        raise DocumentError(f"{name} is JSON nested too deeply to read") from None
    if duplicates:
        keys = ", ".join(repr(k) for k in sorted(set(duplicates))[:5])
        document.warnings.append(f"{name} repeats JSON keys ({keys}); JSON readers keep only the last value of each")
        return text, None
    pretty = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    # the printed tokens are the file's, in the same order: the k-th printed token is on the k-th one's line
    newlines = [i for i, c in enumerate(text) if c == "\n"]
    source = [bisect.bisect_right(newlines, m.start()) + 1 for m in _JSON_TOKEN.finditer(text)]
    printed = [m.span() for m in _JSON_TOKEN.finditer(pretty)]
    if len(source) != len(printed):  # not expected: then the text as written, whose lines are the file's
        return text, None
    lines = array("i", [0]) * len(pretty)
    for (start, end), line in zip(printed, source, strict=True):
        lines[start:end] = array("i", [line]) * (end - start)
    return pretty, LineMap.of(lines)


def _load_csv(document: Document, text: str, name: str, *, tab: bool) -> None:
    import csv

    # physical lines with their \n, so each record's own text (quotes and all) is kept
    physical = [line + "\n" for line in text.split("\n")]
    physical[-1] = physical[-1][:-1]
    if not physical[-1]:
        physical.pop()
    delimiter = "\t"
    if not tab:
        try:
            delimiter = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.reader(iter(physical), delimiter=delimiter)
    done = 0  # physical lines consumed so far
    rows = 0
    try:
        for record in reader:
            first, done = done, reader.line_num
            if not record:  # a blank line
                continue
            raw = "".join(physical[first:done])
            if document.header is None:
                document.header = raw if raw.endswith("\n") else raw + "\n"
                continue
            rows += 1
            locator = Locator(document.path, line_start=first + 1, line_end=done, row_start=rows, row_end=rows)
            document.pieces.append(Piece(raw, locator, first_line=first + 1))
    except csv.Error as error:
        raise DocumentError(f"{name} line {reader.line_num} is not valid CSV: {error}") from None
    if not rows:
        raise DocumentError(f"{name} has a header row but no data rows")
    document.rows = rows
    document.lines = len(physical)


def _load_pdf(document: Document, data: bytes, name: str) -> None:
    """pypdf tells what it had to repair (a truncated file, a broken cross-reference table)
    through ``logging`` only; a PDF it could read all the same gets one warning saying so,
    since some of its text may be missing."""
    import logging

    repairs = _Repairs()
    pypdf_log = logging.getLogger("pypdf")
    pypdf_log.addHandler(repairs)
    try:
        _read_pdf(document, data, name)
    finally:
        pypdf_log.removeHandler(repairs)
    if repairs.said:
        document.warnings.append(f"{name} is damaged ({repairs.said[0]}); it was repaired, some text may be missing")


class _Repairs(logging.Handler):
    """pypdf's warnings during one load, in the thread doing it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.said: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.said.append(" ".join(record.getMessage().split()))


def _read_pdf(document: Document, data: bytes, name: str) -> None:
    import pypdf
    from pypdf.errors import DependencyError, PyPdfError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == pypdf.PasswordType.NOT_DECRYPTED:
            raise DocumentError(
                f"{name} is encrypted and needs a password; decrypt it first "
                f"(for example: qpdf --password=PASSWORD --decrypt in.pdf out.pdf)"
            )
        pages = reader.pages
        count = len(pages)
        try:
            labels = list(reader.page_labels)
        except (PyPdfError, KeyError, ValueError, TypeError):  # a malformed /PageLabels tree: numbers only
            labels = [str(i + 1) for i in range(count)]
    except DependencyError as error:
        raise DocumentError(f"{name} is encrypted in a way that needs another package to read: {error}") from None
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DocumentError(f"{name} is not a readable PDF: {error}") from None
    document.pages = count
    if not count:
        raise DocumentError(f"{name} is a PDF with no pages")
    empty = []
    for number, page in enumerate(pages, start=1):
        try:
            text = page.extract_text()
        except Exception as error:  # pypdf raises many kinds on broken content streams; the page is reported
            document.warnings.append(f"{name} p.{number}: the text could not be extracted ({error})")
            text = ""
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if not text.strip():
            empty.append(number)
            continue
        label = labels[number - 1] if number - 1 < len(labels) else str(number)
        locator = Locator(document.path, page=number, page_label=None if label == str(number) else label)
        document.pieces.append(Piece(text, locator))
    if not document.pieces:
        raise DocumentError(
            f"{name} has no extractable text in its {count} page{'s' if count > 1 else ''}: it looks scanned "
            f"or image-only; run OCR on it first (for example: ocrmypdf in.pdf out.pdf)"
        )
    if empty:
        document.warnings.append(f"{name}: {len(empty)} of {count} pages have no extractable text: {_ranges(empty)}")


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> 'p.1–3, p.7'"""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(f"p.{start}" if start == prev else f"p.{start}–{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)
