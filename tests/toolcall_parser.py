"""The whole-answer parser for tool-call text in each model family's documented format
(see ``localassist/tools/parsing.py``): the independent check of the engine's streaming
split of a call (``engine/tool_calls.py``), which generates calls under a grammar and so
never parses a finished answer itself. Only the tests use it, so it lives here.

Malformed calls become ``ToolCallParseError`` values (never exceptions), with a message
written for the model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from localassist.tools import ToolInvocation
from localassist.tools.parsing import HERMES_OPEN, MISTRAL_MARKER, PYTHON_TAG, Format, find_call

HERMES_CLOSE = "</tool_call>"
MISTRAL_ARGS, MISTRAL_CALL_ID = "[ARGS]", "[CALL_ID]"
REACT_FINAL = "Final Answer:"
END_TOKENS = ("<|eom_id|>", "<|eot_id|>", "<|im_end|>", "</s>", "<end_of_turn>", "<|end|>")
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


def parse_tool_calls(text: str, fmt: Format = "auto") -> ParsedToolCalls:
    """The calls in a finished answer (``fmt="auto"``: whichever known marker comes first)."""
    start = find_call(text, fmt)
    if start is None:
        if fmt in ("auto", "react") and REACT_FINAL in text:
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
