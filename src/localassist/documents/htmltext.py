"""HTML to plain text with the stdlib parser: block elements start new lines,
headings become ``#`` lines (so Markdown sectioning gives breadcrumbs), ``<pre>``
keeps its whitespace inside a code fence, scripts and styles are dropped."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SKIP = {"script", "style", "noscript", "template", "svg"}
_BLOCK = {
    "address", "article", "aside", "blockquote", "body", "br", "caption", "dd", "details", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "html", "li", "main", "nav", "ol", "p",
    "section", "summary", "table", "tbody", "tfoot", "thead", "title", "tr", "ul",
}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_SPACES = re.compile(r"[ \t\n\r\f\v]+")


def html_to_text(html: str) -> str:
    parser = _Extractor()
    parser.feed(html)
    parser.close()
    lines = [line.rstrip() for line in "".join(parser.out).split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):  # at most one blank line in a row
            out.append(line)
    return "\n".join(out).strip("\n") + "\n"


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0

    def _newline(self) -> None:
        if self.out and not self.out[-1].endswith("\n"):
            self.out.append("\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag in _HEADINGS:
            self._newline()
            self.out.append("\n" + "#" * _HEADINGS[tag] + " ")
        elif tag == "pre":
            self._newline()
            self.out.append("```\n")
            self.pre += 1
        elif tag in ("td", "th") and self.out and not self.out[-1].endswith("\n"):
            self.out.append(" | ")
        elif tag in _BLOCK:
            self._newline()
            if tag == "li":
                self.out.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _HEADINGS:
            self.out.append("\n\n")
        elif tag == "pre":
            self._newline()
            self.out.append("```\n\n")
            self.pre = max(0, self.pre - 1)
        elif tag in _BLOCK:
            self._newline()
            if tag in ("p", "table", "ul", "ol", "blockquote", "div", "section", "article"):
                self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            self.out.append(data)
            return
        text = _SPACES.sub(" ", data)
        if self.out and self.out[-1].endswith(("\n", " ")):
            text = text.lstrip(" ")
        if text:
            self.out.append(text)
