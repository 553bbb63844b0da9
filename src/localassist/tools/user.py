"""User tools: the public functions of a Python file, described by their type hints and docstrings.

A function ``def forecast(city: str, days: int = 3) -> str`` with a docstring becomes a tool
named ``forecast`` whose schema has ``city`` (required string) and ``days`` (integer, default 3).
The docstring's first paragraph is the description; Google-style ``Args:`` lines describe the
parameters. User tools are ``exec`` (the user approves every call) unless marked ``@safe``.
A tool from a file runs each call in a child process (``tools/child.py``), which the time limit
and Ctrl-C can always stop.
"""

from __future__ import annotations

import inspect
import itertools
import json
import re
import sys
import types
import typing
from collections.abc import Callable
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from typing import Any, Literal, Union

from localassist.errors import UsageError
from localassist.files import check_regular, read_regular_bytes
from localassist.tools.base import SAFE_ATTRIBUTE, Safety, Tool, ToolContext, ToolResult

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI-style function names allow
ARGS_HEADER_RE = re.compile(r"^(Args|Arguments|Parameters):\s*$")
ARG_LINE_RE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
SIMPLE_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}

_module_numbers = itertools.count(1)


class FunctionTool(Tool):
    """A Python function as a tool. Arguments are validated against ``parameters`` before the call."""

    def __init__(
        self,
        function: Callable[..., Any],
        name: str,
        description: str,
        parameters: dict[str, Any],
        safety: Safety,
        source: Path | None = None,
    ) -> None:
        self.function = function
        self.name = name
        self.description = description
        self.parameters = parameters
        self.safety = safety
        self.source = source  # the file it came from, for ``tools list``

    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        if self.source is None:  # a function handed over in Python: only this process has it
            return ToolResult(call(self.function, arguments))
        from localassist.tools.child import run_in_child

        return run_in_child(self.source, self.name, arguments, context)


def call(function: Callable[..., Any], arguments: dict[str, Any]) -> str:
    """``function(**arguments)`` (awaited when it is async), as text for the model."""
    result = function(**arguments)
    if inspect.isawaitable(result):
        import asyncio  # only for async tools: it takes longer to import than a child takes to start

        result = asyncio.run(_await(result))
    return format_result(result)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def format_result(value: Any) -> str:
    """A return value as text for the model: strings as they are, anything else as JSON."""
    if value is None:
        return "done (no result)"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def function_tool(function: Callable[..., Any], *, source: Path | None = None) -> FunctionTool:
    """``function`` as a tool; ``UsageError`` naming the function when it cannot be described."""
    name = function.__name__
    where = f"{source}: " if source else ""
    if not NAME_RE.match(name):
        raise UsageError(f"{where}function {name!r}: a tool name may use only A-Z a-z 0-9 _ - (at most 64)")
    description, parameters = function_schema(function, where=where)
    safety = Safety.SAFE if getattr(function, SAFE_ATTRIBUTE, False) else Safety.EXEC
    return FunctionTool(function, name, description, parameters, safety, source)


def function_schema(function: Callable[..., Any], *, where: str = "") -> tuple[str, dict[str, Any]]:
    """The description and the JSON schema of the arguments, from the signature and the docstring."""
    name = function.__name__
    try:
        hints = typing.get_type_hints(function)
    except Exception as exc:  # an annotation naming something that does not exist
        raise UsageError(f"{where}function {name!r}: cannot read its type hints: {exc}") from None
    description, arg_docs = parse_docstring(inspect.getdoc(function) or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(function).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise UsageError(f"{where}function {name!r}: parameter {param.name!r} must be a plain named parameter")
        if param.name not in hints:
            raise UsageError(f"{where}function {name!r}: parameter {param.name!r} has no type hint")
        schema = type_schema(hints[param.name], f"{where}function {name!r}, parameter {param.name!r}")
        if param.name in arg_docs:
            schema = {**schema, "description": arg_docs[param.name]}
        if param.default is param.empty:
            required.append(param.name)
        elif _is_json(param.default):
            schema = {**schema, "default": param.default}
        properties[param.name] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        parameters["required"] = required
    return description or name.replace("_", " "), parameters


def type_schema(hint: Any, where: str) -> dict[str, Any]:
    """JSON schema for a type hint: str, int, float, bool, list[...], dict[str, ...], Literal, Optional, unions."""
    if isinstance(hint, type) and hint in SIMPLE_TYPES:
        return {"type": SIMPLE_TYPES[hint]}
    if hint is Any:
        return {}
    if hint is type(None):
        return {"type": "null"}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is list or origin is list:
        return {"type": "array", "items": type_schema(args[0], where)} if args else {"type": "array"}
    if hint is dict or origin is dict:
        if args and args[0] is not str:
            raise UsageError(f"{where}: dict keys must be str (JSON object keys are strings)")
        return {"type": "object", "additionalProperties": type_schema(args[1], where)} if args else {"type": "object"}
    if origin is Literal:
        if not all(isinstance(a, (str, int, float, bool)) for a in args):
            raise UsageError(f"{where}: Literal values must be strings, numbers or booleans")
        kinds = {SIMPLE_TYPES[type(a)] for a in args}
        return {"type": kinds.pop(), "enum": list(args)} if len(kinds) == 1 else {"enum": list(args)}
    if origin is Union or origin is types.UnionType:
        members = [type_schema(a, where) for a in args]
        return {"anyOf": members}
    raise UsageError(
        f"{where}: unsupported type hint {hint!r}; use str, int, float, bool, list, dict, Literal, Optional"
    )


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph (one line) and the Google-style ``Args:`` descriptions by parameter name."""
    lines = doc.expandtabs().splitlines()
    first: list[str] = []
    for line in lines:
        if not line.strip() or ARGS_HEADER_RE.match(line.strip()):
            break
        first.append(line.strip())
    args: dict[str, str] = {}
    inside, indent, current = False, 0, ""
    for line in lines:
        stripped = line.strip()
        if ARGS_HEADER_RE.match(stripped) and not line.startswith(" "):
            inside, indent, current = True, 0, ""
            continue
        if not inside:
            continue
        if not stripped:
            continue
        line_indent = len(line) - len(line.lstrip())
        if line_indent == 0:  # the next section (Returns:, Raises:) ends the arguments
            break
        match = ARG_LINE_RE.match(stripped)
        if match and (indent == 0 or line_indent <= indent):
            indent, current = line_indent, match.group(1).lstrip("*")
            args[current] = match.group(2).strip()
        elif current:
            args[current] = f"{args[current]} {stripped}".strip()
    return " ".join(first), args


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def load_user_tools(path: str | Path) -> list[FunctionTool]:
    """The public functions defined in the Python file at ``path``, as tools (in file order).

    Loading runs the file's top-level code, as importing it would: the user named the file.
    """
    file = Path(path).expanduser()
    module = load_module(file, path)
    functions = [
        value
        for key, value in vars(module).items()
        if inspect.isfunction(value) and not key.startswith("_") and value.__module__ == module.__name__
    ]
    if not functions:
        raise UsageError(f"--tools {path}: defines no public functions (names without a leading _)")
    return [function_tool(function, source=file.resolve()) for function in functions]


class _RegularFileLoader(SourceFileLoader):
    """Python's source loader, reading only regular files (a file swapped for a FIFO since
    the check is refused, not waited on)."""

    def get_data(self, path: str) -> bytes:
        return read_regular_bytes(path)


def load_module(file: Path, shown: str | Path) -> types.ModuleType:
    """The Python file ``file`` run as a fresh module; ``UsageError`` naming ``shown`` when it cannot be."""
    try:
        check_regular(file, file.stat().st_mode)  # a FIFO would block the import: refused before it
    except FileNotFoundError:
        raise UsageError(f"--tools {shown}: no such file") from None
    except OSError as exc:
        raise UsageError(f"--tools {shown}: cannot read it: {exc.strerror or exc}") from None
    module_name = f"localassist_user_tools_{next(_module_numbers)}_{re.sub(r'[^0-9A-Za-z_]', '_', file.stem)}"
    spec = spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise UsageError(f"--tools {shown}: not a Python file")
    loader = spec.loader
    if type(loader) is SourceFileLoader:
        loader = _RegularFileLoader(module_name, str(file))
        spec = spec_from_file_location(module_name, file, loader=loader)
        assert spec is not None
    module = module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and typing look the module up while it runs
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the user's folder
    try:
        loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise UsageError(f"--tools {shown}: syntax error on line {exc.lineno}: {exc.msg}") from None
    except (Exception, SystemExit) as exc:
        del sys.modules[module_name]
        raise UsageError(f"--tools {shown}: loading it raised {type(exc).__name__}: {exc}") from None
    finally:
        sys.dont_write_bytecode = saved
    return module
