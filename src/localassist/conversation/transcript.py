"""One Markdown form for a conversation, used by `/save FILE.md` and `logs show`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

CUT_SHORT = ("cancelled", "interrupted")  # "interrupted": what logs written before 0.2 say


@dataclass(frozen=True)
class Block:
    kind: str  # system | summary | attachment | user | tool | assistant
    text: str
    note: str | None = None  # shown in italics after the heading or the text


def markdown(title: str, facts: Sequence[str], blocks: Sequence[Block]) -> str:
    lines = [f"# {title}", ""]
    if facts:
        lines += [f"- {fact}" for fact in facts] + [""]
    for block in blocks:
        if block.kind == "system":
            lines += [f"**System:** {block.text or '(none)'}", ""]
        elif block.kind == "summary":
            lines += [f"**Summary of earlier turns:** {block.text}", ""]
        elif block.kind == "attachment":  # the text as the model was given it, in a fence it cannot close
            fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", block.text)), default=0))
            lines += [f"**Attached:** {block.note}", "", fence, block.text.rstrip(), fence, ""]
        elif block.kind == "tool":
            note = f" *({block.note})*" if block.note else ""
            lines += [f"**Tool call{note}:** {block.text.rstrip()}", ""]
        else:
            who = "You" if block.kind == "user" else "Assistant"
            note = f" *({block.note})*" if block.note else ""
            lines += [f"## {who}{note}", "", block.text.rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"
