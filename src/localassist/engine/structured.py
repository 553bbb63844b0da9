"""Structured output: a JSON schema or a GBNF grammar that constrains generation.

A schema becomes a llama.cpp grammar (llama-cpp-python's converter), so the sampler
can only produce text that parses and matches it. The grammar itself is checked by
llama.cpp's parser before generation starts (``LocalBackend.check_grammar``).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localassist.errors import BackendError, UsageError
from localassist.files import read_regular_text

if TYPE_CHECKING:
    from localassist.engine.types import ResponseFormat

_FD2_LOCK = threading.Lock()  # fd 2 is the process's: one grammar check borrows it at a time


def load_schema(value: str) -> dict[str, Any]:
    """``--json-schema``: inline JSON, or a path to a JSON file."""
    text = value
    if not value.lstrip().startswith("{"):
        try:
            text = read_regular_text(Path(value).expanduser())  # a FIFO is refused, never waited on
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--json-schema: cannot read {value}: {getattr(exc, 'strerror', None) or exc}") from None
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


def response_format_grammar(response_format: ResponseFormat) -> str:
    """The grammar for OpenAI's ``response_format``: any JSON object, or a JSON schema."""
    if response_format.type == "json_object":
        schema: dict[str, Any] = {"type": "object"}
    elif response_format.type == "json_schema" and response_format.schema is not None:
        schema = response_format.schema
    else:
        raise UsageError(f"response_format {response_format.type!r} is not supported (json_object, json_schema)")
    return schema_to_grammar(schema)


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
