"""Structured output: a JSON schema or a GBNF grammar that constrains generation.

A JSON schema (``--json-schema``, a template's ``[schema]``, ``response_format``) is
prepared by :mod:`localassist.engine.json_schema` and compiled to an llguidance grammar;
every answer given as a success is then validated against the user's schema
(:func:`answer_check`), whatever engine produced it. A GBNF grammar (``--grammar``) is
llama.cpp's own, checked by its parser before generation starts
(``LocalBackend.check_grammar``).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localassist.errors import AnswerInvalidError, BackendError, SchemaError, ToolsError, UsageError
from localassist.files import read_regular_text

if TYPE_CHECKING:
    from localassist.engine.json_schema import PreparedSchema
    from localassist.engine.types import ChatRequest, Done, GuidedGrammar, ResponseFormat

_FD2_LOCK = threading.Lock()  # fd 2 is the process's: one grammar check borrows it at a time


def load_schema(value: str) -> Any:
    """``--json-schema``: inline JSON (an object, ``true`` or ``false``), or a path to a JSON file.
    The schema is checked here, before any model is loaded."""
    text = value
    inline = value.strip()
    if not (inline.startswith("{") or inline in ("true", "false")):
        try:
            text = read_regular_text(Path(value).expanduser())  # a FIFO is refused, never waited on
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--json-schema: cannot read {value}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--json-schema is not valid JSON: {exc}") from None
    if not isinstance(schema, (dict, bool)):
        raise UsageError("--json-schema must be a JSON object (or true/false)")
    try:
        prepared_schema(schema)
    except UsageError as exc:
        raise UsageError(f"--json-schema: {exc}") from None
    return schema


def prepared_schema(schema: Any) -> PreparedSchema:
    """The schema checked, rewritten and compiled (cached: a server sees the same schemas again)."""
    return _prepared(json.dumps(schema))  # key order matters: properties are written in it


@lru_cache(maxsize=64)
def _prepared(key: str) -> PreparedSchema:
    from localassist.engine.json_schema import prepare_schema

    return prepare_schema(json.loads(key))


def load_grammar(path: str) -> str:
    try:
        text = read_regular_text(Path(path).expanduser())
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--grammar: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text.strip():
        raise UsageError(f"--grammar: {path} is empty")
    return text


def parse_json_answer(text: str, finish_reason: str) -> Any:
    """The constrained answer as data; a cut-off answer is an error, never half a JSON."""
    try:
        return json.loads(text)
    except ValueError:  # not JSON, or a number too long for Python to read
        if finish_reason == "length":
            raise BackendError(
                "the JSON answer was cut off at --max-tokens before it was complete; raise --max-tokens"
            ) from None
        raise BackendError(f"the answer is not valid JSON (finish: {finish_reason})") from None


def check_complete(text: str, finish_reason: str, is_json: bool) -> None:
    """A constrained answer must be whole before it is printed: valid JSON for a schema,
    and for a grammar, not cut off by --max-tokens."""
    if is_json:
        parse_json_answer(text, finish_reason)
    elif finish_reason == "length":
        raise BackendError("the answer was cut off at --max-tokens before the grammar was complete; raise --max-tokens")


def schema_notes(schema: Any) -> list[str]:
    """What ``-v`` says about a schema: the keywords only checked after generation, and the
    formats that are annotations only."""
    prepared = prepared_schema(schema)
    lines = [
        f"schema: {keyword!r} at {pointer} is checked after generation, not enforced while generating"
        for pointer, keyword in prepared.checked_after
    ]
    lines += [
        f"schema: format {name!r} at {pointer} is an annotation: nothing checks it"
        for pointer, name in prepared.annotations
    ]
    return lines


def response_format_schema(response_format: ResponseFormat) -> Any:
    """The schema behind OpenAI's ``response_format``: any JSON object, or a JSON schema."""
    if response_format.type == "json_object":
        return {"type": "object"}
    if response_format.type == "json_schema" and response_format.schema is not None:
        return response_format.schema
    raise SchemaError(f"response_format {response_format.type!r} is not supported (json_object, json_schema)")


def response_format_grammar(response_format: ResponseFormat) -> GuidedGrammar:
    from localassist.engine.types import GuidedGrammar

    return GuidedGrammar(prepared_schema(response_format_schema(response_format)).grammar)


def answer_check(request: ChatRequest) -> Callable[[Done], None] | None:
    """The check every finished answer of ``request`` passes before it counts as a success:
    the JSON of a ``response_format`` against its schema, each tool call's arguments against
    its tool's parameters. None when the request asks for neither."""
    schema = None
    if request.response_format is not None and request.response_format.type != "text":
        schema = response_format_schema(request.response_format)
        prepared_schema(schema)  # a schema the engine cannot honour is refused before any token
    tools = {
        t.get("function", {}).get("name"): t.get("function", {}).get("parameters") or {}
        for t in request.tools
        if isinstance(t, dict)
    }
    for name, parameters in tools.items():  # refused up front, as for a local engine
        try:
            prepared_schema(parameters)
        except UsageError as exc:
            raise ToolsError(f"tool {name!r}: {exc}") from None
    if schema is None and not tools:
        return None

    def check(done: Done) -> None:
        from localassist.engine.json_schema import loads_strict, validate

        if schema is not None and not done.tool_calls:
            try:
                value = loads_strict(done.text)
            except ValueError:  # not JSON, or a number too long for Python to read
                raise AnswerInvalidError("the answer is not valid JSON") from None
            validate(schema, value)
        for call in done.tool_calls:
            if call.name not in tools:
                raise AnswerInvalidError(f"the model called {call.name!r}, which is not one of the tools offered")
            try:
                arguments = loads_strict(call.arguments or "{}")
            except ValueError:
                raise AnswerInvalidError(f"the arguments of the call to {call.name!r} are not valid JSON") from None
            try:
                validate(tools[call.name], arguments)
            except AnswerInvalidError as exc:
                raise AnswerInvalidError(f"the call to {call.name!r}: {exc}") from None

    return check


def parse_grammar(llama_cpp: Any, vocab: Any, grammar: str) -> None:
    """Parse ``grammar`` with llama.cpp's own parser; a bad one is a usage error that
    quotes llama.cpp's complaint. llama.cpp writes the complaint straight to fd 2, so fd 2
    is pointed at a temporary file for the parse (under a lock: fd 2 is per process)."""
    with _FD2_LOCK, tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        complaint = " ".join(captured.read().decode("utf-8", "replace").split())
    if not sampler:
        raise UsageError(f"the grammar does not parse: {complaint or 'parse error'}")
    llama_cpp.llama_sampler_free(sampler)
