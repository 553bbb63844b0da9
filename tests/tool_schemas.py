"""JSON schemas of "a call to any of these tools" and of a list of such calls, which
llama.cpp's ``json_schema_to_gbnf`` turns into a grammar. The engine writes its call
grammars itself (``engine/tool_calls.py``, ``call_grammar``); only the tests use these,
so they live here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from localassist.tools import Tool


def call_schema(tools: Iterable[Tool], arguments_key: str = "arguments") -> dict[str, Any]:
    """JSON schema of one call to any of ``tools``: ``{"name": <const>, "<arguments_key>": <its schema>}``.

    ``arguments_key`` is ``"parameters"`` for the Llama 3 format. The result converts to a grammar
    with llama.cpp's ``json_schema_to_gbnf``, so a constrained model can only write valid calls.
    """
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, arguments_key: tool.parameters},
            "required": ["name", arguments_key],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    if not variants:
        raise ValueError("call_schema needs at least one tool")
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def calls_schema(
    tools: Iterable[Tool], arguments_key: str = "arguments", max_calls: int | None = None
) -> dict[str, Any]:
    """JSON schema of a list of calls (parallel calls, the Mistral ``[TOOL_CALLS] [...]`` form)."""
    schema: dict[str, Any] = {"type": "array", "items": call_schema(tools, arguments_key), "minItems": 1}
    if max_calls is not None:
        schema["maxItems"] = max_calls
    return schema
