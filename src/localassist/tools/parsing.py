"""Find and parse the tool calls in text a model generated.

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

Malformed calls become ``ToolCallParseError`` values (never exceptions), with a message the
agent loop can hand back to the model. The markers are special tokens in most of these
vocabularies, so the text must be detokenized with special tokens shown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from localassist.tools.base import Tool, ToolInvocation

Format = Literal["auto", "hermes", "llama3", "mistral", "react"]
FORMATS: tuple[str, ...] = ("hermes", "llama3", "mistral", "react")

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
MISTRAL_MARKER, MISTRAL_ARGS, MISTRAL_CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
REACT_ACTION, REACT_INPUT, REACT_OBSERVATION, REACT_FINAL = "Action:", "Action Input:", "Observation:", "Final Answer:"
REACT_STOP = "\nObservation:"
END_TOKENS = ("<|eom_id|>", "<|eot_id|>", "<|im_end|>", "</s>", "<end_of_turn>", "<|end|>")

LITERAL_MARKERS = {"hermes": HERMES_OPEN, "llama3": PYTHON_TAG, "mistral": MISTRAL_MARKER}
# The bare Llama 3 call: the answer's first characters, whitespace removed, start with one of these.
BARE_JSON_STARTS = ('{"name":', '{"type":"function","name":', '[{"name":')
REACT_ACTION_RE = re.compile(r"^[ \t]*Action:", re.MULTILINE)
REACT_BLOCK_RE = re.compile(
    r"^[ \t]*Action:[ \t]*(?P<name>[^\n]*)\n(?:[ \t]*\n)*[ \t]*Action Input:[ \t]*(?P<input>.*?)"
    r"(?=^[ \t]*Observation:|\Z)",
    re.MULTILINE | re.DOTALL,
)
EXAMPLE = {
    "hermes": '<tool_call>\n{"name": "NAME", "arguments": {...}}\n</tool_call>',
    "llama3": '{"name": "NAME", "parameters": {...}}',
    "mistral": '[TOOL_CALLS] [{"name": "NAME", "arguments": {...}}]',
    "react": 'Action: NAME\nAction Input: {"argument": "value"}',
}


@dataclass(frozen=True)
class ToolCallParseError:
    """A call the model tried to write but got wrong. ``message`` is written for the model."""

    message: str
    raw: str


@dataclass(frozen=True)
class ParsedToolCalls:
    """The answer split into ``content`` (text before the first call) and the calls after it.

    ``format`` is the format whose marker was found; None when the text holds no call, and then
    ``content`` is the whole text (for ``react``, the text after ``Final Answer:`` when there is one).
    """

    content: str
    calls: tuple[ToolInvocation, ...] = ()
    errors: tuple[ToolCallParseError, ...] = ()
    format: str | None = None

    @property
    def found(self) -> bool:
        """True when the model tried to call a tool (even if every call was malformed)."""
        return self.format is not None


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


def parse_tool_calls(text: str, fmt: Format = "auto") -> ParsedToolCalls:
    """The calls in a finished answer (``fmt="auto"``: whichever known marker comes first)."""
    start = find_call(text, fmt)
    if start is None:
        if "react" in _formats(fmt) and REACT_FINAL in text:
            return ParsedToolCalls(text.split(REACT_FINAL, 1)[1].strip())
        return ParsedToolCalls(text)
    index, name = start
    body = _strip_end_tokens(text[index:])
    parser = {"hermes": _parse_hermes, "llama3": _parse_llama3, "mistral": _parse_mistral, "react": _parse_react}
    calls, errors = parser[name](body)
    return ParsedToolCalls(text[:index], tuple(calls), tuple(errors), name)


Parsed = tuple[list[ToolInvocation], list[ToolCallParseError]]


def _strip_end_tokens(text: str) -> str:
    text = text.rstrip()
    changed = True
    while changed:
        changed = False
        for token in END_TOKENS:
            if text.endswith(token):
                text, changed = text[: -len(token)].rstrip(), True
    return text


def _parse_hermes(text: str) -> Parsed:
    calls: list[ToolInvocation] = []
    errors: list[ToolCallParseError] = []
    rest = text
    while True:
        index = rest.find(HERMES_OPEN)
        if index < 0:
            break
        rest = rest[index + len(HERMES_OPEN) :]
        end = rest.find(HERMES_CLOSE)
        body, rest = (rest, "") if end < 0 else (rest[:end], rest[end + len(HERMES_CLOSE) :])
        _collect(_decode_objects(body, "hermes", single=True), calls, errors, body)
    return calls, errors


def _parse_llama3(text: str) -> Parsed:
    calls: list[ToolInvocation] = []
    errors: list[ToolCallParseError] = []
    body = text[len(PYTHON_TAG) :] if text.startswith(PYTHON_TAG) else text
    _collect(_decode_objects(body, "llama3", single=False), calls, errors, body)
    return calls, errors


def _parse_mistral(text: str) -> Parsed:
    calls: list[ToolInvocation] = []
    errors: list[ToolCallParseError] = []
    for segment in text.split(MISTRAL_MARKER)[1:]:
        body = segment.strip()
        if not body:
            continue
        if body.startswith(("[", "{")):
            _collect(_decode_objects(body, "mistral", single=False), calls, errors, body)
        elif MISTRAL_ARGS in body:  # the v11 form: NAME[ARGS]{...} or NAME[CALL_ID]ID[ARGS]{...}
            head, arguments = body.split(MISTRAL_ARGS, 1)
            name, _, call_id = head.partition(MISTRAL_CALL_ID)
            decoded = _decode_objects(arguments, "mistral", single=True)
            if isinstance(decoded, ToolCallParseError):
                errors.append(ToolCallParseError(decoded.message, body))
            else:
                _collect(
                    [{"name": name.strip(), "arguments": decoded[0], "id": call_id.strip() or None}],
                    calls,
                    errors,
                    body,
                )
        else:
            errors.append(_error("after [TOOL_CALLS] expected a JSON list of calls", "mistral", body))
    return calls, errors


def _parse_react(text: str) -> Parsed:
    match = REACT_BLOCK_RE.search(text)
    if match is None:
        return [], [_error("'Action:' must be followed by an 'Action Input:' line", "react", text.strip())]
    name = match.group("name").strip().strip("`'\"").strip()
    raw_input = match.group("input").strip()
    if raw_input.startswith("```"):  # small models like to fence the JSON
        raw_input = re.sub(r"^```\w*\s*|\s*```$", "", raw_input)
    if not raw_input:
        raw_input = "{}"
    if not raw_input.startswith("{"):
        return [], [_error("the Action Input is not a JSON object", "react", match.group(0).strip())]
    decoded = _decode_objects(raw_input, "react", single=True)
    if isinstance(decoded, ToolCallParseError):
        return [], [ToolCallParseError(decoded.message, match.group(0).strip())]
    calls: list[ToolInvocation] = []
    errors: list[ToolCallParseError] = []
    _collect([{"name": name, "arguments": decoded[0]}], calls, errors, match.group(0).strip())
    return calls, errors


def _decode_objects(text: str, fmt: str, *, single: bool) -> list[Any] | ToolCallParseError:
    """The JSON values in ``text``: one (``single``), or several separated by whitespace, ``,`` or ``;``.

    A JSON list is flattened into its items (Mistral's ``[{...}, {...}]``).
    """
    decoder = json.JSONDecoder()
    body = text.strip()
    values: list[Any] = []
    position = 0
    while position < len(body):
        try:
            value, end = decoder.raw_decode(body, position)
        except json.JSONDecodeError as exc:
            return _error(f"the tool call is not valid JSON ({exc.msg} at character {exc.pos + 1})", fmt, body)
        values.extend(value if isinstance(value, list) else [value])
        position = end
        while position < len(body) and body[position] in " \t\r\n;,":
            position += 1
        if single and position < len(body):
            return _error("unexpected text after the tool call's JSON", fmt, body)
    if not values:
        return _error("the tool call is empty", fmt, body)
    return values


def _collect(
    decoded: list[Any] | ToolCallParseError, calls: list[ToolInvocation], errors: list[ToolCallParseError], raw: str
) -> None:
    if isinstance(decoded, ToolCallParseError):
        errors.append(decoded)
        return
    for value in decoded:
        result = _call_from_object(value)
        if isinstance(result, str):
            errors.append(ToolCallParseError(result, raw.strip()))
        else:
            calls.append(result)


def _call_from_object(value: Any) -> ToolInvocation | str:
    if not isinstance(value, dict):
        return f"a tool call must be a JSON object with name and arguments, not {json.dumps(value)[:80]}"
    if isinstance(value.get("function"), dict):  # the OpenAI shape: {"type": "function", "function": {...}}
        value = {**value["function"], "id": value.get("id")}
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        return "a tool call needs a 'name' (a string)"
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string, as the OpenAI API does
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return f"the arguments of {name!r} are a string that is not JSON"
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return f"the arguments of {name!r} must be a JSON object"
    call_id = value.get("id")
    return ToolInvocation(name.strip(), arguments, call_id if isinstance(call_id, str) and call_id else None)


def _error(problem: str, fmt: str, raw: str) -> ToolCallParseError:
    return ToolCallParseError(f"{problem}; write a call as {EXAMPLE[fmt]}", raw)


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
