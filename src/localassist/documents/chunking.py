"""Token-exact chunking: every chunk fits the budget by the model's own tokenizer.

LangChain's RecursiveCharacterTextSplitter (given the real token counter) picks the
cut points: paragraphs, then lines, sentences, words. Its size limit is soft (it adds
up the counts of the pieces it joins, and tokens do not add up exactly across a
join), so every chunk it returns is counted again and anything still over the budget
is cut by binary search on characters. Every chunk is counted before it is returned.

Chunks stay inside one piece of the document (a PDF page, a Markdown section), so a
chunk's locator is its piece's, narrowed to the chunk's own lines. CSV rows are
grouped under a copy of the header instead.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

from localassist.documents.model import Chunk, Document, Locator, Piece
from localassist.errors import DocumentError

CountTokens = Callable[[str], int]

# keep_separator="end" leaves each separator at the end of the text before it, so a
# chunk ends with its paragraph break instead of the next chunk starting with one
_SEPARATORS = ["\n\n", "\n", ". ", " ", ""]
_WHITESPACE = re.compile(r"\s")
_JOIN_SLACK = 8


class Span(NamedTuple):
    start: int  # character offsets into the text, end exclusive
    end: int
    tokens: int


def chunk_document(document: Document, budget: int, count_tokens: CountTokens, *, overlap: int = 0) -> list[Chunk]:
    """Split a document into chunks of at most ``budget`` tokens by ``count_tokens``.

    ``overlap`` (tokens, < budget) repeats the end of the previous chunk of the same
    piece at the start of the next one, cut at a word boundary where one is near.
    CSV chunks never overlap: each holds whole rows under the header (a single row too
    big for the budget is split, with the header on every part).

    Raises ValueError for a budget < 1 or an overlap outside [0, budget), and
    DocumentError when the budget cannot hold even one character (or the CSV header).
    """
    _check(budget, overlap)
    if document.kind == "csv":
        return _chunk_rows(document, budget, count_tokens)
    chunks: list[Chunk] = []
    for piece in document.pieces:
        newlines = _newlines(piece.text) if piece.first_line is not None and piece.line_map is None else []
        for span in split_spans(piece.text, budget, count_tokens, overlap=overlap):
            locator = _narrow(piece, newlines, span.start, span.end)
            if locator is None:  # only what the loader wrote (a code fence, a list mark): nothing of the file
                continue
            chunks.append(Chunk(piece.text[span.start : span.end], locator, span.tokens))
    return chunks


def split_spans(text: str, budget: int, count_tokens: CountTokens, *, overlap: int = 0) -> list[Span]:
    """Spans of ``text`` of at most ``budget`` tokens each. Without overlap they tile the
    text in order, leaving out only spans that are nothing but whitespace."""
    _check(budget, overlap)
    spans = [s for s in _tile(text, budget - overlap, count_tokens) if text[s.start : s.end].strip()]
    if not overlap:
        return spans
    out = spans[:1]
    for previous, span in itertools.pairwise(spans):
        # never reach back to the previous chunk's start: that would repeat all of it
        out.append(_with_overlap(text, previous.start + 1, span, budget, overlap, count_tokens))
    return out


def _check(budget: int, overlap: int) -> None:
    if budget < 1:
        raise ValueError(f"chunk budget must be at least 1 token (got {budget})")
    if not 0 <= overlap < budget:
        raise ValueError(f"chunk overlap must be at least 0 and less than the budget of {budget} (got {overlap})")


def _tile(text: str, size: int, count: CountTokens) -> list[Span]:
    total = count(text)
    if total <= size:
        return [Span(0, len(text), total)] if text else []
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(
        chunk_size=size,
        chunk_overlap=0,
        length_function=functools.lru_cache(maxsize=4096)(count),  # it counts every split twice
        separators=_SEPARATORS,
        keep_separator="end",
        strip_whitespace=False,
    )
    parts = splitter.split_text(text)
    if "".join(parts) != text:  # never lose text: should a splitter version drop any, cut it all here
        parts = [text]
    spans: list[Span] = []
    start = 0
    for part in parts:
        end = start + len(part)
        for span in _hard_split(text, start, end, size, count):
            # the splitter leaves small neighbours apart when it recursed between them; a join
            # costs at most a few tokens less than the two parts, so only near misses are counted
            if spans and spans[-1].tokens + span.tokens <= size + _JOIN_SLACK:
                merged = count(text[spans[-1].start : span.end])
                if merged <= size:
                    spans[-1] = Span(spans[-1].start, span.end, merged)
                    continue
            spans.append(span)
        start = end
    return spans


def _hard_split(text: str, start: int, end: int, size: int, count: CountTokens, prefix: str = "") -> list[Span]:
    """Cut text[start:end] into spans with count(prefix + span) <= size; tokens include the prefix."""
    spans: list[Span] = []
    while start < end:
        n = count(prefix + text[start:end])
        if n <= size:
            spans.append(Span(start, end, n))
            break
        cut, n = _longest_fit(text, start, end, size, count, prefix)
        if cut == start:
            what = f"the CSV header and {text[start]!r}" if prefix else repr(text[start])
            raise DocumentError(f"a {size}-token chunk cannot hold even {what}; the chunk budget is too small")
        # rather cut after a space than inside a word, unless that loses over half the span
        space = _last_whitespace(text, start, cut)
        if space is not None and space + 1 - start > (cut - start) // 2 and space + 1 < cut:
            soft = count(prefix + text[start : space + 1])
            if soft <= size:
                cut, n = space + 1, soft
        spans.append(Span(start, cut, n))
        start = cut
    return spans


def _longest_fit(text: str, start: int, end: int, size: int, count: CountTokens, prefix: str) -> tuple[int, int]:
    """The largest k with count(prefix + text[start:k]) <= size, by binary search, and its
    count. Token counts are not strictly monotonic in length, so only a k that was
    actually counted is returned."""
    lo, lo_tokens, hi = start, 0, end  # text[start:hi] is known not to fit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        n = count(prefix + text[start:mid])
        if n <= size:
            lo, lo_tokens = mid, n
        else:
            hi = mid
    return lo, lo_tokens


def _last_whitespace(text: str, start: int, end: int) -> int | None:
    for i in range(end - 1, start - 1, -1):
        if text[i].isspace():
            return i
    return None


def _with_overlap(text: str, floor: int, span: Span, budget: int, overlap: int, count: CountTokens) -> Span:
    """Move span.start back, not before ``floor``, as far as the overlap and the budget allow."""
    lo, hi = floor, span.start  # hi (no overlap) fits; look for the smallest start that does
    best, best_tokens = span.start, span.tokens
    while lo < hi:
        mid = (lo + hi) // 2
        n = count(text[mid : span.end])
        if n <= budget and count(text[mid : span.start]) <= overlap:
            best, best_tokens, hi = mid, n, mid
        else:
            lo = mid + 1
    if 0 < best < span.start and not text[best - 1].isspace():  # start on a word
        word = _WHITESPACE.search(text, best, span.start)
        if word:
            n = count(text[word.end() : span.end])
            if n <= budget:
                best, best_tokens = word.end(), n
    return Span(best, span.end, best_tokens)


def _chunk_rows(document: Document, budget: int, count: CountTokens) -> list[Chunk]:
    header = document.header or ""
    header_tokens = count(header)
    if header_tokens >= budget:
        raise DocumentError(
            f"{document.path}: the CSV header alone is {header_tokens} tokens, "
            f"no room for rows in a {budget}-token chunk"
        )
    rows = document.pieces
    row_tokens = [count(row.text) for row in rows]
    chunks: list[Chunk] = []
    i = 0
    while i < len(rows):
        # take rows while the sum of their counts fits, then count the joined text for real
        j, estimate = i + 1, header_tokens + row_tokens[i]
        while j < len(rows) and estimate + row_tokens[j] <= budget:
            estimate += row_tokens[j]
            j += 1
        while True:
            text = header + "".join(row.text for row in rows[i:j])
            n = count(text)
            if n <= budget or j == i + 1:
                break
            j -= 1
        if n <= budget:
            first, last = rows[i].locator, rows[j - 1].locator
            locator = replace(first, row_end=last.row_end, line_end=last.line_end)
            chunks.append(Chunk(text, locator, n))
        else:  # one row alone is over the budget: split it, the header on every part
            row = rows[i]
            newlines = _newlines(row.text)
            for span in _hard_split(row.text, 0, len(row.text), budget, count, prefix=header):
                locator = _narrow(row, newlines, span.start, span.end) or row.locator
                chunks.append(Chunk(header + row.text[span.start : span.end], locator, span.tokens))
            j = i + 1
        i = j
    return chunks


def _newlines(text: str) -> list[int]:
    return [m.start() for m in re.finditer("\n", text)]


def line_span(text: str, newlines: list[int], start: int, end: int) -> tuple[int, int]:
    """0-based lines (relative to the start of ``text``) of the first and last
    non-whitespace characters of text[start:end]; ``newlines`` are text's \\n offsets."""
    chunk = text[start:end]
    first = start + len(chunk) - len(chunk.lstrip())
    last = end - 1 - (len(chunk) - len(chunk.rstrip()))
    if last < first:  # whitespace only
        first, last = start, max(start, end - 1)
    return bisect.bisect_left(newlines, first), bisect.bisect_left(newlines, last)


def _narrow(piece: Piece, newlines: list[int], start: int, end: int) -> Locator | None:
    if piece.line_map is not None:  # text taken out of the file (HTML, JSON): the lines it came from
        span = piece.line_map.span(piece.text, start, end)
        return replace(piece.locator, line_start=span[0], line_end=span[1]) if span else None
    if piece.first_line is None:
        return piece.locator
    a, b = line_span(piece.text, newlines, start, end)
    return replace(piece.locator, line_start=piece.first_line + a, line_end=piece.first_line + b)
