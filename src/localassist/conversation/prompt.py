"""Turning what the user typed and piped into the prompt the model sees."""

from __future__ import annotations

import re

from localassist.errors import UsageError

_PLACEHOLDER = re.compile(r"\{(instruction|input)\}")


def build_user_text(instruction: str | None, piped: str | None, template: str) -> str:
    """Join the argument (instruction) and stdin (the input document).

    Both present: ``template`` decides how (default: the instruction, then the input
    inside ``<input>`` tags), never a bare space. One present: that one as it is.
    """
    instruction = (instruction or "").strip()
    piped = piped if piped and piped.strip() else ""
    if instruction and piped:
        values = {"instruction": instruction, "input": piped.rstrip("\n")}
        # one pass, so braces inside the user's text are never read as placeholders
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    if instruction or piped:
        return instruction or piped
    raise UsageError("nothing to ask: give a prompt as arguments, pipe text on stdin, or both")


def decode_stdin(data: bytes) -> str:
    if b"\x00" in data:
        raise UsageError("stdin looks like binary data (it contains NUL bytes); pipe text instead")
    # utf-8-sig: a BOM (Windows editors, PowerShell pipes) is not part of the text
    return data.decode("utf-8-sig", errors="replace")
