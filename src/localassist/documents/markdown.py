"""Markdown sections: where each heading starts and the breadcrumb of headings above it.

LangChain's MarkdownHeaderTextSplitter gives breadcrumbs but no line numbers, so the
headings are found here: ATX (``## Title``) and setext (``Title`` over ``===``/``---``),
never inside fenced code or YAML front matter."""

from __future__ import annotations

import re

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_ATX_CLOSING = re.compile(r"(?:^|[ \t]+)#+$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
# lines that cannot be the text of a setext heading: lists, quotes, tables, indented code
_NOT_PARAGRAPH = re.compile(r"^(?: {4}|\t| {0,3}(?:[-*+>|]|\d+[.)])(?:[ \t]|$))")


def sections(lines: list[str]) -> list[tuple[int, str | None]]:
    """(0-based index of the section's first line, breadcrumb) in order. The first
    entry is (0, None): whatever comes before the first heading."""
    starts: list[tuple[int, str | None]] = [(0, None)]
    stack: list[tuple[int, str]] = []
    fence = ""
    front = _front_matter_end(lines)
    for i in range(front, len(lines)):
        line = lines[i]
        if fence:
            if line.strip() and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = ""
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = opening.group(1)
            continue
        heading = _atx(line)
        start = i
        if heading is None and i > front and _SETEXT.match(line) and _is_paragraph(lines[i - 1]):
            heading = (1 if "=" in line else 2, lines[i - 1].strip())
            start = i - 1
        if heading is None or not heading[1]:
            continue
        level, title = heading
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        if starts[-1][0] == start:  # a heading on the first line replaces the empty preamble
            starts.pop()
        starts.append((start, " > ".join(t for _, t in stack)))
    return starts


def _atx(line: str) -> tuple[int, str] | None:
    match = _ATX.match(line)
    if not match:
        return None
    title = _ATX_CLOSING.sub("", match.group(2) or "").strip()
    return len(match.group(1)), title


def _is_paragraph(line: str) -> bool:
    return bool(line.strip()) and not (
        _ATX.match(line) or _FENCE.match(line) or _SETEXT.match(line) or _NOT_PARAGRAPH.match(line)
    )


def _front_matter_end(lines: list[str]) -> int:
    if not lines or lines[0].strip() != "---":
        return 0
    for i in range(1, len(lines)):
        if lines[i].strip() in ("---", "..."):
            return i + 1
    return 0
