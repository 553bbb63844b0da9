from __future__ import annotations

import io
import re

import pytest

from localassist.cli.render import MarkdownWriter, PlainWriter, split_finished_blocks


def test_blocks_end_at_blank_lines_outside_fences():
    blocks, rest = split_finished_blocks("# Title\n\nPara one\nstill one\n\nPara tw")
    assert blocks == ["# Title", "Para one\nstill one"]
    assert rest == "Para tw"


def test_blank_lines_inside_a_code_fence_do_not_split_it():
    text = "```python\nx = 1\n\ny = 2\n```\nafter"
    blocks, rest = split_finished_blocks(text)
    assert blocks == ["```python\nx = 1\n\ny = 2\n```"]
    assert rest == "after"


def test_unclosed_fence_stays_pending():
    blocks, rest = split_finished_blocks("intro\n\n```\ncode\n\nmore code")
    assert blocks == ["intro"]
    assert rest.startswith("```")


def test_plain_writer_ends_with_newline():
    out = io.StringIO()
    writer = PlainWriter(out)
    for piece in ["Hel", "lo"]:
        writer.write(piece)
    writer.close()
    assert out.getvalue() == "Hello\n"


def test_markdown_writer_renders_and_never_truncates(monkeypatch):
    from rich.console import Console

    buffer = io.StringIO()
    writer = MarkdownWriter()
    writer.console = Console(file=buffer, force_terminal=True, width=60, height=8, color_system="standard")
    lines = [f"{i}. item number {i}" for i in range(1, 41)]  # far taller than the 8-line screen
    text = "Some **bold** words.\n\n" + "\n".join(lines) + "\n\n```python\nprint('hi')\n```\n"
    for i in range(0, len(text), 3):
        writer.write(text[i : i + 3])
    writer.close()
    shown = buffer.getvalue()
    assert "**bold**" not in shown  # rendered, not raw markdown
    assert "\x1b[1m" in shown  # bold escape
    for i in (1, 20, 40):
        assert f"item number {i}" in shown
    assert "…" not in shown


@pytest.mark.parametrize(
    ("text", "words"),
    [("1.\n2.\n3.\n-\n", ["1.", "2.", "3.", "-"]), ("-\n", ["-"]), ("* \n", ["*"]), ("  2)\n", ["2)"])],
)
def test_empty_list_items_stay_visible(text, words):
    """Markdown reads "1." or "-" alone as an empty list item, which rich draws as nothing."""
    from rich.console import Console

    buffer = io.StringIO()
    writer = MarkdownWriter()
    writer.REFRESH_S = 1e9  # no Live redraws: the buffer holds only the final print
    writer.console = Console(file=buffer, force_terminal=True, width=80, color_system=None)
    writer.write(text)
    writer.close()
    assert re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue()).split() == words
