"""Writing an answer as it streams.

Pipes get the raw text and nothing else. A terminal gets markdown rendered
progressively: every finished block (paragraph, list, fenced code) is printed
once, for good, and only the block still being written is redrawn, in a Live
region that shows its last lines. Nothing is ever cut to an ellipsis, whatever
the answer's height.
"""

from __future__ import annotations

import re
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.live import Live

_FENCE = re.compile(r"^\s*(```|~~~)")
# A list marker with nothing after it ("1." alone on a line) is an empty list item to
# markdown, and rich draws those as blank: escape it so the text stays visible.
_EMPTY_ITEM = re.compile(r"^(\s*)(\d+)([.)])[ \t]*$|^(\s*)([-*+])[ \t]*$", re.MULTILINE)


def _keep_empty_items(text: str) -> str:
    return _EMPTY_ITEM.sub(lambda m: f"{m[1]}{m[2]}\\{m[3]}" if m[2] else f"{m[4]}\\{m[5]}", text)


def split_finished_blocks(text: str) -> tuple[list[str], str]:
    """Split ``text`` into blocks that are complete and the unfinished remainder.

    A block ends at a blank line outside a code fence, or at a closing fence.
    """
    blocks: list[str] = []
    start = 0
    in_fence = False
    pos = 0
    lines = text.split("\n")
    offsets = []
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    for i, line in enumerate(lines[:-1]):  # the last line may still grow
        if _FENCE.match(line):
            in_fence = not in_fence
            if not in_fence:  # closing fence: the code block is done
                end = offsets[i] + len(line) + 1
                block = text[start:end].strip("\n")
                if block:
                    blocks.append(block)
                start = end
            continue
        if not in_fence and line.strip() == "":
            block = text[start : offsets[i]].strip("\n")
            if block:
                blocks.append(block)
            start = offsets[i] + len(line) + 1
    return blocks, text[start:]


class PlainWriter:
    """The text as it comes. On a pipe, byte for byte (the pipe contract); on a terminal
    (--plain), control characters are shown, not obeyed."""

    def __init__(self, out: IO[str] | None = None) -> None:
        from localassist.cli.env import current

        self.out = out or current().stdout
        self.last = ""
        try:
            self.terminal = self.out.isatty()
        except (AttributeError, ValueError):
            self.terminal = False

    def write(self, piece: str) -> None:
        if self.terminal:
            from localassist.cli.console import visible

            piece = visible(piece)
        self.out.write(piece)
        self.out.flush()
        self.last = piece or self.last

    def close(self) -> None:
        if self.last and not self.last.endswith("\n"):
            self.out.write("\n")
        self.out.flush()


class MarkdownWriter:
    """Progressive markdown on a terminal; the Live region is redrawn at most ~20 times a second."""

    REFRESH_S = 0.05

    def __init__(self, out: IO[str] | None = None) -> None:
        from rich.console import Console

        from localassist.cli.env import current

        env = current()
        self.console = Console(
            file=out or env.stdout, force_terminal=True, no_color=not env.colors, width=env.width, highlight=False
        )
        self.pending = ""  # text after the last block printed for good
        self.printed_blocks = 0
        self.live: Live | None = None
        self.last_draw = 0.0

    def _markdown(self, text: str):
        from rich.markdown import Markdown

        return Markdown(_keep_empty_items(text), code_theme="monokai")

    def _tail_view(self, text: str):
        """The unfinished block, rendered, showing only its last screenful."""
        from rich.segment import Segment
        from rich.text import Text

        console = self.console
        height = max(console.size.height - 2, 3)
        lines = console.render_lines(self._markdown(text), console.options, pad=False)
        out = Text()
        for line in lines[-height:]:
            for seg in Segment.simplify(line):
                if seg.text and not seg.control:
                    out.append(seg.text, seg.style)
            out.append("\n")
        out.rstrip()
        return out

    def _print_blocks(self, blocks: list[str]) -> None:
        for block in blocks:
            if self.printed_blocks:
                self.console.print()
            self.console.print(self._markdown(block))
            self.printed_blocks += 1

    def write(self, piece: str) -> None:
        from time import monotonic

        from rich.live import Live

        from localassist.cli.console import visible

        self.pending += visible(piece)  # a model's escape sequence is shown, never obeyed
        blocks, self.pending = split_finished_blocks(self.pending)
        if blocks:
            if self.live is not None:
                self.live.update("", refresh=True)
            self._print_blocks(blocks)
            self.last_draw = 0.0
        now = monotonic()
        if self.pending.strip() and now - self.last_draw >= self.REFRESH_S:
            if self.live is None:
                self.live = Live(
                    console=self.console,
                    auto_refresh=False,
                    transient=True,
                    vertical_overflow="visible",
                )
                self.live.start()
            self.live.update(self._tail_view(self.pending), refresh=True)
            self.last_draw = now

    def close(self) -> None:
        if self.live is not None:
            self.live.update("", refresh=True)
            self.live.stop()
            self.live = None
        blocks, rest = split_finished_blocks(self.pending + "\n\n")
        if rest.strip():  # an unclosed code fence: show it as it is
            blocks.append(rest.strip("\n"))
        self._print_blocks(blocks)
        self.pending = ""


def make_writer(markdown: bool, out: IO[str] | None = None) -> PlainWriter | MarkdownWriter:
    return MarkdownWriter(out) if markdown else PlainWriter(out)
