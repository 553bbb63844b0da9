"""Files (or stdin bytes) into :class:`Document` pieces with locators.

The kind comes from the content first (``%PDF-``), then the extension; anything else
is read as text if it decodes as text. PDFs go through pypdf directly, not
LangChain's PyPDFLoader: that loader is a thin wrapper over the same
``page.extract_text()`` whose import costs about 1 s (pypdf alone: 0.2 s) and warns
that langchain-community is being sunset; pypdf also gives the encryption state and
the page labels this needs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

from localassist.documents.chunking import line_span
from localassist.documents.decoding import decode
from localassist.documents.model import STDIN, Document, Locator, Piece
from localassist.errors import DocumentError, DocumentNotFoundError

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
        data = Path(name).read_bytes()
    except FileNotFoundError:
        raise DocumentNotFoundError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise DocumentError(f"{name} is a folder; give a file") from None
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
    if kind == "json":
        text = _pretty_json(document, text, name)
    elif kind == "html":
        from localassist.documents.htmltext import html_to_text

        text = html_to_text(text)
        if not text.strip():
            raise DocumentError(f"{name} has no text outside its markup")
    lines = text.split("\n")
    document.lines = len(lines) - 1 if text.endswith("\n") else len(lines)
    if kind in ("markdown", "html"):
        from localassist.documents.markdown import sections

        starts = sections(lines)
    else:
        starts = [(0, None)]
    document.pieces = _line_pieces(text, lines, starts, path)
    return document


def detect_kind(path: str, data: bytes) -> str:
    if data.startswith(b"%PDF-"):
        return "pdf"
    return _BY_EXTENSION.get(os.path.splitext(path)[1].lower(), "text")


def _line_pieces(text: str, lines: list[str], starts: list[tuple[int, str | None]], path: str) -> list[Piece]:
    """One piece per section: from its first line to the next section's first line."""
    offsets = [0]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    pieces = []
    for k, (first, section) in enumerate(starts):
        end = offsets[starts[k + 1][0]] if k + 1 < len(starts) else len(text)
        piece_text = text[offsets[first] : end]
        if not piece_text.strip():
            continue
        newlines = [i for i, c in enumerate(piece_text) if c == "\n"]
        a, b = line_span(piece_text, newlines, 0, len(piece_text))
        locator = Locator(path, line_start=first + 1 + a, line_end=first + 1 + b, section=section)
        pieces.append(Piece(piece_text, locator, first_line=first + 1))
    return pieces


def _pretty_json(document: Document, text: str, name: str) -> str:
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
        document.warnings.append(f"{name} repeats JSON keys ({keys}); only the last value of each is read")
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


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
