"""Where a tool call starts in text a model is generating, in each model family's format.

The local engine streams an answer until a call's opening marker appears, then has the
call finished under a grammar (``engine/tool_calls.py``): what it needs from here is where
a call starts (``find_call``), how much of the text so far may be shown (``visible_length``,
which holds back what may be the start of a marker), which format a chat template teaches
(``detect_format``) and the prompted ReAct fallback (``react_instructions``).

Formats (as the models' chat templates document them):

- ``hermes`` (Qwen2.5, Hermes, many fine-tunes)::

      <tool_call>
      {"name": "calc", "arguments": {"expression": "2+2"}}
      </tool_call>

  several blocks in a row are parallel calls.
- ``llama3`` (Llama 3.1/3.2): ``<|python_tag|>{"name": "calc", "parameters": {...}}``, or the same
  JSON alone as the whole answer (optionally ``"type": "function",`` first, or a list of
  them); calls may be separated by ``;``.
- ``mistral``: ``[TOOL_CALLS] [{"name": "calc", "arguments": {...}, "id": "abc123XYZ"}]``, and the
  newer ``[TOOL_CALLS]calc[ARGS]{...}``.
- ``react``: the prompted fallback for models without a native format (``react_instructions``)::

      Thought: I need to compute this.
      Action: calc
      Action Input: {"expression": "2+2"}

  the caller stops generation at ``Observation:`` (``REACT_STOP``) and appends the result.

The markers are special tokens in most of these vocabularies, so the text must be
detokenized with special tokens shown. (A whole-answer parser, the independent check of
the engine's streaming split, lives with the tests: ``tests/toolcall_parser.py``.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Literal

from localassist.tools.base import Tool

Format = Literal["auto", "hermes", "llama3", "mistral", "react"]
FORMATS: tuple[str, ...] = ("hermes", "llama3", "mistral", "react")

HERMES_OPEN = "<tool_call>"
PYTHON_TAG = "<|python_tag|>"
MISTRAL_MARKER = "[TOOL_CALLS]"
REACT_ACTION = "Action:"
REACT_STOP = "\nObservation:"

LITERAL_MARKERS = {"hermes": HERMES_OPEN, "llama3": PYTHON_TAG, "mistral": MISTRAL_MARKER}
# The bare Llama 3 call: the answer's first characters, whitespace removed, start with one of these.
BARE_JSON_STARTS = ('{"name":', '{"type":"function","name":', '[{"name":')
REACT_ACTION_RE = re.compile(r"^[ \t]*Action:", re.MULTILINE)


def _formats(fmt: Format) -> tuple[str, ...]:
    if fmt == "auto":
        return FORMATS
    if fmt not in FORMATS:
        raise ValueError(f"unknown tool-call format {fmt!r}; one of: auto, {', '.join(FORMATS)}")
    return (fmt,)


def find_call(text: str, fmt: Format = "auto") -> tuple[int, str] | None:
    """Where the first tool call starts in ``text`` and in which format; None when there is none (yet)."""
    found: list[tuple[int, str]] = []
    for name in _formats(fmt):
        if name in LITERAL_MARKERS:
            index = text.find(LITERAL_MARKERS[name])
            if index >= 0:
                found.append((index, name))
        if name == "llama3":
            stripped = text.lstrip()
            compact = re.sub(r"\s+", "", stripped[:80])
            if compact.startswith(BARE_JSON_STARTS):
                found.append((len(text) - len(stripped), name))
        if name == "react":
            match = REACT_ACTION_RE.search(text)
            if match:
                found.append((match.start() + len(match.group()) - len(REACT_ACTION), name))
    return min(found) if found else None


def visible_length(text: str, fmt: Format = "auto") -> int:
    """How much of ``text`` (generated so far) can be shown: it stops before a call, and holds back a tail
    that may be the start of a marker (as stop strings are held back) until the next tokens decide."""
    start = find_call(text, fmt)
    if start is not None:
        return start[0]
    hold = 0
    for name in _formats(fmt):
        if name in LITERAL_MARKERS:
            hold = max(hold, _partial_suffix(text, LITERAL_MARKERS[name]))
        if name == "llama3":
            stripped = text.lstrip()
            compact = re.sub(r"\s+", "", stripped)
            if any(start.startswith(compact) for start in BARE_JSON_STARTS):
                return 0  # nothing but whitespace, or the beginning of a bare JSON call
        if name == "react":
            last_line = text[text.rfind("\n") + 1 :]
            if last_line.strip() and REACT_ACTION.startswith(last_line.lstrip(" \t")):
                hold = max(hold, len(last_line))
    return len(text) - hold


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


def detect_format(chat_template: str | None) -> str:
    """The tool-call format a chat template teaches its model; ``react`` when it teaches none."""
    template = chat_template or ""
    if HERMES_OPEN in template:
        return "hermes"
    if MISTRAL_MARKER in template:
        return "mistral"
    if PYTHON_TAG in template or ("<|start_header_id|>" in template and "parameters" in template):
        return "llama3"
    return "react"


def react_instructions(tools: Iterable[Tool]) -> str:
    """System-prompt text that teaches the ReAct format, for models whose template has no tool format."""
    lines = ["You can use these tools:", ""]
    for tool in tools:
        lines.append(f"- {tool.name}: {tool.description}")
        lines.append(f"  arguments (JSON schema): {json.dumps(tool.parameters, ensure_ascii=False)}")
    lines += [
        "",
        "To use a tool, answer exactly in this form and stop:",
        "Thought: why you need the tool",
        "Action: the tool name",
        'Action Input: the arguments as one JSON object, e.g. {"expression": "2+2"}',
        "",
        "The result comes back as 'Observation: ...'. Repeat as needed. When you know the answer, write:",
        "Final Answer: your answer",
    ]
    return "\n".join(lines)
