"""Structured output: a JSON schema or a GBNF grammar that constrains generation.

A schema becomes a llama.cpp grammar (llama-cpp-python's converter), so the sampler
can only produce text that parses and matches it. The grammar itself is checked by
llama.cpp's parser before generation starts (``LocalBackend.check_grammar``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localassist.errors import BackendError, UsageError


def load_schema(value: str) -> dict[str, Any]:
    """``--json-schema``: inline JSON, or a path to a JSON file."""
    text = value
    if not value.lstrip().startswith("{"):
        try:
            text = Path(value).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--json-schema: cannot read {value}: {exc.strerror or exc}") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--json-schema is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise UsageError("--json-schema must be a JSON object")
    return schema


def schema_to_grammar(schema: dict[str, Any]) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except (AssertionError, KeyError, TypeError, ValueError, NotImplementedError) as exc:
        raise UsageError(f"--json-schema: unsupported or invalid schema: {exc}") from None


def load_grammar(path: str) -> str:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--grammar: cannot read {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise UsageError(f"--grammar: {path} is empty")
    return text


def parse_json_answer(text: str, finish_reason: str) -> Any:
    """The constrained answer as data; a cut-off answer is an error, never half a JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
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
