"""HTML to plain text with the stdlib parser: block elements start new lines,
headings become ``#`` lines (so Markdown sectioning gives breadcrumbs), ``<pre>``
keeps its whitespace inside a code fence, scripts and styles are dropped.

Every character of the text keeps the line of the file it came from (0 for what is
written here: ``#``, ``- ``, fences, line breaks), so a locator cites the lines a
reader finds in the file, not lines of the extracted text: a saved page is often one
long line."""

from __future__ import annotations

import re
from array import array
from html.parser import HTMLParser

from localassist.documents.model import LineMap

_SKIP = {"script", "style", "noscript", "template", "svg"}
_BLOCK = {
    "address", "article", "aside", "blockquote", "body", "br", "caption", "dd", "details", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "html", "li", "main", "nav", "ol", "p",
    "section", "summary", "table", "tbody", "tfoot", "thead", "title", "tr", "ul",
}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_WORD = re.compile(r"[^ \t\n\r\f\v]+")  # HTML's own white space, not every Unicode space


def html_to_text(html: str) -> tuple[str, LineMap]:
    """The text of ``html`` and the source line of each of its characters."""
    parser = _Extractor()
    parser.feed(html)
    parser.close()
    raw, src = "".join(parser.out), parser.src
    # each line without trailing spaces, at most one blank line in a row, none at the ends
    text: list[str] = []
    lines = array("i")
    at = 0
    previous = ""
    for line in raw.split("\n"):
        kept = line.rstrip()
        if kept or previous:
            if text:
                text.append("\n")
                lines.append(0)
            text.append(kept)
            lines.extend(src[at : at + len(kept)])
            previous = kept
        at += len(line) + 1
    out = "".join(text).rstrip("\n")
    del lines[len(out) :]
    lines.append(0)
    return out + "\n", LineMap.of(lines)


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.src = array("i")  # per character of "".join(out): its line in the file, 0 if written here
        self.last = ""  # the last character written
        self.skip = 0
        self.pre = 0
        self.data_from = 0  # where the characters of the last data run start in src

    def _emit(self, text: str, line: int = 0) -> None:
        if text:
            self.out.append(text)
            self.src.extend([line] * len(text))
            self.last = text[-1]

    def _newline(self) -> None:
        if self.out and self.last != "\n":
            self._emit("\n")

    def _settle(self) -> None:
        """The data just written ends before this point of the file: a character
        reference such as ``&#10;`` turns into a line break the file does not have, so
        lines counted inside the data are capped at the line where the next thing starts."""
        line = self.getpos()[0]
        for i in range(self.data_from, len(self.src)):
            if self.src[i] > line:
                self.src[i] = line
        self.data_from = len(self.src)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._settle()
        if tag in _SKIP:
            self.skip += 1
        elif tag in _HEADINGS:
            self._newline()
            self._emit("\n" + "#" * _HEADINGS[tag] + " ")
        elif tag == "pre":
            self._newline()
            self._emit("```\n")
            self.pre += 1
        elif tag in ("td", "th") and self.out and self.last != "\n":
            self._emit(" | ")
        elif tag in _BLOCK:
            self._newline()
            if tag == "li":
                self._emit("- ")

    def handle_endtag(self, tag: str) -> None:
        self._settle()
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _HEADINGS:
            self._emit("\n\n")
        elif tag == "pre":
            self._newline()
            self._emit("```\n\n")
            self.pre = max(0, self.pre - 1)
        elif tag in _BLOCK:
            self._newline()
            if tag in ("p", "table", "ul", "ol", "blockquote", "div", "section", "article"):
                self._emit("\n")

    def handle_data(self, data: str) -> None:
        self._settle()
        if self.skip:
            return
        line = self.getpos()[0]
        if self.pre:
            for k, part in enumerate(data.split("\n")):
                if k:
                    self._emit("\n", line + k - 1)
                self._emit(part, line + k)
            return
        at = 0
        for word in _WORD.finditer(data):  # white space becomes one space, none at the start of a line
            gap = data[at : word.start()]
            line += gap.count("\n")
            if gap and self.last not in ("", "\n", " "):
                self._emit(" ", line)
            self._emit(word.group(), line)
            at = word.end()
        if at < len(data) and self.last not in ("", "\n", " "):
            self._emit(" ", line)

    def close(self) -> None:
        super().close()
        self._settle()
