"""The chat prompt history, ``<data dir>/chat_history``: what was typed at chat's prompt,
in prompt_toolkit's ``FileHistory`` format (each entry a ``# time`` line and its text as
``+``-prefixed lines). The REPL reads and appends to it through prompt_toolkit; this
module knows its name, what an entry sends, and how to take entries out of it when the
conversation they sent is deleted (``logs rm``)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from localassist.files import write_private_bytes

HISTORY_FILE = "chat_history"


def history_path(data_dir: Path) -> Path:
    return data_dir / HISTORY_FILE


def as_sent(typed: str) -> str:
    """The message a line typed at the prompt sends: stripped, and a ``\"\"\"`` block
    without its quotes."""
    text = typed.strip()
    if text.startswith('"""'):
        text = text[3:]
        if text.rstrip().endswith('"""'):
            text = text.rstrip()[:-3]
        return text.strip("\n")
    return text


def forget(path: Path, texts: Collection[str]) -> int:
    """Rewrite the history without the entries that sent one of ``texts`` (messages as
    logged; ``/system TEXT`` for a system prompt). The rest is kept byte for byte; the file
    is replaced atomically, 0600. Returns how many entries went (0: the file is untouched).
    Raises OSError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0
    wanted = {text for text in texts if text}
    kept: list[bytes] = []
    removed = 0
    for block in _blocks(raw.splitlines(keepends=True)):
        body = b"".join(line[1:] for line in block if line.startswith(b"+"))
        typed = body.decode("utf-8", "replace").removesuffix("\n")
        if any(line.startswith(b"+") for line in block) and as_sent(typed) in wanted:
            removed += 1
        else:
            kept.extend(block)
    if removed:
        write_private_bytes(path, b"".join(kept))
    return removed


def _blocks(lines: list[bytes]) -> list[list[bytes]]:
    """Entries as prompt_toolkit reads them: the lines before a run of ``+`` lines (the
    blank line and ``# time`` comment ``store_string`` writes) and that run."""
    blocks: list[list[bytes]] = [[]]
    for line in lines:
        if not line.startswith(b"+") and blocks[-1] and blocks[-1][-1].startswith(b"+"):
            blocks.append([])
        blocks[-1].append(line)
    return blocks
