"""Argument validation (jsonschema): a tool call's arguments against its tool's schema.

jsonschema is imported when the first call is validated, not when the tools are imported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from localassist.tools.base import Tool

MAX_REPORTED_ERRORS = 3


def validate_arguments(tool: Tool, arguments: Any) -> str | None:
    """None when ``arguments`` match the tool's schema; otherwise a short repair message for the model."""
    if not isinstance(arguments, dict):
        return _repair(tool, [f"arguments must be a JSON object, not {type(arguments).__name__}"])
    from jsonschema.validators import validator_for

    validator_class = validator_for(tool.parameters)
    errors = sorted(validator_class(tool.parameters).iter_errors(arguments), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    problems = [f"{_where(e.absolute_path)}: {e.message}" for e in errors[:MAX_REPORTED_ERRORS]]
    if len(errors) > MAX_REPORTED_ERRORS:
        problems.append(f"and {len(errors) - MAX_REPORTED_ERRORS} more")
    return _repair(tool, problems)


def _where(path: Iterable[Any]) -> str:
    parts = [str(p) for p in path]
    return "arguments" if not parts else "arguments." + ".".join(parts)


def _repair(tool: Tool, problems: list[str]) -> str:
    schema = json.dumps(tool.parameters, separators=(",", ":"), ensure_ascii=False)
    return (
        f"invalid arguments for tool {tool.name!r}: {'; '.join(problems)}. "
        f"Call it again with arguments matching: {schema}"
    )
